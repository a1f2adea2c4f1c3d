"""bench/openvino_speed.py's graph walk, on the embedded default model's real int8 graph.

OpenVINO itself is not a qtdog dependency; the walk that decides which quantized tensors a
layer reads (and so what the divergence search re-runs alone) is checked here without it.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from conftest import load_bench_module

ENSEMBLE = Path(__file__).resolve().parents[1] / "qtdog_sdk" / "assets" / "default_model"


@pytest.fixture(scope="module")
def walk():
    return load_bench_module("openvino_speed.py")


@pytest.fixture(scope="module")
def graph():
    return onnx.load(str(ENSEMBLE / "ensemble.onnx")).graph


def _producer_op(graph, tensor: str) -> str:
    """The op a quantized tensor quantizes the output of ("input" for the pixels)."""
    quantize = next(n for n in graph.node if tensor in n.output)
    return next((n.op_type for n in graph.node if quantize.input[0] in n.output), "input")


def test_quantized_tensors_are_the_activation_quantizations_in_order(walk, graph):
    tensors = walk._quantized_tensors(graph)
    weights = {t.name for t in graph.initializer}
    quantizers = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    assert len(tensors) == sum(n.input[0] not in weights for n in quantizers)
    # each member starts by quantizing the float pixels
    assert tensors[0] == "m0_quantize_per_tensor"
    order = [out for n in graph.node for out in n.output]
    assert [order.index(t) for t in tensors] == sorted(order.index(t) for t in tensors)


def test_segment_inputs_stop_at_the_previous_quantized_tensors(walk, graph):
    tensors = walk._quantized_tensors(graph)
    # the pixels' own quantization reads no quantized tensor
    assert walk._segment_inputs(graph, tensors[0]) == []
    adds = [t for t in tensors if _producer_op(graph, t) == "Add"]
    convs = [t for t in tensors if _producer_op(graph, t) in ("Conv", "Clip")]
    assert adds and convs
    # a residual add reads two quantized tensors, both earlier in the walk
    for tensor in adds:
        inputs = walk._segment_inputs(graph, tensor)
        assert len(inputs) == 2
        assert all(tensors.index(i) < tensors.index(tensor) for i in inputs)
    # a conv (with or without its activation clip) reads exactly one
    for tensor in convs:
        (only,) = walk._segment_inputs(graph, tensor)
        assert tensors.index(only) < tensors.index(tensor)
