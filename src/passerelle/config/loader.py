"""Load :class:`Settings` from a YAML file plus environment overrides.

Environment: ``PASSERELLE__GROUP__KEY=value`` (double underscores nest), e.g.
``PASSERELLE__MLLP__PORT=2575``. Values are parsed as YAML scalars, so ``true``, ``8``, ``[a, b]`` work.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from passerelle.config.settings import CoreSettings

ENV_PREFIX = "PASSERELLE__"
M = TypeVar("M", bound=CoreSettings)


class ConfigError(Exception):
    """The configuration is unusable; ``errors`` lists every problem found, one line each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def load_config(
    model: type[M],
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> M:
    """Validate ``model`` from the YAML file, then ``PASSERELLE__*`` variables, then ``overrides``
    (dotted keys, None values ignored). Raises :class:`ConfigError` listing every problem."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from exc
        except yaml.YAMLError as exc:
            raise ConfigError([f"{path}: not valid YAML ({exc})"]) from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError([f"{path}: the top level must be a mapping"])
        data = loaded or {}
    for key, value in (environ or {}).items():
        if key.startswith(ENV_PREFIX):
            parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
            _set(data, parts, yaml.safe_load(value) if value else value)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set(data, dotted.split("."), value)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(e) for e in exc.errors()]) from exc


def _set(data: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        nxt = data.setdefault(part, {})
        if not isinstance(nxt, dict):
            nxt = data[part] = {}
        data = nxt
    data[parts[-1]] = value


def _describe(error: Mapping[str, Any]) -> str:
    where = ".".join(str(p) for p in error.get("loc", ())) or "(top level)"
    return f"{where}: {error.get('msg', 'invalid')}"


def read_secret(path: Path | None, env_name: str | None, environ: Mapping[str, str]) -> str | None:
    """Read a secret from a file (first line, stripped) or a named environment variable."""
    if path is not None:
        return Path(path).read_text(encoding="utf-8").strip()
    if env_name:
        return environ.get(env_name)
    return None
