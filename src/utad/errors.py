"""User-facing errors: one clear line that names the file and the problem; the CLI prints it without a traceback."""

from __future__ import annotations


class UtadError(Exception):
    """An error caused by the user's input (a path, a file, a config), not by a bug in utad."""


class DataError(UtadError):
    """A data file or folder is missing, unreadable or inconsistent."""


class ConfigError(UtadError):
    """A config file or override is invalid."""
