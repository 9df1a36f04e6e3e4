"""Typed settings (core groups, validated at start-up) and their loading."""

from passerelle.config.loader import ConfigError, load_config, read_secret
from passerelle.config.settings import CoreSettings, RetentionSettings

__all__ = ["ConfigError", "CoreSettings", "RetentionSettings", "load_config", "read_secret"]
