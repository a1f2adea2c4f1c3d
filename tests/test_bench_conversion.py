"""The conversion studies of bench/ run on a real (tiny) trained run and report what they claim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench(script: str, *args: str) -> None:
    subprocess.run([sys.executable, str(BENCH / script), *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def run_dir(tiny_run: dict) -> Path:
    return Path(tiny_run["config"]["out"])


def test_calibration_loso_holds_out_sources_only(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "loso.json"
    bench(
        "calibration_loso.py", str(run_dir), "--members", "0", "--recipes", "plain",
        "--observers", "minmax", "--images", "16", "--out", str(out),
    )  # fmt: skip
    result = json.loads(out.read_text())
    rows = result["rows"]
    # every source domain is held out once; the run's real test domain never is
    assert sorted(r["pseudo_unseen"] for r in rows) == ["cartoon", "photo"]
    for row in rows:
        assert row["images"] == 36  # all of that domain: 3 classes x 12 images
        assert row["observer"] == "minmax"
        assert row["cost_points"] == pytest.approx(100 * (row["weights_only"] - row["onnx_int8"]))
    summary = result["summary"]["plain/minmax"]
    costs = [r["cost_points"] for r in rows]
    assert summary["mean_cost_points"] == pytest.approx(sum(costs) / 2)
    assert summary["max"] == pytest.approx(max(costs))


def test_conversion_cost_compares_the_three_forms(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    bench("conversion_cost.py", str(run_dir), "--out", str(out))
    rows = json.loads(out.read_text())
    assert [r["member"] for r in rows] == [0, 1]
    for row in rows:
        for form in ("fake_quant", "torch_int8", "onnx_int8"):
            assert set(row[form]["val"]) == {"cartoon", "photo"}
            assert set(row[form]["test"]) == {"sketch"}
        assert row["agreement_torch_int8_vs_onnx"] >= 0.99
        convs, total = row["int8_convs"]["onnx"]
        assert convs == total > 0


def test_int8_trace_lines_up_every_int8_op_of_a_trained_member(
    run_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "trace.json"
    bench("int8_trace.py", str(run_dir), "--member", "1", "--images", "4", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["domain"] == "sketch" and result["images"] == 36
    assert len(result["traced_images"]) == (len(result["disagreeing_images"]) or 4)
    assert result["traced_graph_vs_full_session_max_logit_gap"] < 1e-4
    kinds = [row["onnx"] for row in result["tensors"]]
    assert len(kinds) > 10  # every quantized conv and residual add of the backbone
    assert result["first_departure"] is None
    assert all(row["differ"] == 0 for row in result["tensors"])
