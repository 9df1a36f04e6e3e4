"""Entrypoint of the Passerelle container image (docs/operations.md, "Container image").

Runs ``passerelle ARGS`` (``run`` when none are given) from the image's environment, after what only the
image needs:

* ``run`` and ``check-config`` without ``--config`` use the image's configuration,
  ``/etc/passerelle/passerelle.yaml`` (``PASSERELLE_CONFIG`` names another file);
* ``run`` needs an explicit patient-space URL: ``PASSERELLE__SPACE__URL``, ``--space-url``, or
  ``space.url`` in the configuration file. The gateway's built-in default is a sandbox on the loopback
  address, which inside a container is nothing at all: a forgotten setting would retry forever while
  ``/readyz`` said ready. Without one the container stops with one line on stderr and exit status 2;
* ``TMPDIR`` (under ``/data``, the only writable place of a read-only container) exists.

The image's configuration binds every interface, so its HTTP and MLLP listeners speak TLS with
``/data/tls/server.crt`` and ``/data/tls/server.key``; without them ``passerelle`` itself refuses to start,
one line per missing file (the same checks as ``check-config``), and plain text needs an explicit
``allow_plaintext_on_network`` (docker/passerelle.yaml, docs/operations.md).

Nothing here changes the gateway's own defaults for ``passerelle run`` outside the image.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

DEFAULT_CONFIG = "/etc/passerelle/passerelle.yaml"
NO_SPACE_URL = (
    "passerelle: no patient space URL: set PASSERELLE__SPACE__URL "
    "(e.g. https://space.example.org/fhir) or space.url in the configuration file"
)


def option(args: Sequence[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` among ``args`` (the last one wins)."""
    found = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith(name + "="):
            found = arg.split("=", 1)[1]
    return found


def config_has_space_url(path: str) -> bool:
    """True when the YAML file sets ``space.url``, or cannot be read (``passerelle`` then says why)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return True
    space = data.get("space") if isinstance(data, dict) else None
    return isinstance(space, dict) and bool(str(space.get("url") or "").strip())


def command(argv: Sequence[str], environ: Mapping[str, str]) -> list[str] | None:
    """The ``passerelle`` arguments to run, or None when ``run`` has no patient-space URL."""
    args = list(argv) or ["run"]
    if args[0] == "passerelle":  # `docker run IMAGE passerelle run ...` means the same as `... run ...`
        args = args[1:] or ["run"]
    if args[0] in ("run", "check-config") and option(args, "--config") is None:
        args += ["--config", environ.get("PASSERELLE_CONFIG", DEFAULT_CONFIG)]
    if args[0] == "run":
        explicit = environ.get("PASSERELLE__SPACE__URL", "").strip() or option(args, "--space-url")
        config = option(args, "--config")
        if not explicit and not (config and config_has_space_url(config)):
            return None
    return args


def main() -> None:
    args = command(sys.argv[1:], os.environ)
    if args is None:
        print(NO_SPACE_URL, file=sys.stderr)
        raise SystemExit(2)
    tmp = os.environ.get("TMPDIR")
    if tmp:
        os.makedirs(tmp, mode=0o700, exist_ok=True)
    # the console script beside this interpreter: /opt/passerelle/bin/passerelle in the image
    executable = str(Path(sys.executable).parent / "passerelle")
    os.execv(executable, [executable, *args])  # noqa: S606 - replaces this process, no shell involved


if __name__ == "__main__":
    main()
