"""Accuracy of any callable model on the run's domains (torch modules or ONNX sessions)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from qtdog_train.data.loader import DomainTensors, RunData

Predictor = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def predictions(
    predict: Predictor, data: RunData, part: DomainTensors, batch_size: int = 256
) -> torch.Tensor:
    """Top-1 class of every image of ``part`` (on the CPU)."""
    out = [predict(x).argmax(dim=1).cpu() for x, _ in data.iter_eval(part, batch_size)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def accuracy(predict: Predictor, data: RunData, part: DomainTensors) -> float:
    if len(part) == 0:
        return float("nan")
    return float((predictions(predict, data, part) == part.labels.cpu()).float().mean())


def evaluate_run(predict: Predictor, data: RunData, include_test: bool = True) -> dict[str, object]:
    """Per-domain accuracies: source holdout (``val``), their mean (``val_acc``), and test domains."""
    val = {d: accuracy(predict, data, data.holdout[d]) for d in data.source_domains}
    result: dict[str, object] = {"val": val, "val_acc": sum(val.values()) / max(len(val), 1)}
    if include_test:
        test = {d: accuracy(predict, data, data.test[d]) for d in data.test_domains}
        result["test"] = test
        result["test_acc"] = sum(test.values()) / max(len(test), 1)
    return result
