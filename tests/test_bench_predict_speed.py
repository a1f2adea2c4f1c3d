"""bench/predict_speed.py times a real model repository, at its own input size or another."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _predict_speed(*args: str) -> tuple[dict, str]:
    done = subprocess.run(
        [sys.executable, str(BENCH / "predict_speed.py"), *args, "--batches", "1,2", "--repeats", "1"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_both_backends_at_the_models_own_size(tiny_repo: Path) -> None:
    result, _ = _predict_speed(str(tiny_repo))
    assert result["input"] == result["model_input"] == [32, 32]
    assert result["members"] == 2
    for backend in ("onnx", "torch"):
        row = result["backends"][backend]
        assert row["b1_img_s"] > 0 and row["b2_img_s"] > 0 and row["load_s"] > 0
    assert result["cold_start_s"] > 0  # a real `qtdog predict` subprocess on one image


def test_another_input_size_times_torch_and_skips_the_fixed_onnx_graph(tiny_repo: Path) -> None:
    result, stderr = _predict_speed(str(tiny_repo), "--image-size", "48")
    assert result["input"] == [48, 48] and result["model_input"] == [32, 32]
    assert list(result["backends"]) == ["torch"]
    assert result["backends"]["torch"]["b2_img_s"] > 0
    assert "onnx: skipped (its graph's input is fixed at 32x32)" in stderr
