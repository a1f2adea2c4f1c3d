"""Speed and size: one fp32 model vs one int8 member vs the 5-member int8 EoQ.

Everything is measured side by side in one run on this machine, with the
same input tensors, as images/s (median of repeats) and latency at batch 1
and 32. Compute does not depend on the weight values, so the members are
copies of one Lite0 converted by the real pipeline (learned-integer weights,
calibrated uint8 activations, QDQ ONNX); the ensemble is the merged
one-graph form the model repository ships (``ensemble.onnx``).

    python bench/speed.py --quick                 # < 1 minute once models are cached
    python bench/speed.py --sizes 224 112 --batches 1 32 --repeats 7 --torch-compile
    python bench/speed.py --backbone resnet50 --sizes 224 --batches 32   # no depthwise convs

``--torch-compile`` adds torch.compile (inductor, freezing) of the fp32 model and of the int8
member's pt2e graph, lowered by torchao's x86 passes to oneDNN int8 convs. The ratios take the
best int8 backend for the EoQ and the member (each backend's own ratios are in ``details``).
The last line printed is one JSON object with the ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from machine import describe_machine, machine_line  # bench/machine.py, beside this script

CACHE = Path(os.environ.get("QTDOG_BENCH_CACHE", Path.home() / ".cache" / "qtdog" / "bench"))
MEMBERS = 5
ONNX_MODELS = ("fp32", "int8", "fp32_x5", "int8_x5")
ONNX_CONFIGS = {f"onnx_{model}": model for model in ONNX_MODELS}  # timed config -> its model


def _model(backbone: str):
    """A float ``backbone`` in eval mode (weights do not change the cost; other backbones than
    the default are built without downloading any)."""
    from qtdog_train.models.backbones import DEFAULT_BACKBONE, create_backbone

    pretrained = "auto" if backbone == DEFAULT_BACKBONE else "none"
    return create_backbone(backbone, num_classes=7, pretrained=pretrained).eval()


def code_digest(roots: list[Path], extra: str = "") -> str:
    """A short hash of every .py file under ``roots`` (paths and contents) and ``extra``."""
    digest = hashlib.sha256(extra.encode())
    for root in roots:
        for file in sorted(root.rglob("*.py")):
            digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:10]


def model_folder(backbone: str, size: int) -> Path:
    """Where the cached models for ``backbone`` at ``size`` live. The folder name carries a hash
    of the code that builds them (backbones, quantization, conversion) and of the exporting
    libraries' versions, so a change there rebuilds them instead of timing graphs an older
    qtdog converted."""
    from importlib.metadata import version

    import qtdog_train.convert
    import qtdog_train.models
    import qtdog_train.quant

    packages = (qtdog_train.convert, qtdog_train.models, qtdog_train.quant)
    roots = [Path(package.__file__).parent for package in packages]
    versions = " ".join(f"{name}=={version(name)}" for name in ("torch", "torchao", "onnx"))
    return CACHE / f"{backbone}-{size}-{code_digest(roots, versions)}"


def _build(backbone: str, size: int) -> dict[str, Path]:
    """fp32 ONNX, int8 member ONNX, and 5-member merged graphs for input ``size`` (cached)."""
    folder = model_folder(backbone, size)
    paths = {k: folder / f"{k}.onnx" for k in ONNX_MODELS}
    if all(p.is_file() for p in paths.values()):
        return paths
    import torch

    from qtdog_train.convert.onnx_export import export_onnx, merge_members

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    export_onnx(_model(backbone), torch.randn(2, 3, size, size), paths["fp32"])
    _convert_member(backbone, size, paths["int8"])
    merge_members([paths["fp32"]] * MEMBERS, paths["fp32_x5"])
    merge_members([paths["int8"]] * MEMBERS, paths["int8_x5"])
    return paths


def _session(path: Path, threads: int, optimize: bool = True, parallel: bool = False):
    """An onnxruntime CPU session. ``optimize=False`` turns every graph optimization off, so
    each Q/DQ node runs as the ONNX spec defines it (a float op between a dequantize and a
    quantize): the reference that fused int8 kernels are judged against. ``parallel`` runs
    independent branches (a merged ensemble's members) on ``threads`` inter-op threads of one
    intra-op thread each, instead of spreading every op over ``threads``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if parallel:
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        options.inter_op_num_threads = threads
        options.intra_op_num_threads = 1
    else:
        options.intra_op_num_threads = threads
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_runner(path: Path, threads: int):
    """A callable from an input batch to the model's first output, on an optimized session."""
    session = _session(path, threads)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _window(run, x: np.ndarray, seconds: float) -> tuple[float, list[float]]:
    """Images/s over one timed window of at least ``seconds`` (one call at least), and each
    call's latency in seconds."""
    latencies = []
    n, start = 0, time.perf_counter()
    while True:
        t = time.perf_counter()
        run(x)
        latencies.append(time.perf_counter() - t)
        n += len(x)
        if time.perf_counter() - start >= seconds:
            break
    return n / (time.perf_counter() - start), latencies


def _rate(run, x: np.ndarray, repeats: int, seconds: float) -> tuple[float, float]:
    """(median images/s, median latency ms per batch) over ``repeats`` timed windows."""
    for _ in range(2):
        run(x)
    rates, latencies = [], []
    for _ in range(repeats):
        rate, window_latencies = _window(run, x, seconds)
        rates.append(rate)
        latencies += window_latencies
    return statistics.median(rates), 1000 * statistics.median(latencies)


def _convert_member(backbone: str, size: int, onnx_path: Path):
    """A 7-bit LSQ model converted by the real pipeline (learned integers, calibrated uint8)."""
    import torch

    from qtdog_train.convert.member import convert_member
    from qtdog_train.quant.lsq import attach_lsq

    torch.manual_seed(1)
    model = _model(backbone)
    attach_lsq(model, bits=7, s_init="mse")
    calibration = [torch.randn(32, 3, size, size).clamp(-1, 1) for _ in range(2)]
    return convert_member(model.eval(), 7, calibration, onnx_path)


def _torch_int8_runners(backbone: str, size: int) -> dict:
    """The member's pt2e int8 graph compiled by inductor with torchao's x86 int8 lowering
    (every conv becomes a oneDNN int8 conv): one member, and 5 run one after the other
    (an EoQ's compute: member weights do not change the cost)."""
    import tempfile

    import torch
    import torch._inductor.config as inductor_config

    # importing the x86 inductor quantizer registers the int8 lowering passes
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # noqa: F401

    inductor_config.freezing = True
    with tempfile.TemporaryDirectory() as tmp:
        compiled = torch.compile(_convert_member(backbone, size, Path(tmp) / "m.onnx").int8_graph)

    def runner(copies: int):
        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                inputs = torch.from_numpy(x)
                return torch.stack([compiled(inputs) for _ in range(copies)]).mean(0).numpy()

        return run

    return {"torch_compiled_int8": runner(1), "torch_compiled_int8_x5": runner(MEMBERS)}


def _torch_runner(backbone: str, compiled: bool):
    import torch

    model = _model(backbone).to(memory_format=torch.channels_last)
    if compiled:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        model = torch.compile(model)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x).contiguous(memory_format=torch.channels_last)).numpy()

    return run


