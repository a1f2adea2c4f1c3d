"""bench/memory.py end to end at a tiny input size: real conversions, real onnxruntime and torch
child processes, the kernel's own memory counters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import BENCH


def test_memory_bench_measures_every_config_in_its_own_process(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    env = {**os.environ, "QTDOG_BENCH_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, str(BENCH / "memory.py"), "--sizes", "32", "--batches", "2"]
    cmd += ["--runs", "1", "--repeats", "2", "--out", str(out)]
    subprocess.run(cmd, env=env, check=True, timeout=600)
    result = json.loads(out.read_text())
    assert result["repeats"] == 2
    rows = {row["config"]: row for row in result["rows"]}
    assert set(rows) == {
        "onnx_fp32",
        "onnx_int8",
        "onnx_fp32_x5",
        "onnx_int8_x5",
        "torch_eager_fp32",
    }
    for config, row in rows.items():
        assert row["size"] == 32 and row["batch"] == 2
        assert row["peak_mb"] >= row["rss_imports_mb"] > 0, config
        assert row["load_peak_mb"] >= row["rss_imports_mb"], config
        # the onnxruntime configs never pull torch into the process they are measured in
        assert row["torch_imported"] == config.startswith("torch"), config
    # int8 weights are a quarter of fp32; the merged 5-member graphs hold five copies
    disk = {config: row["disk_mb"] for config, row in rows.items()}
    assert disk["onnx_int8"] < disk["onnx_fp32"] / 3
    assert 4.9 < disk["onnx_int8_x5"] / disk["onnx_int8"] < 5.1
    assert 4.9 < disk["onnx_fp32_x5"] / disk["onnx_fp32"] < 5.1
    assert abs(disk["torch_eager_fp32"] - disk["onnx_fp32"]) / disk["onnx_fp32"] < 0.1
    # five members' weights and activations cost more than one member's
    assert rows["onnx_int8_x5"]["added_mb"] > rows["onnx_int8"]["added_mb"]
    # the whole CLI on the packaged model: the onnx path stays free of torch and lighter
    predict = result["predict_command"]
    assert predict["onnx"]["torch_imported"] is False
    assert predict["torch"]["torch_imported"] is True
    assert predict["onnx"]["peak_mb"] < predict["torch"]["peak_mb"]
