"""qtdog: run int8 QT-DoG ensembles (quantization-aware training for domain generalization).

The public API lives here. ``import qtdog_sdk`` is light: it imports neither
torch nor onnxruntime until a model is loaded.

Example::

    >>> from qtdog_sdk import QTDoGEnsemble
    >>> model = QTDoGEnsemble.from_pretrained("owner/qtdog-pacs-sketch")   # doctest: +SKIP
    >>> pred = model.predict("sketch_of_a_dog.png")                        # doctest: +SKIP
    >>> pred.label, round(pred.score, 2), pred.agreement                   # doctest: +SKIP
    ('dog', 0.91, 1.0)
    >>> probs = model.predict_proba(["a.jpg", "b.jpg"])   # [N, C], rows sum to 1  # doctest: +SKIP
    >>> for p in model.iter_predict(paths, batch_size=32):                 # doctest: +SKIP
    ...     print(p.to_dict())

Errors are :class:`QTDoGError` subclasses with one-line messages.
"""

from __future__ import annotations

from qtdog_sdk._version import __version__
from qtdog_sdk.ensemble import QTDoGEnsemble
from qtdog_sdk.errors import (
    BackendUnavailableError,
    DatasetError,
    ImageLoadError,
    ModelFormatError,
    ModelNotFoundError,
    QTDoGError,
    UnsupportedFormatVersionError,
)
from qtdog_sdk.images import load_image, preprocess, resize_rgb
from qtdog_sdk.results import LabelScore, Prediction

__all__ = [
    "BackendUnavailableError",
    "DatasetError",
    "ImageLoadError",
    "LabelScore",
    "ModelFormatError",
    "ModelNotFoundError",
    "Prediction",
    "QTDoGEnsemble",
    "QTDoGError",
    "UnsupportedFormatVersionError",
    "__version__",
    "load_image",
    "preprocess",
    "resize_rgb",
]
