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
    python bench/calibration_loso.py runs/sweep/cpu112/qtdog/*/trial0 --recipes plain \\
        --observers histogram minmax --out bench/results/observer_loso_round2.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from qtdog_train.config import ACTIVATION_OBSERVERS
from qtdog_train.data.loader import DomainTensors, RunData
from qtdog_train.evaluation import summarize
from qtdog_train.pipeline import load_run_data, member_calibration, reconvert
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
    parser.add_argument("runs", type=Path, nargs="+", help="run directories (qtdog train --out)")
    parser.add_argument("--members", type=int, nargs="+", default=[0], help="of every run")
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    parser.add_argument(
        "--observers", nargs="+", choices=ACTIVATION_OBSERVERS, default=["histogram"]
    )
    parser.add_argument("--images", type=int, default=256, help="calibration images")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    data, data_of = None, None
    for run, member in itertools.product(args.runs, args.members):
        cfg, model = load_selected_model(run, member)
        if data_of != run:  # the members of one run share its data
            data, data_of = load_run_data(cfg, torch.device("cpu")), run
        for domain in data.source_domains:
            view = pseudo_unseen(data, domain)
            weights_only = None
            for recipe, observer in itertools.product(args.recipes, args.observers):
                started = time.perf_counter()
                calibration = member_calibration(cfg, view, member, args.images, recipe)
                forms = ("onnx_int8",) if weights_only is not None else ("fake_quant", "onnx_int8")
                _, preds = reconvert(
                    model, cfg.bits, calibration, view, observer, forms, include_val=False
                )
                if weights_only is None:
                    weights_only = summarize(preds["fake_quant"], view)["test_acc"]
                int8 = summarize(preds["onnx_int8"], view)["test_acc"]
                row = {
                    "run": str(run),
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
