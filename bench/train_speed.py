"""Training step time: ERM vs QT-DoG (the LSQ quantizer's overhead), eager vs torch.compile.

Runs the trainer's own step (``train_step``: balanced minibatch, augmentation on the
training device, forward, backward, fused Adam) on a real dataset. QT-DoG is timed the
way a run meets it: float steps first, then the switch (LSQ attached, optimizer rebuilt,
the compiled forward recompiles), then quantized steps. Reported per case: the first
step (the compile, when compiled), the first step after the switch (the recompile),
the median ms/step of timed windows, images/s, peak GPU memory, and for compiled cases
how many steps it takes to earn the compile time back against eager.

A QT-DoG case also times its float phase, which is ERM's step, so ``--algorithms qtdog``
alone gives both (and compiles once less). Writes one JSON line per case as it finishes
(a time limit keeps what was done).

    python bench/train_speed.py --data data/PACS-112 --device cuda --algorithms qtdog --out train_speed.jsonl
    python bench/train_speed.py --data ../shared/data/PACS --device cpu --modes eager --steps 6 --windows 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from machine import describe_machine  # bench/machine.py, beside this script

from qtdog_train.config import TrainConfig
from qtdog_train.pipeline import load_run_data
from qtdog_train.trainer import (
    build_model,
    build_optimizer,
    compiled_forward,
    resolve_device,
    switch_to_quantized,
    train_step,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _window_ms(cfg, model, forward, optimizer, data, generator, device, steps: int) -> float:
    """Mean ms per step over ``steps`` steps, waiting for the last one (as the trainer's
    loss logging does); ``steps=1`` right after a (re)compile times the compile."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = train_step(cfg, model, forward, optimizer, data, generator)
    float(loss.detach())
    _sync(device)
    return 1000 * (time.perf_counter() - start) / steps


def measure(
    cfg: TrainConfig, data, device: torch.device, warmup: int, steps: int, windows: int
) -> dict[str, Any]:
    """Time one (algorithm, compile) case; see the module docstring for what is reported."""
    torch.manual_seed(0)
    generator = torch.Generator(device=device)
    generator.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = build_model(cfg, len(data.classes), quantized=False, device=device)
    optimizer = build_optimizer(cfg, model)
    forward = compiled_forward(cfg, model, device, cfg.steps)
    row: dict[str, Any] = {
        "algorithm": cfg.algorithm,
        "compile": cfg.compile,
        "first_step_s": _window_ms(cfg, model, forward, optimizer, data, generator, device, 1)
        / 1000,
    }
    for _ in range(warmup):
        train_step(cfg, model, forward, optimizer, data, generator)
    if cfg.algorithm == "qtdog":
        row["float_ms_per_step"] = _window_ms(
            cfg, model, forward, optimizer, data, generator, device, steps
        )
        optimizer = switch_to_quantized(cfg, model, optimizer)
        forward = compiled_forward(cfg, model, device, cfg.steps)
        row["first_step_after_switch_s"] = (
            _window_ms(cfg, model, forward, optimizer, data, generator, device, 1) / 1000
        )
        for _ in range(warmup):
            train_step(cfg, model, forward, optimizer, data, generator)
    per_window = [
        _window_ms(cfg, model, forward, optimizer, data, generator, device, steps)
        for _ in range(windows)
    ]
    ms = statistics.median(per_window)
    images = cfg.batch_size * len(data.source_domains)
    row.update(
        ms_per_step=ms,
        ms_per_step_windows=per_window,
        images_per_s=1000 * images / ms,
        images_per_step=images,
    )
    if device.type == "cuda":
        row["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True)
    parser.add_argument("--dataset", default="PACS")
    parser.add_argument("--test-domain", default="sketch")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=32, help="per source domain")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--algorithms", nargs="+", default=["erm", "qtdog"])
    parser.add_argument("--modes", nargs="+", default=["eager", "compiled"])
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps after the first")
    parser.add_argument("--steps", type=int, default=50, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--out", type=Path, help="append one JSON line per case here")
    args = parser.parse_args()

    device = resolve_device(args.device)
    base = TrainConfig(
        data=args.data,
        dataset=args.dataset,
        test_domains=[args.test_domain],
        image_size=args.image_size,
        batch_size=args.batch_size,
        device=str(device),
        out="unused",  # nothing is written: no run folder
    )
    started = time.perf_counter()
    data = load_run_data(base, device)
    print(f"data on {device} in {time.perf_counter() - started:.1f} s", flush=True)
    machine = describe_machine(cuda=device.type == "cuda") | {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    rows = []
    for mode in args.modes:
        for algorithm in args.algorithms:
            cfg = TrainConfig.from_dict(
                base.to_dict()
                | {"algorithm": algorithm, "compile": "on" if mode == "compiled" else "off"}
            )
            row = {
                "image_size": args.image_size,
                "device": str(device),
                **measure(cfg, data, device, args.warmup, args.steps, args.windows),
                "machine": machine,
            }
            rows.append(row)
            print(
                f"{algorithm:6s} {mode:8s} {row['ms_per_step']:8.1f} ms/step "
                f"{row['images_per_s']:8.0f} img/s  first step {row['first_step_s']:.1f} s"
                + (
                    f", after switch {row['first_step_after_switch_s']:.1f} s"
                    if "first_step_after_switch_s" in row
                    else ""
                ),
                flush=True,
            )
            if args.out:
                with args.out.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
    eager = {r["algorithm"]: r for r in rows if r["compile"] == "off"}
    for row in rows:
        ref = eager.get(row["algorithm"])
        if row["compile"] == "on" and ref and ref["ms_per_step"] > row["ms_per_step"]:
            overhead = row["first_step_s"] + row.get("first_step_after_switch_s", 0.0)
            saved = (ref["ms_per_step"] - row["ms_per_step"]) / 1000
            print(
                f"{row['algorithm']}: compile pays for itself after {overhead / saved:.0f} steps "
                f"({overhead:.0f} s of compiling, {1000 * saved:.1f} ms saved per step)"
            )
        if "float_ms_per_step" in row:  # a QT-DoG row times its float phase (= ERM's step) too
            print(
                f"LSQ quantizer overhead ({'compiled' if row['compile'] == 'on' else 'eager'}): "
                f"{row['ms_per_step'] / row['float_ms_per_step']:.2f}x the float step"
            )


if __name__ == "__main__":
    main()
