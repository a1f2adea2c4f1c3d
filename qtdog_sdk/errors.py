"""Exception classes of the SDK.

Every error a user can trigger derives from :class:`QTDoGError` and carries a
one-line message that names the file or field at fault, so the CLI can print
it as it is and exit, without a traceback.
"""

from __future__ import annotations


class QTDoGError(Exception):
    """Base class of every error the SDK raises on purpose."""


class ModelFormatError(QTDoGError):
    """A model repository is malformed: bad config, missing file, hash mismatch."""


class UnsupportedFormatVersionError(ModelFormatError):
    """config.json declares a format version this SDK does not know."""


class ModelNotFoundError(QTDoGError):
    """Neither a local directory nor the Hub (nor its cache) has the model."""


class BackendUnavailableError(QTDoGError):
    """The requested backend or device cannot be used here (package or GPU missing)."""


class ImageLoadError(QTDoGError):
    """An input image is missing, corrupt, too large or of an unsupported kind."""


class DatasetError(QTDoGError):
    """A dataset folder does not follow the DomainBed layout or is inconsistent."""
