"""bench/onnx_profile.py on the embedded default model's real int8 ensemble graph: onnxruntime's
own profiler, every conv of the graph it runs sorted by shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
from conftest import BENCH, load_bench_module

ENSEMBLE = Path(__file__).resolve().parents[1] / "qtdog_sdk" / "assets" / "default_model"


def test_conv_kinds_follow_the_weight_shape():
    profile = load_bench_module("onnx_profile.py")
    assert profile.conv_kind((192, 32, 1, 1), 1) == "1x1 conv"
    assert profile.conv_kind((144, 1, 5, 5), 144) == "depthwise 5x5"
    assert profile.conv_kind((32, 3, 3, 3), 1) == "dense 3x3 conv"
    assert profile.conv_kind((64, 8, 3, 3), 8) == "dense 3x3 conv"  # grouped, not depthwise


def test_every_conv_onnxruntime_runs_is_timed_under_its_kind(tmp_path: Path):
    out = tmp_path / "profile.json"
    cmd = [
        sys.executable,
        str(BENCH / "onnx_profile.py"),
        "--models",
        str(ENSEMBLE / "ensemble.onnx"),
    ]
    cmd += ["--size", "112", "--batch", "2", "--runs", "2", "--out", str(out)]
    subprocess.run(cmd, check=True, timeout=300, capture_output=True)
    result = json.loads(out.read_text())
    rows = {row["kind"]: row for row in result["rows"]}
    # Lite0: 1x1 expansions/projections, 3x3 and 5x5 depthwise, the dense 3x3 stem; all int8,
    # so no conv is left under an op-type name
    assert {"1x1 conv", "depthwise 3x3", "depthwise 5x5", "dense 3x3 conv"} <= set(rows)
    assert not {"QLinearConv", "Conv", "FusedConv"} & set(rows)
    total = rows.pop("total")["ensemble_ms"]
    assert total > 0
    assert abs(sum(row["ensemble_ms"] for row in rows.values()) - total) < 1e-6 * max(total, 1)
    assert rows["1x1 conv"]["ensemble_ms"] > 0 and rows["depthwise 3x3"]["ensemble_ms"] > 0
    assert result["machine"].endswith("cores")


def test_node_kinds_cover_the_source_graph_convs():
    profile = load_bench_module("onnx_profile.py")
    model = onnx.load(str(ENSEMBLE / "ensemble.onnx"))
    kinds = profile.node_kinds(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    counted = [kinds[n.name] for n in convs]
    assert len(convs) == 2 * 49  # two members
    assert counted.count("dense 3x3 conv") == 2  # one stem each
    assert all(kind != "Conv" for kind in counted)
