"""Exception hierarchy shared by every stage.

Each error carries a short machine-readable ``code`` (used by reports, the CLI's JSON output and later the HTTP API)
and a human message that names the offending file or value, never its content.
"""

from __future__ import annotations


class FacegateError(Exception):
    """Base class of every error facegate raises on purpose."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        """The human-readable message."""
        return str(self.args[0]) if self.args else self.code


class ConfigError(FacegateError):
    """Invalid configuration value or file."""

    code = "config_error"


class ImageError(FacegateError):
    """An image could not be read or decoded safely (corrupt, truncated, too large, not an image)."""

    code = "bad_image"


class FaceError(FacegateError):
    """No usable face in an image (``no_face``, ``multiple_faces``, ``face_too_small``, ``blurry``)."""

    code = "no_face"


class DataError(FacegateError):
    """A dataset, pair list or manifest is malformed or inconsistent."""

    code = "bad_data"


class ModelError(FacegateError):
    """A model is unknown, missing, or fails its integrity check."""

    code = "bad_model"


class StorageError(FacegateError):
    """Object storage could not be read or written."""

    code = "storage_error"
