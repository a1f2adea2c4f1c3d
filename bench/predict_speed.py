"""Prediction throughput and CLI cold start of a qtdog model.

Measures images/s at batch 1 and batch 32 for each backend (onnx, torch)
on preprocessed random inputs (model time only), plus the wall time of a
cold ``qtdog predict`` subprocess on one image (imports + load + predict).
Prints a markdown table and, last, one JSON line.

    python bench/predict_speed.py                     # the packaged model
    python bench/predict_speed.py runs/pacs/model --repeats 7
    python bench/predict_speed.py --backends torch --device cuda --batches 1,32,256
    python bench/predict_speed.py --backends torch --device cuda --image-size 224

``--image-size`` times the torch backend on inputs of another size than the model's own (Lite0
is fully convolutional; the weights do not change the cost), e.g. the paper's 224 px with a
112 px model. The ONNX graphs have their input size fixed, so the onnx backend is skipped then.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe_machine, machine_line  # bench/machine.py, beside this script


def throughput(
    model, batch: int, repeats: int, size: tuple[int, int], min_seconds: float = 0.5
) -> float:
    """Median images/s over ``repeats`` timed runs on ``size`` (h, w) inputs (after a warm-up)."""
    h, w = size
    x = np.random.default_rng(0).standard_normal((batch, 3, h, w)).astype(np.float32)
    for _ in range(3):  # warm-up (oneDNN builds kernels per shape on first calls)
        model.backend.run(x)
    rates = []
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while True:
            model.backend.run(x)
            n += batch
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds / repeats:
                break
        rates.append(n / elapsed)
    return statistics.median(rates)


def cold_start(model_arg: str | None, repeats: int) -> float | None:
    exe = shutil.which("qtdog")
    if exe is None:
        return None
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        img = Path(tmp) / "x.png"
        Image.new("RGB", (64, 64), (120, 30, 200)).save(img)
        cmd = [exe, "predict", str(img), "--format", "json", "--quiet"]
        if model_arg:
            cmd += ["--model", model_arg]
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = subprocess.run(cmd, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if result.returncode != 0:
                print(f"cold start failed: {result.stderr.strip()}", file=sys.stderr)
                return None
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "model", nargs="?", default=None, help="model dir or Hub id (default: packaged model)"
    )
    parser.add_argument("--backends", default="onnx,torch")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--device", default="cpu", help="cpu or cuda (the torch backend runs bf16 there)"
    )
    parser.add_argument(
        "--image-size", type=int, help="time square inputs of this size (default: the model's own)"
    )
    args = parser.parse_args()

    from qtdog_sdk import QTDoGEnsemble, QTDoGError

    batches = [int(b) for b in args.batches.split(",")]
    results: dict[str, dict[str, float | None]] = {}
    info: dict[str, object] = {}
    for backend in args.backends.split(","):
        try:
            start = time.perf_counter()
            model = QTDoGEnsemble.from_pretrained(args.model, backend=backend, device=args.device)
            load_s = time.perf_counter() - start
        except QTDoGError as exc:
            print(f"{backend}: skipped ({exc})", file=sys.stderr)
            continue
        own = tuple(model.config.preprocessing.size)
        size = (args.image_size, args.image_size) if args.image_size else own
        if backend == "onnx" and size != own:
            print(
                f"onnx: skipped (its graph's input is fixed at {own[0]}x{own[1]})", file=sys.stderr
            )
            continue
        info = {
            "architecture": model.config.architecture,
            "members": model.num_members,
            "input": list(size),
            "model_input": list(own),
            "device": model.device,
        }
        row: dict[str, float | None] = {"load_s": load_s}
        for batch in batches:
            row[f"b{batch}_img_s"] = throughput(model, batch, args.repeats, size)
        results[backend] = row
    cold = cold_start(args.model, max(1, args.repeats // 2))

    machine = machine_line(describe_machine(cuda=args.device == "cuda"))
    print(f"model: {args.model or 'packaged default'}  {info}  ({machine})")
    print()
    print("| backend | load (s) | " + " | ".join(f"batch {b} (img/s)" for b in batches) + " |")
    print("|---|---|" + "---|" * len(batches))
    for backend, row in results.items():
        cells = " | ".join(f"{row[f'b{b}_img_s']:.1f}" for b in batches)
        print(f"| {backend} | {row['load_s']:.2f} | {cells} |")
    print()
    print(f"cold start of `qtdog predict` (1 image): {cold:.2f} s" if cold else "cold start: n/a")
    print(
        json.dumps(
            {
                "model": args.model,
                "machine": machine,
                **info,
                "backends": results,
                "cold_start_s": cold,
            }
        )
    )


if __name__ == "__main__":
    main()