def report(result: dict, out: Path | None) -> None:
    """Write ``result`` to ``out`` (when given) and print it, less its rows, as the last line."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="224 px, batch 32, short windows, no torch.compile"
    )
    parser.add_argument("--backbone", default=None, help="a timm name (default: the SDK's Lite0)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 112])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one timed window")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--torch-compile", action="store_true", help="also time torch.compile (slow to build)"
    )
    parser.add_argument("--out", type=Path, help="write the JSON result here too")
    args = parser.parse_args()
    if args.backbone is None:
        from qtdog_train.models.backbones import DEFAULT_BACKBONE

        args.backbone = DEFAULT_BACKBONE
    if args.quick:
        args.sizes, args.batches, args.repeats, args.seconds, args.torch_compile = (
            [224],
            [32],
            3,
            0.6,
            False,
        )

    rows = []
    summary: dict[str, float] = {}
    for size in args.sizes:
        paths = _build(args.backbone, size)
        runners = {}
        for config, model in ONNX_CONFIGS.items():
            runners[config] = _onnx_runner(paths[model], args.threads)
        runners["torch_eager_fp32"] = _torch_runner(args.backbone, compiled=False)
        if args.torch_compile:
            runners["torch_compiled_fp32"] = _torch_runner(args.backbone, compiled=True)
            runners.update(_torch_int8_runners(args.backbone, size))
        sizes_mb = {name: paths[name].stat().st_size / 1e6 for name in paths}
        for batch in args.batches:
            x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
            measured = {}
            for name, run in runners.items():
                rate, latency = _rate(run, x, args.repeats, args.seconds)
                measured[name] = rate
                rows.append(
                    {
                        "size": size,
                        "batch": batch,
                        "config": name,
                        "images_per_s": rate,
                        "latency_ms": latency,
                    }
                )
                print(
                    f"{size:4d} px  batch {batch:3d}  {name:22s} {rate:8.1f} img/s  {latency:8.2f} ms",
                    flush=True,
                )
            best_fp32 = max(
                v
                for k, v in measured.items()
                if k in ("onnx_fp32", "torch_eager_fp32", "torch_compiled_fp32")
            )
            best_eoq = max(v for k, v in measured.items() if k.endswith("int8_x5"))
            best_member = max(v for k, v in measured.items() if k.endswith("int8"))
            key = f"{size}px_b{batch}"
            summary[f"eoq_int8_vs_fp32_throughput_ratio_{key}"] = best_eoq / best_fp32
            summary[f"eoq_int8_vs_fp32_ensemble_throughput_ratio_{key}"] = (
                best_eoq / measured["onnx_fp32_x5"]
            )
            summary[f"member_int8_vs_fp32_throughput_ratio_{key}"] = (
                best_member / measured["onnx_fp32"]
            )
            for backend in ("onnx", "torch_compiled"):  # each int8 backend on its own
                if f"{backend}_int8" in measured:
                    summary[f"{backend}_eoq_int8_vs_fp32_throughput_ratio_{key}"] = (
                        measured[f"{backend}_int8_x5"] / best_fp32
                    )
                    summary[f"{backend}_member_int8_vs_onnx_fp32_throughput_ratio_{key}"] = (
                        measured[f"{backend}_int8"] / measured["onnx_fp32"]
                    )
        summary[f"eoq_size_vs_fp32_size_ratio_{size}px"] = sizes_mb["int8_x5"] / sizes_mb["fp32"]
    headline_size = 224 if 224 in args.sizes else args.sizes[0]
    headline_batch = 32 if 32 in args.batches else args.batches[-1]
    key = f"{headline_size}px_b{headline_batch}"
    result = {
        "eoq_int8_vs_fp32_throughput_ratio": summary[f"eoq_int8_vs_fp32_throughput_ratio_{key}"],
        "eoq_int8_vs_fp32_ensemble_throughput_ratio": summary[
            f"eoq_int8_vs_fp32_ensemble_throughput_ratio_{key}"
        ],
        "member_int8_vs_fp32_throughput_ratio": summary[
            f"member_int8_vs_fp32_throughput_ratio_{key}"
        ],
        "eoq_size_vs_fp32_size_ratio": summary[f"eoq_size_vs_fp32_size_ratio_{headline_size}px"],
        "headline": key,
        "backbone": args.backbone,
        "machine": machine_line(describe_machine()),
        "threads": args.threads,
        "details": summary,
        "rows": rows,
    }
    report(result, args.out)


if __name__ == "__main__":
    main()
