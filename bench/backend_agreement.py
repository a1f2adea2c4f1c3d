"""Do the SDK's backends agree? Top-1 agreement and accuracy of onnx vs torch on real images.

onnxruntime runs the int8 graph (int8 weights and activations); the torch
backend runs the same int8 weights dequantized, activations in float. Their
gap is the cost of activation quantization as the SDK ships it.

    python bench/backend_agreement.py qtdog_sdk/assets/default_model --data ../shared/data/PACS --domain sketch
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from qtdog_sdk import QTDoGEnsemble
from qtdog_sdk.evaluate import domain_images


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--domain", nargs="+", default=["sketch"])
    parser.add_argument(
        "--limit", type=int, default=0, help="at most this many images per domain (0 = all)"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    models = {
        name: QTDoGEnsemble.from_pretrained(args.model, backend=name, device="cpu")
        for name in ("onnx", "torch")
    }
    report = {}
    for domain in args.domain:
        items = domain_images(args.data, domain, models["onnx"].labels)
        if args.limit:
            items = items[:: max(1, len(items) // args.limit)][: args.limit]
        paths = [p for p, _ in items]
        truth = np.array([label for _, label in items])
        preds, seconds = {}, {}
        for name, model in models.items():
            start = time.perf_counter()
            preds[name] = model.predict_proba(paths, batch_size=64).argmax(axis=1)
            seconds[name] = time.perf_counter() - start
        report[domain] = {
            "n": len(paths),
            "accuracy": {name: float((p == truth).mean()) for name, p in preds.items()},
            "top1_agreement": float((preds["onnx"] == preds["torch"]).mean()),
            "seconds": seconds,
        }
        r = report[domain]
        print(
            f"{domain}: n={r['n']} onnx {100 * r['accuracy']['onnx']:.2f}% torch {100 * r['accuracy']['torch']:.2f}% "
            f"agreement {100 * r['top1_agreement']:.2f}%",
            flush=True,
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
