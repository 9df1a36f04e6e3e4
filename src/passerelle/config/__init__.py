"""Typed settings (one object, validated at start-up) and their loading."""

from passerelle.config.loader import ConfigError, load_settings, read_secret
from passerelle.config.settings import Settings

__all__ = ["ConfigError", "Settings", "load_settings", "read_secret"]
