"""Peak memory and size on disk of each configuration that bench/speed.py times.

Every configuration runs in a fresh process of its own, so one configuration's allocations,
allocator caches and imported libraries never count for another. The child reads the kernel's
counters in /proc/self/status:

- ``rss_imports_mb``: resident memory after importing its runtime (onnxruntime, or torch);
- ``load_peak_mb``: the high-water mark through loading the model (session creation, building
  the torch model, compiling) and two warm-up batches;
- ``peak_mb``: the high-water mark while running ``--runs`` batches, counted after the kernel's
  peak counter was reset to the current resident size (``echo 5 > /proc/self/clear_refs``), so
  it is what serving costs, not what loading or compiling cost;
- ``added_mb`` = ``peak_mb - rss_imports_mb``: what the model and its inference add to a process
  that already has the runtime loaded.

``disk_mb`` is the ONNX file for onnxruntime, and for torch the float32 weights as a
safetensors file stores them. Two more rows are the whole ``qtdog predict`` command on one
image with the packaged model (onnx and torch backends), run in a fresh interpreter as the
console script runs it: the peak resident memory a user's process reaches.

    python bench/memory.py --sizes 224 --batches 1 32 --out bench/results/memory_cpu.json
    python bench/memory.py --sizes 224 --batches 32 --torch-compile    # adds inductor configs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import speed  # bench/speed.py, beside this script: the configs it times
from machine import describe_machine, machine_line  # bench/machine.py, beside this script

ONNX_CONFIGS = tuple(speed.ONNX_CONFIGS)
TORCH_CONFIGS = ("torch_eager_fp32",)
COMPILED_CONFIGS = ("torch_compiled_fp32", "torch_compiled_int8", "torch_compiled_int8_x5")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sketch_giraffe.png"


def read_status_mb(field: str) -> float:
    """``VmRSS`` or ``VmHWM`` of this process, in MB (1e6 bytes)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> None:
    """Set the kernel's high-water mark (VmHWM) back to the current resident size."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _runner(config: str, backbone: str, size: int, threads: int):
    """The same callables bench/speed.py times, built inside this (child) process."""
    if config in ONNX_CONFIGS:
        return speed._onnx_runner(speed._build(backbone, size)[speed.ONNX_CONFIGS[config]], threads)
    if config in ("torch_eager_fp32", "torch_compiled_fp32"):
        return speed._torch_runner(backbone, compiled=config == "torch_compiled_fp32")
    if config in COMPILED_CONFIGS:
        return speed._torch_int8_runners(backbone, size)[config]
    raise ValueError(f"unknown config {config!r}")


def measure_child(config: str, backbone: str, size: int, batch: int, runs: int, threads: int):
    """Run in the child: load ``config``, warm it up, then measure ``runs`` batches."""
    if config.startswith("torch"):
        import torch

        torch.set_num_threads(threads)
    else:
        import onnxruntime  # noqa: F401  (the runtime counts as imports, not as the model)
    rss_imports = read_status_mb("VmRSS")
    run = _runner(config, backbone, size, threads)
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    for _ in range(2):
        run(x)
    load_peak = read_status_mb("VmHWM")
    reset_peak()
    for _ in range(runs):
        run(x)
    peak = read_status_mb("VmHWM")
    return {
        "rss_imports_mb": rss_imports,
        "load_peak_mb": load_peak,
        "peak_mb": peak,
        "added_mb": peak - rss_imports,
        "torch_imported": "torch" in sys.modules,
    }


def run_child(config: str, args: argparse.Namespace, size: int, batch: int) -> dict:
    """Measure one configuration in ``args.repeats`` fresh interpreters (onnxruntime's arena
    and the allocators do not land on the same peak every time): the median of each number."""
    measured = [_run_child_once(config, args, size, batch) for _ in range(args.repeats)]
    return {
        key: statistics.median(m[key] for m in measured) if isinstance(value, float) else value
        for key, value in measured[0].items()
    }


def _run_child_once(config: str, args: argparse.Namespace, size: int, batch: int) -> dict:
    """One fresh interpreter; its last stdout line is the JSON."""
    cmd = [sys.executable, __file__, "--child", config, "--size", str(size), "--batch", str(batch)]
    cmd += ["--backbone", args.backbone, "--runs", str(args.runs), "--threads", str(args.threads)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"memory.py: {config} at {size} px, batch {batch} failed: {last}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def predict_command_child(backend: str) -> dict:
    """Run in the child: ``qtdog predict EXAMPLE --backend B`` as the console script does, in
    this fresh interpreter, and report its high-water mark. (Not ``os.wait4`` on a
    subprocess: ``ru_maxrss`` keeps the forking parent's pages from before ``exec``.)"""
    import contextlib

    from qtdog_sdk.cli import main as qtdog_main

    sys.argv = ["qtdog", "predict", str(EXAMPLE), "--backend", backend, "--format", "json"]
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        try:
            qtdog_main()
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                raise SystemExit(
                    f"qtdog predict --backend {backend} exited with {exit_.code}"
                ) from None
    return {"peak_mb": read_status_mb("VmHWM"), "torch_imported": "torch" in sys.modules}


def sizes_on_disk(backbone: str, size: int, configs: tuple[str, ...]) -> dict[str, float | None]:
    """MB on disk of what each config loads: its ONNX file, or torch's float32 weights as a
    safetensors file holds them (the compiled int8 member has no file: it is built from the
    LSQ model at load time)."""
    import io

    from safetensors.torch import save

    paths = speed._build(backbone, size)  # here, so no child pays for converting
    state = {k: v.contiguous() for k, v in speed._model(backbone).state_dict().items()}
    torch_fp32 = len(io.BytesIO(save(state)).getvalue()) / 1e6
    sizes: dict[str, float | None] = {
        config: paths[model].stat().st_size / 1e6 for config, model in speed.ONNX_CONFIGS.items()
    }
    sizes.update(torch_eager_fp32=torch_fp32, torch_compiled_fp32=torch_fp32)
    return {config: sizes.get(config) for config in configs}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default=None, help="a timm name (default: the SDK's Lite0)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--runs", type=int, default=5, help="batches measured after warm-up")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per config")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--torch-compile", action="store_true", help="add the inductor configs")
    parser.add_argument("--no-predict", action="store_true", help="skip the qtdog predict rows")
    parser.add_argument("--out", type=Path, help="write the JSON result here too")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backbone is None:
        from qtdog_train.models.backbones import DEFAULT_BACKBONE

        args.backbone = DEFAULT_BACKBONE
    if args.child and args.child.startswith("predict_"):
        print(json.dumps(predict_command_child(args.child[len("predict_") :])))
        return
    if args.child:
        row = measure_child(
            args.child, args.backbone, args.size, args.batch, args.runs, args.threads
        )
        print(json.dumps(row))
        return

    configs = ONNX_CONFIGS + TORCH_CONFIGS + (COMPILED_CONFIGS if args.torch_compile else ())
    rows = []
    for size in args.sizes:
        disk = sizes_on_disk(args.backbone, size, configs)
        for batch in args.batches:
            for config in configs:
                row = {"size": size, "batch": batch, "config": config}
                row.update(run_child(config, args, size, batch), disk_mb=disk[config])
                rows.append(row)
                on_disk = f"{disk[config]:7.1f} MB" if disk[config] is not None else "      n/a"
                print(
                    f"{size:4d} px  batch {batch:3d}  {config:24s} peak {row['peak_mb']:7.1f} MB"
                    f"  (+{row['added_mb']:6.1f} over imports)  disk {on_disk}",
                    flush=True,
                )
    predict = {}
    if not args.no_predict:
        for backend in ("onnx", "torch"):
            predict[backend] = run_child(f"predict_{backend}", args, 0, 0)
            print(f"qtdog predict --backend {backend}: peak {predict[backend]['peak_mb']:.1f} MB")
    result = {
        "backbone": args.backbone,
        "machine": machine_line(describe_machine()),
        "threads": args.threads,
        "repeats": args.repeats,
        "predict_command": predict,
        "rows": rows,
    }
    speed.report(result, args.out)


if __name__ == "__main__":
    main()
