"""Every string the console shows, in French (the default) and English: one catalogue, one place
(``catalogue.yaml`` beside this module, ``key: [French, English]``, read once on first use).

Templates call ``t("key")``; a key missing from the catalogue is an error (``KeyError``), never a silent
fallback, and a test checks that every key a template uses is there in both languages. ``t(key, default)``
is for open-ended values (an event kind the catalogue does not know yet is shown as it is).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from importlib import resources

import yaml

DEFAULT_LANGUAGE = "fr"
LANGUAGES = ("fr", "en")

_MISSING = object()


@functools.cache
def catalogue() -> Mapping[str, tuple[str, str]]:
    """key → (French, English)."""
    text = resources.files(__package__).joinpath("catalogue.yaml").read_text(encoding="utf-8")
    entries = yaml.safe_load(text)
    out: dict[str, tuple[str, str]] = {}
    for key, value in entries.items():
        if not (isinstance(value, list) and len(value) == len(LANGUAGES) and all(isinstance(v, str) for v in value)):
            raise ValueError(f"console catalogue: {key} must be [French, English]")
        out[str(key)] = (value[0], value[1])
    return out


def translator(lang: str) -> Callable[..., str]:
    """``t(key)`` in ``lang``; ``t(key, default)`` gives ``default`` for a key the catalogue lacks."""
    index = LANGUAGES.index(lang) if lang in LANGUAGES else 0
    strings = catalogue()

    def t(key: str, default: object = _MISSING) -> str:
        entry = strings.get(key)
        if entry is None:
            if default is _MISSING:
                raise KeyError(f"console catalogue: no string {key!r}")
            return str(default)
        return entry[index]

    return t
