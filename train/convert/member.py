"""Convert one trained member: integer weights -> folded float graph -> int8 graph -> ONNX."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import fx, nn

from qtdog_train.config import DEFAULT_ACTIVATION_OBSERVER
from qtdog_train.convert.fold import (
    check_same_outputs,
    dequantized_copy,
    fold_batchnorm,
    integer_state_dict,
)
from qtdog_train.convert.integer_exact import integer_exact
from qtdog_train.convert.onnx_export import export_onnx, int8_conv_coverage
from qtdog_train.convert.pt2e import convert_to_int8, count_quantized_convs
from qtdog_train.quant.lsq import is_fully_quantized


@dataclass
class ConvertedMember:
    """What conversion produced for one member."""

    state: dict[str, torch.Tensor]
    weight_quantized: nn.Module
    int8_graph: fx.GraphModule  # pt2e's Q/DQ graph: what ONNX is exported from
    int8_model: fx.GraphModule  # the same graph with its convs computed like integer kernels
    onnx_path: Path
    torch_int8_convs: tuple[int, int]
    onnx_int8_convs: tuple[int, int]


@torch.no_grad()
def convert_member(
    model: nn.Module,
    bits: int,
    calibration: list[torch.Tensor],
    onnx_path: Path,
    observer: str = DEFAULT_ACTIVATION_OBSERVER,
) -> ConvertedMember:
    """Full conversion of a trained (fake-quantized or float) model.

    ``calibration`` holds normalized source-domain batches for the activation
    ranges; ``observer`` chooses them from those (see ``pt2e.ACTIVATION_OBSERVERS``).
    The folded float graph is checked against the trained model before anything is
    quantized. ``weight_quantized`` is the model with its
    integer weights and float activations: the fake-quant model of QT-DoG, or
    a float model's post-training weight quantization.
    """
    model = model.cpu().eval()
    plain, convs = dequantized_copy(model, bits)
    # Training's channels-last layout is not the deploy graph's (see export_onnx).
    plain.to(memory_format=torch.contiguous_format)
    state = integer_state_dict(plain, convs)
    # A float model (ERM), or the float convs of a partly quantized one, get post-training
    # integers: outputs move, so only a fully LSQ-quantized model must keep them exactly.
    if is_fully_quantized(model):
        check_same_outputs(model, plain, calibration[0][:4], "taking the integer weights")
    weight_quantized = copy.deepcopy(plain)
    fold_batchnorm(plain, convs)
    check_same_outputs(weight_quantized, plain, calibration[0][:4], "BatchNorm folding")
    graph = convert_to_int8(plain, list(convs.values()), calibration, observer)
    export_onnx(graph, calibration[0][:2], onnx_path)
    int8_model = integer_exact(graph)
    return ConvertedMember(
        state=state,
        weight_quantized=weight_quantized,
        int8_graph=graph,
        int8_model=int8_model,
        onnx_path=onnx_path,
        torch_int8_convs=(int8_model.integer_convs, count_quantized_convs(graph)[1]),
        onnx_int8_convs=int8_conv_coverage(onnx_path),
    )
