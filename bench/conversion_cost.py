"""What int8 conversion costs, member by member: fake-quant vs torch int8 vs ONNX.

Re-converts the selected model of every member of the given runs with the
current conversion code (BN folding, pt2e with the learned weight scales,
activation calibration on source-domain training images, ONNX export) and
measures, on the held-out domain(s) and on the source holdout:

- accuracy of the weight-only model (`fake_quant`: QT-DoG's fake-quant model; an ERM
  model's post-training integer weights), of the torch int8 model and of
  the ONNX model under onnxruntime;
- top-1 agreement torch int8 vs ONNX (the same integer graph: should be
  ~100%), and, with ``--reference``, agreement of pt2e's float32 reference
  execution of the same graph with ONNX, the number this project reported
  before its torch int8 model computed convs like integer kernels.

    python bench/conversion_cost.py runs/pacs-sketch-erm-s0 runs/pacs-sketch-qtdog-eoq5 \\
        --out bench/results/conversion_cost.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from qtdog_train.evaluation import agreement, summarize
from qtdog_train.pipeline import (
    conversion_predictions,
    load_run_data,
    member_calibration,
    reconvert,
)
from qtdog_train.trainer import load_selected_model


def member_count(run: Path) -> int:
    return len(sorted(run.glob("member-*/checkpoint.pt")))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--reference", action="store_true", help="also run pt2e's float reference")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    data_cache: dict[tuple, Any] = {}
    for run in args.runs:
        for index in range(member_count(run)):
            cfg, model = load_selected_model(run, index)
            key = (cfg.data, tuple(cfg.test_domains), cfg.image_size, cfg.trial_seed)
            if key not in data_cache:
                data_cache[key] = load_run_data(cfg, torch.device("cpu"))
            data = data_cache[key]
            calibration = member_calibration(cfg, data, index)
            started = time.time()
            forms = ("fake_quant", "torch_int8", "onnx_int8")
            converted, preds = reconvert(
                model, cfg.bits, calibration, data, cfg.activation_observer, forms, slow_on_val=True
            )
            if args.reference:  # slow: compared on the test domains only
                preds |= conversion_predictions(
                    converted, data, ("pt2e_reference",), include_val=False
                )
            row: dict[str, Any] = {
                "run": str(run),
                "member": index,
                "algorithm": cfg.algorithm,
                "bits": cfg.bits,
                **{name: summarize(p, data) for name, p in preds.items()},
                "agreement_torch_int8_vs_onnx": agreement(preds["torch_int8"], preds["onnx_int8"]),
                "agreement_torch_int8_vs_onnx_val": agreement(
                    preds["torch_int8"], preds["onnx_int8"], split="val"
                ),
                "agreement_fake_quant_vs_onnx": agreement(preds["fake_quant"], preds["onnx_int8"]),
                "int8_convs": {
                    "torch": list(converted.torch_int8_convs),
                    "onnx": list(converted.onnx_int8_convs),
                },
                "seconds": round(time.time() - started, 1),
            }
            if args.reference:
                row["agreement_pt2e_reference_vs_onnx"] = agreement(
                    preds["pt2e_reference"], preds["onnx_int8"]
                )
            rows.append(row)
            test = {n: 100 * row[n]["test_acc"] for n in preds}
            print(
                f"{run.name} member {index}: "
                + " ".join(f"{n} {v:.2f}" for n, v in test.items())
                + f" | agree torch/onnx {100 * row['agreement_torch_int8_vs_onnx']:.2f}%"
                + (
                    f" (pt2e reference {100 * row['agreement_pt2e_reference_vs_onnx']:.2f}%)"
                    if args.reference
                    else ""
                ),
                flush=True,
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
