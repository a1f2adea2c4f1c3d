"""Choose the activation-calibration recipe on source domains only (leave one source out).

The activation cost of int8 conversion is a domain-shift effect: ranges calibrated on
the source domains clip or waste levels on an unseen domain. Measuring it on the
held-out domain and picking the recipe that wins there would be test-set tuning. This
bench instead holds out each *source* domain in turn: calibrate on the other source
domains' training images, convert, and measure on every image of the held-out source
domain the accuracy of the weight-quantized model (float activations) against the ONNX
int8 model. The recipe with the smallest mean cost over the pseudo-unseen domains is the
one to use; the real test domain is never read. A recipe is the calibration images
(``plain`` | ``augmented``) and the activation observer (``histogram`` | ``minmax``).

    python bench/calibration_loso.py runs/pacs-sketch-qtdog-eoq5 --members 0 2 \\
        --recipes plain augmented --out bench/results/calibration_loso.json
    python bench/calibration_loso.py runs/pacs-sketch-qtdog-eoq5 --members 0 1 2 \\
        --recipes plain --observers histogram minmax --out bench/results/observer_loso.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from qtdog_train.config import ACTIVATION_OBSERVERS
from qtdog_train.convert.member import convert_member
from qtdog_train.data.loader import DomainTensors, RunData
from qtdog_train.evaluation import run_predictions, summarize
from qtdog_train.pipeline import calibration_batches, load_run_data, onnx_predictor
from qtdog_train.trainer import load_selected_model

RECIPES = ("plain", "augmented")


def pseudo_unseen(data: RunData, domain: str) -> RunData:
    """``data`` with source ``domain`` moved out of the sources and made the (only) test domain."""
    sources = [d for d in data.source_domains if d != domain]
    everything = DomainTensors(
        torch.cat([data.train[domain].pixels, data.holdout[domain].pixels]),
        torch.cat([data.train[domain].labels, data.holdout[domain].labels]),
    )
    return replace(data, source_domains=sources, test_domains=[domain], test={domain: everything})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path)
    parser.add_argument("--members", type=int, nargs="+", default=[0])
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    parser.add_argument(
        "--observers", nargs="+", choices=ACTIVATION_OBSERVERS, default=["histogram"]
    )
    parser.add_argument("--images", type=int, default=256, help="calibration images")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    data = None
    for member in args.members:
        cfg, model = load_selected_model(args.run, member)
        if data is None:  # the members of one run share its data
            data = load_run_data(cfg, torch.device("cpu"))
        for domain in data.source_domains:
            view = pseudo_unseen(data, domain)
            weights_only = None
            for recipe, observer in itertools.product(args.recipes, args.observers):
                started = time.perf_counter()
                calibration = calibration_batches(
                    view, args.images, seed=cfg.seed + member, augment=recipe == "augmented"
                )
                with tempfile.TemporaryDirectory() as tmp:
                    converted = convert_member(
                        model, cfg.bits, calibration, Path(tmp) / "m.onnx", observer
                    )
                    if weights_only is None:
                        preds = run_predictions(converted.weight_quantized, view, include_val=False)
                        weights_only = summarize(preds, view)["test_acc"]
                    preds = run_predictions(
                        onnx_predictor(converted.onnx_path), view, include_val=False
                    )
                    int8 = summarize(preds, view)["test_acc"]
                row = {
                    "run": str(args.run),
                    "member": member,
                    "pseudo_unseen": domain,
                    "images": len(view.test[domain]),
                    "recipe": recipe,
                    "observer": observer,
                    "weights_only": weights_only,
                    "onnx_int8": int8,
                    "cost_points": 100 * (weights_only - int8),
                    "seconds": time.perf_counter() - started,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for recipe, observer in itertools.product(args.recipes, args.observers):
        costs = [
            r["cost_points"] for r in rows if r["recipe"] == recipe and r["observer"] == observer
        ]
        summary[f"{recipe}/{observer}"] = {
            "mean_cost_points": sum(costs) / len(costs),
            "max": max(costs),
        }
    print(json.dumps({"summary": summary}), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
