"""Errors meant for users: one line that names the file, line or field and what was expected."""

from typing import Optional


class FlaretuneError(Exception):
    """Base class for every error flaretune raises for a user's mistake."""


class DataFormatError(FlaretuneError):
    """Bad input data. ``str(err)`` starts with ``path:line:`` so editors can jump to it."""

    def __init__(self, path, line: Optional[int], message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else f"{self.path}:0"
        super().__init__(f"{where}: {message}")


class ConfigError(FlaretuneError):
    """A job or component argument is invalid; the message names the field and the valid values."""


class MissingAssetError(FlaretuneError):
    """An offline model or lexicon package is not installed; the message gives the install command."""


# A site's error reply carries its one-line reason here, so the server can name it when it stops a job.
SITE_ERROR_HEADER = "flaretune_site_error"
