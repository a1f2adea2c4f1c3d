"""Typed prediction results.

Example::

    >>> p = Prediction(path="cat.jpg", label="cat", score=0.9,
    ...                top_k=[LabelScore("cat", 0.9), LabelScore("dog", 0.1)],
    ...                member_labels=["cat", "cat"], agreement=1.0)
    >>> p.ok
    True
    >>> sorted(p.to_dict())
    ['agreement', 'label', 'member_labels', 'path', 'score', 'top_k']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LabelScore", "Prediction", "softmax"]


@dataclass(frozen=True)
class LabelScore:
    """One class and its ensemble probability."""

    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score}


@dataclass
class Prediction:
    """The ensemble's answer for one input image.

    ``label``/``score`` are the top class and its probability under the
    ensemble rule (softmax of the members' mean logits); ``top_k`` lists the
    best classes in decreasing order; ``member_labels`` is each member's own
    top-1 and ``agreement`` the fraction of members voting for ``label``.
    For an input that could not be loaded, ``error`` holds a one-line message
    and the other fields are empty.
    """

    path: str | None
    label: str | None = None
    score: float | None = None
    top_k: list[LabelScore] = field(default_factory=list)
    member_labels: list[str] = field(default_factory=list)
    agreement: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the input was predicted (no error)."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``path, label, score, top_k, agreement, member_labels``
        for a prediction, ``path, error`` for a failed input."""
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {
            "path": self.path,
            "label": self.label,
            "score": self.score,
            "top_k": [ls.to_dict() for ls in self.top_k],
            "agreement": self.agreement,
            "member_labels": list(self.member_labels),
        }

    @classmethod
    def failed(cls, path: str | None, error: str) -> Prediction:
        return cls(path=path, error=error)

    @classmethod
    def from_logits(
        cls, path: str | None, member_logits: np.ndarray, labels: list[str], top_k: int = 5
    ) -> Prediction:
        """Build a prediction from one image's per-member logits ``[M, C]``."""
        member_logits = np.asarray(member_logits, dtype=np.float64)
        probs = softmax(member_logits.mean(axis=0))
        order = np.argsort(-probs, kind="stable")
        k = max(1, min(int(top_k), len(labels)))
        best = int(order[0])
        votes = member_logits.argmax(axis=1)
        return cls(
            path=path,
            label=labels[best],
            score=float(probs[best]),
            top_k=[LabelScore(labels[int(i)], float(probs[int(i)])) for i in order[:k]],
            member_labels=[labels[int(v)] for v in votes],
            agreement=float(np.mean(votes == best)),
        )


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    x = np.asarray(x, dtype=np.float64)
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)
