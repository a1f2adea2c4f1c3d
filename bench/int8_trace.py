"""Where do the torch int8 model and onnxruntime part ways? Every uint8 tensor, side by side.

The torch int8 model (``integer_exact``) is meant to compute exactly the integers
onnxruntime computes, so a top-1 disagreement between the two is a bug in one of
them. This script re-converts one member of a run, finds the held-out images on
which the two disagree (or takes the first ones when none do), and compares the
output of every quantized conv and residual add of the two runtimes, in graph
order. The first tensor that differs while its inputs agree is the departing op.

onnxruntime's side is read from the graph it optimizes at the "extended" level
(the QDQ groups fused into QLinearConv / QLinearAdd, still NCHW), with every
fused op's output added as a graph output; the script checks that this graph's
logits equal those of the fully optimized session that users run.

    python bench/int8_trace.py runs/sweep-cpu/gpu112/eoq5/photo/trial0 --member 4 \\
        --out bench/results/int8_trace_photo_member4.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx

from qtdog_train.evaluation import predictions
from qtdog_train.pipeline import load_run_data, member_calibration, onnx_predictor
from qtdog_train.trainer import load_selected_model

#: onnxruntime ops whose outputs are the uint8 tensors the torch model computes as modules.
FUSED_OPS = ("QLinearConv", "QLinearAdd")


def _session(model: str | bytes, level: Any) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = level
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def torch_uint8_tensors(model: fx.GraphModule, x: torch.Tensor) -> list[tuple[str, np.ndarray]]:
    """Outputs of the integer modules (``IntegerConv``, ``IntegerAdd``) in graph order."""
    found: list[tuple[str, np.ndarray]] = []

    class Recorder(fx.Interpreter):
        def run_node(self, node: fx.Node) -> Any:
            result = super().run_node(node)
            is_tensor = isinstance(result, torch.Tensor)
            if node.op == "call_module" and is_tensor and result.dtype == torch.uint8:
                found.append((node.name, result.numpy()))
            return result

    with torch.no_grad():
        Recorder(model).run(x)
    return found


def onnx_uint8_tensors(
    onnx_path: Path, x: np.ndarray
) -> tuple[list[tuple[str, np.ndarray]], float]:
    """Outputs of onnxruntime's fused int8 ops in graph order, and the largest logit
    difference between the traced graph and the fully optimized session."""
    import onnx
    import onnxruntime as ort

    from qtdog_train.convert.onnx_export import optimized_graph

    level = ort.GraphOptimizationLevel
    users_session = _session(str(onnx_path), level.ORT_ENABLE_ALL)
    name = users_session.get_inputs()[0].name
    full = users_session.run(None, {name: x})[0]
    graph = optimized_graph(onnx_path)
    fused = [n for n in graph.graph.node if n.op_type in FUSED_OPS]
    outputs = {o.name for o in graph.graph.output}
    for node in fused:
        if node.output[0] not in outputs:
            info = onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.UINT8, None)
            graph.graph.output.append(info)
    session = _session(graph.SerializeToString(), level.ORT_DISABLE_ALL)
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(None, {name: x}), strict=True))
    logit_gap = float(np.abs(values[names[0]] - full).max())
    return [(n.name, values[n.output[0]]) for n in fused], logit_gap


def compare(
    torch_side: list[tuple[str, np.ndarray]], onnx_side: list[tuple[str, np.ndarray]]
) -> list[dict[str, Any]]:
    """One row per (torch, onnxruntime) tensor pair, in order: how many uint8 values differ."""
    if len(torch_side) != len(onnx_side):
        raise SystemExit(
            f"torch has {len(torch_side)} int8 ops, onnxruntime {len(onnx_side)}: cannot pair them"
        )
    rows = []
    for (t_name, t), (o_name, o) in zip(torch_side, onnx_side, strict=True):
        if t.shape != o.shape:
            raise SystemExit(f"{t_name} {t.shape} vs {o_name} {o.shape}: graphs do not line up")
        diff = np.abs(t.astype(np.int32) - o.astype(np.int32))
        rows.append(
            {
                "torch": t_name,
                "onnx": o_name,
                "shape": list(t.shape),
                "differ": int((diff > 0).sum()),
                "differ_fraction": float((diff > 0).mean()),
                "max_levels": int(diff.max()),
            }
        )
    return rows


def first_departure(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((r for r in rows if r["differ"]), None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path)
    parser.add_argument("--member", type=int, default=0)
    parser.add_argument("--domain", help="held-out domain to search (default: the run's first)")
    parser.add_argument("--images", type=int, default=16, help="at most this many images traced")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from qtdog_train.convert.member import convert_member  # torchao: only when converting

    cfg, model = load_selected_model(args.run, args.member)
    data = load_run_data(cfg, torch.device("cpu"))
    domain = args.domain or data.test_domains[0]
    calibration = member_calibration(cfg, data, args.member)
    part = data.test[domain]
    with tempfile.TemporaryDirectory() as tmp:
        converted = convert_member(
            model, cfg.bits, calibration, Path(tmp) / "member.onnx", cfg.activation_observer
        )
        torch_top1 = predictions(converted.int8_model, data, part)
        onnx_top1 = predictions(onnx_predictor(converted.onnx_path), data, part)
        disagree = (torch_top1 != onnx_top1).nonzero().flatten()
        x = torch.cat([batch for batch, _ in data.iter_eval(part, 256)])
        chosen = (
            disagree[: args.images] if len(disagree) else torch.arange(min(args.images, len(x)))
        )
        traced = x[chosen]
        onnx_side, logit_gap = onnx_uint8_tensors(converted.onnx_path, traced.numpy())
    rows = compare(torch_uint8_tensors(converted.int8_model, traced), onnx_side)
    departure = first_departure(rows)
    result = {
        "run": str(args.run),
        "member": args.member,
        "domain": domain,
        "images": len(x),
        "disagreeing_images": disagree.tolist(),
        "traced_images": chosen.tolist(),
        "traced_graph_vs_full_session_max_logit_gap": logit_gap,
        "first_departure": departure,
        "tensors": rows,
    }
    print(
        f"{domain}: torch int8 and onnxruntime disagree on {len(disagree)} of {len(x)} images; "
        f"{len(rows)} int8 tensors compared on {len(chosen)} images; first departure: "
        + (
            f"{departure['torch']} / {departure['onnx']} ({departure['differ']} values, "
            f"up to {departure['max_levels']} levels)"
            if departure
            else "none"
        )
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
