"""Activation cost of int8 conversion against the size of the calibration set.

Re-converts one member's selected model, calibrating activations on N source-domain
training images for each N given, and prints source-holdout and held-out-domain accuracy
of the weight-quantized model (float activations) and of the ONNX int8 model:

    python bench/calibration_size.py runs/pacs-sketch-qtdog-eoq5 --member 2 --images 1024 64
    python bench/calibration_size.py runs/pacs-sketch-qtdog-eoq5 --member 2 --images 256 --augment

``--augment`` calibrates on augmented images and ``--observer minmax`` keeps whole ranges (the
recipes bench/calibration_loso.py compares).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from qtdog_train.config import ACTIVATION_OBSERVERS, DEFAULT_ACTIVATION_OBSERVER
from qtdog_train.evaluation import summarize
from qtdog_train.pipeline import load_run_data, member_calibration, reconvert
from qtdog_train.trainer import load_selected_model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path)
    parser.add_argument("--member", type=int, default=0)
    parser.add_argument("--images", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--augment", action="store_true", help="augmented calibration images")
    parser.add_argument(
        "--observer", choices=ACTIVATION_OBSERVERS, default=DEFAULT_ACTIVATION_OBSERVER
    )
    args = parser.parse_args()
    cfg, model = load_selected_model(args.run, args.member)
    data = load_run_data(cfg, torch.device("cpu"))
    recipe = "augmented" if args.augment else "plain"
    weights_only = None
    for count in args.images:
        calibration = member_calibration(cfg, data, args.member, count, recipe)
        forms = ("onnx_int8",) if weights_only is not None else ("fake_quant", "onnx_int8")
        _, preds = reconvert(model, cfg.bits, calibration, data, args.observer, forms)
        if weights_only is None:
            weights_only = summarize(preds["fake_quant"], data)
        onnx = summarize(preds["onnx_int8"], data)
        print(
            f"member {args.member} calibration {count}{' augmented' if args.augment else ''} "
            f"{args.observer}: "
            f"source val {100 * weights_only['val_acc']:.2f} -> {100 * onnx['val_acc']:.2f} | "
            f"{'+'.join(data.test_domains)} {100 * weights_only['test_acc']:.2f} -> "
            f"{100 * onnx['test_acc']:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
