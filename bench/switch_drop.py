"""Accuracy right at the QT-DoG switch, for each step-size init rule and bit width.

Takes a float checkpoint of a run (e.g. an ERM run's member-0/checkpoint.pt,
the state QT-DoG would switch from), attaches LSQ with each ``--s-init`` rule,
and measures source-holdout accuracy (the selection signal) before and after.
Only source-domain numbers are printed by default: this script exists to
choose the default init without looking at the held-out domain.

    python bench/switch_drop.py runs/pacs-sketch-erm-s0 --bits 7 --out bench/results/switch_drop.json
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from qtdog_train.config import TrainConfig
from qtdog_train.evaluation import evaluate_run, predictions
from qtdog_train.pipeline import load_run_data
from qtdog_train.quant.lsq import S_INIT_RULES, attach_lsq
from qtdog_train.trainer import build_model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "run", type=Path, help="a run folder holding run.json and member-0/checkpoint.pt (float)"
    )
    parser.add_argument("--bits", type=int, nargs="+", default=[7])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cfg = TrainConfig.from_dict(json.loads((args.run / "run.json").read_text()))
    ckpt = torch.load(
        args.run / "member-0" / "checkpoint.pt", map_location="cpu", weights_only=True
    )
    if ckpt["quantized"]:
        raise SystemExit(
            "the checkpoint is already quantized; pass a float (ERM or pre-switch) run"
        )
    data = load_run_data(cfg, torch.device("cpu"))
    base = build_model(cfg, len(data.classes), quantized=False, device=torch.device("cpu"))
    base.load_state_dict(ckpt["model"])
    base.eval()
    before = evaluate_run(base, data, include_test=False)
    reference = {d: predictions(base, data, data.holdout[d]) for d in data.source_domains}
    rows = []
    for bits in args.bits:
        for rule in S_INIT_RULES:
            model = copy.deepcopy(base)
            attach_lsq(model, bits, rule)
            model.eval()
            after = evaluate_run(model, data, include_test=False)
            agree = sum(
                int((predictions(model, data, data.holdout[d]) == reference[d]).sum())
                for d in reference
            )
            total = sum(len(v) for v in reference.values())
            rows.append(
                {
                    "bits": bits,
                    "s_init": rule,
                    "val_acc_before": before["val_acc"],
                    "val_acc_after": after["val_acc"],
                    "top1_agreement_with_float": agree / total,
                }
            )
            print(
                f"bits {bits} {rule:7s} source val {100 * before['val_acc']:.1f} -> {100 * after['val_acc']:.1f}"
                f"  agreement with float {100 * agree / total:.1f}%",
                flush=True,
            )
    result = {"run": str(args.run), "step": ckpt["step"], "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
