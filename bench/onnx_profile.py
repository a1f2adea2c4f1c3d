"""Where an ONNX model's time goes in onnxruntime: per kind of layer, fp32 beside int8.

Runs each model with onnxruntime's own profiler on the graph it really executes (all
optimizations on, as qtdog ships them), and sums the kernel time of every node by kind:
1x1 convs, depthwise convs by kernel size, other (dense) convs, and every other op type.
Side by side, the per-kind int8 gain shows which layers an int8 kernel speeds up on this
CPU and which it does not.

    python bench/onnx_profile.py                      # bench/speed.py's cached Lite0, 224 px, batch 32
    python bench/onnx_profile.py --size 112 --batch 1
    python bench/onnx_profile.py --models a.onnx b.onnx --out profile.json

The last line printed is one JSON object (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from machine import describe_machine, machine_line  # bench/machine.py, beside this script
from speed import CACHE, _build, report

CONV_OPS = {"Conv", "FusedConv", "QLinearConv", "ConvInteger"}


def conv_kind(weight_shape: tuple[int, ...], group: int) -> str:
    """``1x1``, ``depthwise KxK`` or ``dense KxK`` from a conv's weight shape [M, C/group, kH, kW]."""
    kernel = f"{weight_shape[2]}x{weight_shape[3]}"
    if group > 1 and weight_shape[1] == 1:
        return f"depthwise {kernel}"
    if kernel == "1x1":
        return "1x1 conv"
    return f"dense {kernel} conv"


def node_kinds(model: onnx.ModelProto) -> dict[str, str]:
    """Each node's name -> its kind: a conv kind (``conv_kind``) or the op type. A conv's weight
    is an initializer (the graph onnxruntime runs) or a dequantized one (a QDQ source graph)."""
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            shapes[node.output[0]] = tuple(node.attribute[0].t.dims)
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in shapes:
            shapes[node.output[0]] = shapes[node.input[0]]
    kinds = {}
    for node in model.graph.node:
        kind = node.op_type
        if node.op_type in CONV_OPS:
            weight = node.input[3] if node.op_type == "QLinearConv" else node.input[1]
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if len(shapes.get(weight, ())) == 4:
                kind = conv_kind(shapes[weight], group)
        kinds[node.name] = kind
    return kinds


def profile(path: Path, x: np.ndarray, threads: int, runs: int) -> dict[str, float]:
    """Median milliseconds per call spent in each kind of node, over ``runs`` profiled calls
    (two more calls before them warm up and are left out)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        options.optimized_model_filepath = str(optimized)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(2 + runs):
            session.run(None, {name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
        kinds = node_kinds(onnx.load(str(optimized), load_external_data=False))

    # each node event belongs to the model_run (one call) whose time span holds it
    runs_spans = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    per_call: list[dict[str, float]] = [defaultdict(float) for _ in runs_spans]
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        call = next(
            (i for i, (start, end) in enumerate(runs_spans) if start <= event["ts"] <= end), None
        )
        if call is not None:
            node = event["name"][: -len("_kernel_time")]
            kind = kinds.get(node, event["args"].get("op_name", node))
            per_call[call][kind] += event["dur"] / 1e3
    calls = per_call[2:]  # the first two calls warm up
    every_kind = sorted({kind for call in calls for kind in call})
    return {kind: statistics.median(call.get(kind, 0.0) for call in calls) for kind in every_kind}


def compare(profiles: dict[str, dict[str, float]]) -> list[dict]:
    """One row per kind: each model's ms and share of its total, and the first model's ms over
    each other model's (the speedup of that kind)."""
    names = list(profiles)
    totals = {name: sum(profiles[name].values()) for name in names}
    kinds = sorted(
        {kind for p in profiles.values() for kind in p},
        key=lambda kind: -max(p.get(kind, 0.0) for p in profiles.values()),
    )
    rows = []
    for kind in kinds:
        row: dict = {"kind": kind}
        for name in names:
            ms = profiles[name].get(kind, 0.0)
            row[f"{name}_ms"] = ms
            row[f"{name}_share"] = ms / totals[name] if totals[name] else 0.0
        base = profiles[names[0]].get(kind, 0.0)
        for name in names[1:]:
            ms = profiles[name].get(kind, 0.0)
            row[f"{names[0]}_over_{name}"] = base / ms if ms and base else None
        rows.append(row)
    total_row: dict = {"kind": "total"}
    for name in names:
        total_row[f"{name}_ms"], total_row[f"{name}_share"] = totals[name], 1.0
    for name in names[1:]:
        total_row[f"{names[0]}_over_{name}"] = totals[names[0]] / totals[name]
    return [*rows, total_row]


def markdown(rows: list[dict], names: list[str]) -> str:
    header = "| kind | " + " | ".join(f"{n} ms (share)" for n in names)
    header += "".join(f" | {names[0]} / {n}" for n in names[1:]) + " |"
    lines = [header, "|" + "---|" * (1 + len(names) + len(names) - 1)]
    for row in rows:
        cells = [row["kind"]]
        cells += [f"{row[f'{n}_ms']:.1f} ({100 * row[f'{n}_share']:.0f}%)" for n in names]
        for n in names[1:]:
            ratio = row[f"{names[0]}_over_{n}"]
            cells.append(f"{ratio:.2f}x" if ratio else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=Path, nargs="+", help="ONNX files (default: fp32, int8)")
    parser.add_argument("--backbone", default=None, help="with no --models: a timm name")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=10, help="profiled calls per model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.models:
        models = {path.stem: path for path in args.models}
    else:
        if args.backbone is None:
            from qtdog_train.models.backbones import DEFAULT_BACKBONE

            args.backbone = DEFAULT_BACKBONE
        paths = _build(args.backbone, args.size)
        models = {"fp32": paths["fp32"], "int8": paths["int8"]}
    x = np.random.default_rng(0).standard_normal((args.batch, 3, args.size, args.size))
    x = x.astype(np.float32)
    profiles = {name: profile(path, x, args.threads, args.runs) for name, path in models.items()}
    rows = compare(profiles)
    print(markdown(rows, list(models)))
    result = {
        "models": {name: str(path) for name, path in models.items()},
        "size": args.size,
        "batch": args.batch,
        "runs": args.runs,
        "threads": args.threads,
        "machine": machine_line(describe_machine()),
        "cache": str(CACHE),
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    report(result, args.out)


if __name__ == "__main__":
    main()
