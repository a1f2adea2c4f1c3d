"""bench/int8_levers.py's graph edit, on the embedded default model's real int8 ensemble graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import load_bench_module

from qtdog_train.convert.onnx_export import int8_conv_coverage

ENSEMBLE = Path(__file__).resolve().parents[1] / "qtdog_sdk" / "assets" / "default_model"


def _reference_logits(levers, path: Path, x: np.ndarray) -> np.ndarray:
    """The graph as the ONNX spec defines it (no fusions): float convs between Q and DQ."""
    session = levers.speed._session(path, threads=1, optimize=False)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_float_depthwise_takes_only_the_depthwise_convs_out_of_int8(tmp_path: Path) -> None:
    levers = load_bench_module("int8_levers.py")
    src, dst = ENSEMBLE / "ensemble.onnx", tmp_path / "depthwise_float.onnx"
    changed = levers.float_depthwise(src, dst)
    int8_before, convs = int8_conv_coverage(src)
    int8_after, convs_after = int8_conv_coverage(dst)
    assert int8_before == convs == convs_after  # every conv int8 before, none lost
    members = 2
    assert changed == 16 * members  # Lite0 has 16 depthwise convs per member
    assert int8_after == convs - changed  # exactly those run in float now
    # the float weights are the dequantized integers: the spec's semantics do not change
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 112, 112)).astype(np.float32)
    np.testing.assert_allclose(
        _reference_logits(levers, dst, x), _reference_logits(levers, src, x), atol=1e-4
    )


def test_uint8_weights_keeps_every_conv_int8_and_every_output(tmp_path: Path) -> None:
    levers = load_bench_module("int8_levers.py")
    src, dst = ENSEMBLE / "ensemble.onnx", tmp_path / "uint8_weights.onnx"
    assert levers.uint8_weights(src, dst) == 49 * 2
    int8, convs = int8_conv_coverage(dst)
    assert int8 == convs == 49 * 2  # still fused into QLinearConv, now with uint8 weights
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 112, 112)).astype(np.float32)
    np.testing.assert_array_equal(
        _reference_logits(levers, dst, x), _reference_logits(levers, src, x)
    )
    fused = [levers.speed._session(path, threads=1) for path in (src, dst)]
    logits = [s.run(None, {s.get_inputs()[0].name: x})[0] for s in fused]
    np.testing.assert_allclose(logits[1], logits[0], atol=1e-5)  # same integers, same kernels' math
