"""Accuracy of any callable model on the run's domains (torch modules or ONNX sessions)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from qtdog_train.data.loader import DomainTensors, RunData

Predictor = Callable[[torch.Tensor], torch.Tensor]
Predictions = dict[str, dict[str, torch.Tensor]]


def mean_logits(predictors: list[Predictor]) -> Predictor:
    """An ensemble predictor: the mean of the members' logits (EoQ's prediction rule)."""

    def ensemble(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([p(x) for p in predictors]).mean(dim=0)

    return ensemble


@torch.no_grad()
def predictions(
    predict: Predictor, data: RunData, part: DomainTensors, batch_size: int = 256
) -> torch.Tensor:
    """Top-1 class of every image of ``part`` (on the CPU)."""
    out = [predict(x).argmax(dim=1).cpu() for x, _ in data.iter_eval(part, batch_size)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def run_predictions(
    predict: Predictor, data: RunData, include_test: bool = True, include_val: bool = True
) -> Predictions:
    """Top-1 classes on every source holdout (``"val"``) and every test domain (``"test"``)."""
    out: Predictions = {}
    if include_val:
        out["val"] = {d: predictions(predict, data, data.holdout[d]) for d in data.source_domains}
    if include_test:
        out["test"] = {d: predictions(predict, data, data.test[d]) for d in data.test_domains}
    return out


def summarize(preds: Predictions, data: RunData) -> dict[str, object]:
    """Per-domain accuracies: source holdout (``val``), their mean (``val_acc``), and test domains."""
    parts = {"val": data.holdout, "test": data.test}
    result: dict[str, object] = {}
    for split, per_domain in preds.items():
        accs = {
            d: float((p == parts[split][d].labels.cpu()).float().mean()) if len(p) else float("nan")
            for d, p in per_domain.items()
        }
        result[split] = accs
        result[f"{split}_acc"] = sum(accs.values()) / max(len(accs), 1)
    return result


def evaluate_run(predict: Predictor, data: RunData, include_test: bool = True) -> dict[str, object]:
    return summarize(run_predictions(predict, data, include_test), data)


def agreement(a: Predictions, b: Predictions, split: str = "test") -> float:
    """Fraction of images of ``split`` on which two models' top-1 classes agree."""
    same = sum(int((a[split][d] == b[split][d]).sum()) for d in a[split])
    total = sum(len(a[split][d]) for d in a[split])
    return same / max(total, 1)
