"""Accuracy of an ensemble on one domain of a DomainBed-layout dataset.

Layout: ``ROOT/<domain>/<class>/<image files>``; class folder names must be
model labels.

Example::

    >>> from qtdog_sdk import QTDoGEnsemble
    >>> from qtdog_sdk.evaluate import evaluate_domain
    >>> model = QTDoGEnsemble.from_pretrained("runs/pacs/model")            # doctest: +SKIP
    >>> evaluate_domain(model, "data/PACS", "sketch")["accuracy"]           # doctest: +SKIP
    0.8123
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qtdog_sdk.errors import DatasetError
from qtdog_sdk.images import IMAGE_EXTENSIONS

__all__ = ["domain_images", "evaluate_domain"]


def domain_images(root: str | Path, domain: str, labels: list[str]) -> list[tuple[Path, int]]:
    """(image path, label index) for every image of ``ROOT/<domain>/<class>/``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root is not a directory")
    ddir = root / domain
    if not ddir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DatasetError(
            f"{ddir}: no such domain folder (domains here: {', '.join(found) or 'none'})"
        )
    class_dirs = sorted(p for p in ddir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DatasetError(f"{ddir}: no class folders (expected {ddir}/<class>/<images>)")
    index = {label: i for i, label in enumerate(labels)}
    unknown = [p.name for p in class_dirs if p.name not in index]
    if unknown:
        raise DatasetError(
            f"{ddir}: class folders {unknown} are not labels of the model (model labels: {labels})"
        )
    items: list[tuple[Path, int]] = []
    for cdir in class_dirs:
        for path in sorted(cdir.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                items.append((path, index[cdir.name]))
    if not items:
        raise DatasetError(f"{ddir}: no image files found")
    return items


def evaluate_domain(
    ensemble: Any, root: str | Path, domain: str, batch_size: int = 32
) -> dict[str, Any]:
    """Evaluate ``ensemble`` on ``ROOT/<domain>``.

    Returns a dict with ``domain``, ``root``, ``n`` (images evaluated),
    ``accuracy``, ``per_class_accuracy`` ({label: accuracy or None when the
    class has no images}), ``confusion_matrix`` (rows = true class, columns =
    predicted class, in ``labels`` order), ``labels``, ``n_failed`` and
    ``failed`` (one-line errors of images that could not be loaded).
    """
    labels = list(ensemble.labels)
    items = domain_images(root, domain, labels)
    k = len(labels)
    confusion = np.zeros((k, k), dtype=np.int64)
    failed: list[str] = []
    index = {label: i for i, label in enumerate(labels)}
    truth = [t for _, t in items]
    preds = ensemble.iter_predict([str(p) for p, _ in items], batch_size=batch_size, top_k=1)
    for true, pred in zip(truth, preds, strict=True):
        if pred.error is not None:
            failed.append(pred.error)
            continue
        confusion[true, index[pred.label]] += 1
    n = int(confusion.sum())
    if n == 0:
        raise DatasetError(
            f"{Path(root) / domain}: no image could be loaded ({failed[0] if failed else ''})"
        )
    per_class = {}
    for i, label in enumerate(labels):
        row = int(confusion[i].sum())
        per_class[label] = float(confusion[i, i] / row) if row else None
    return {
        "domain": domain,
        "root": str(root),
        "n": n,
        "accuracy": float(np.trace(confusion) / n),
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
        "labels": labels,
        "n_failed": len(failed),
        "failed": failed,
    }
