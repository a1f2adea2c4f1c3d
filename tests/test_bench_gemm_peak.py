"""bench/gemm_peak.py: real onnxruntime sessions of both products, checked against numpy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from conftest import BENCH, cpu_session, load_bench_module


def test_both_products_compute_what_numpy_computes():
    gemm = load_bench_module("gemm_peak.py")
    rng = np.random.default_rng(3)
    for int8 in (False, True):
        model = gemm.gemm_model(8, 5, 16, int8, seed=2)
        weight = np.random.default_rng(2)
        w = weight.integers(-64, 64, (16, 5)) if int8 else weight.standard_normal((16, 5))
        a = rng.integers(0, 256, (8, 16)) if int8 else rng.standard_normal((8, 16))
        a = a.astype(np.uint8 if int8 else np.float32)
        session = cpu_session(model)
        y = session.run(None, {"a": a})[0]
        expected = a.astype(np.int64) @ w if int8 else a @ w.astype(np.float32)
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4)
        assert y.dtype == (np.int32 if int8 else np.float32)


def test_command_reports_the_ratio_of_its_first_shape(tmp_path: Path):
    out = tmp_path / "gemm.json"
    cmd = [sys.executable, str(BENCH / "gemm_peak.py"), "--shape", "64", "32", "48"]
    cmd += ["--shape", "16", "8", "8", "--repeats", "2", "--threads", "1", "--out", str(out)]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    result = json.loads(out.read_text())
    first = result["rows"][0]
    assert (first["m"], first["n"], first["k"]) == (64, 32, 48) and len(result["rows"]) == 2
    assert first["fp32_gmacs"] > 0 and first["int8_gmacs"] > 0
    assert result["int8_vs_fp32_gemm_ratio"] == first["int8_gmacs"] / first["fp32_gmacs"]
    assert result["threads"] == 1 and result["onnxruntime"] == ort.__version__
