"""Real int8 conversion with torchao pt2e, keeping the weights learned in training.

A small quantizer of our own annotates the exported graph for int8 kernels
(onnxruntime QLinearConv, x86 inductor): every conv gets uint8 per-tensor
activations in and out (after its ReLU6 when it has one) and int8
per-channel weights whose scales are *fixed* to the learned ones, so
``round(w / scale)`` gives back exactly the integers of training; residual
adds and TF-"same" pads are annotated too, so that no conv is left in
float. Activation ranges come from calibration (HistogramObserver by default) on
source-domain training images. Conv biases are quantized to int32 with scale
input scale x weight scale, as onnxruntime's QLinearConv adds them, so the
torch graph and the ONNX file round them identically (a float bias in the
torch graph against onnxruntime's own rounding cost ~1% top-1 agreement).
The global pool and the classifier stay float, as in the paper.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

import torch
from torch import fx, nn
from torchao.quantization.pt2e import (
    HistogramObserver,
    MinMaxObserver,
    ObserverBase,
    move_exported_model_to_eval,
)
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from torchao.quantization.pt2e.quantizer import (
    DerivedQuantizationSpec,
    QuantizationAnnotation,
    QuantizationSpec,
    Quantizer,
    SharedQuantizationSpec,
)

from qtdog_sdk.errors import QTDoGError
from qtdog_train.config import DEFAULT_ACTIVATION_OBSERVER
from qtdog_train.convert.fold import MIN_ACTIVATION_SCALE, QuantizedConv
from qtdog_train.convert.ops import ACTIVATION, ADD, CONV, PAD, RELU, sole_user

#: pt2e graphs may keep residual adds as Python's ``+``.
_ADD = ADD | {operator.add}


class FixedScaleObserver(ObserverBase):
    """Per-channel weight 'observer' that returns scales known in advance."""

    def __init__(
        self,
        scale: torch.Tensor,
        dtype: torch.dtype = torch.int8,
        qscheme: torch.qscheme = torch.per_channel_symmetric,
        quant_min: int = -128,
        quant_max: int = 127,
        ch_axis: int = 0,
        is_dynamic: bool = False,
        **_: object,
    ) -> None:
        super().__init__(dtype=dtype, is_dynamic=is_dynamic)
        self.qscheme = qscheme
        self.quant_min, self.quant_max, self.ch_axis = quant_min, quant_max, ch_axis
        self.register_buffer("scale", scale.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scale, torch.zeros_like(self.scale, dtype=torch.int64)


#: How activation ranges are calibrated: ``minmax`` (the observed range, no clipping; the
#: default) or ``histogram`` (torch's L2-optimal clipping of the calibration histogram).
ACTIVATION_OBSERVERS = {"minmax": MinMaxObserver, "histogram": HistogramObserver}


def activation_spec(observer: str = DEFAULT_ACTIVATION_OBSERVER) -> QuantizationSpec:
    """uint8 per-tensor activations, ranges from ``observer`` over the calibration batches."""
    if observer not in ACTIVATION_OBSERVERS:
        raise QTDoGError(
            f"unknown activation observer {observer!r}; choose from {', '.join(ACTIVATION_OBSERVERS)}"
        )
    return QuantizationSpec(
        dtype=torch.uint8,
        quant_min=0,
        quant_max=255,
        qscheme=torch.per_tensor_affine,
        is_dynamic=False,
        observer_or_fake_quant_ctr=ACTIVATION_OBSERVERS[observer].with_args(
            eps=MIN_ACTIVATION_SCALE
        ),
    )


def _weight_spec(scale: torch.Tensor) -> QuantizationSpec:
    return QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
        is_dynamic=False,
        observer_or_fake_quant_ctr=FixedScaleObserver.with_args(scale=scale),
    )


def _bias_qparams(observers: list[ObserverBase]) -> tuple[torch.Tensor, torch.Tensor]:
    activation, weight = observers
    act_scale, _ = activation.calculate_qparams()
    weight_scale, _ = weight.calculate_qparams()
    scale = (act_scale.float() * weight_scale.float()).reshape(-1)
    return scale, torch.zeros_like(scale, dtype=torch.int64)


def _bias_spec(conv: fx.Node, inp: fx.Node, weight: fx.Node) -> DerivedQuantizationSpec:
    """int32 per-channel bias with scale = input scale x weight scale (exactly what
    integer conv kernels add to their int32 accumulators)."""
    return DerivedQuantizationSpec(
        derived_from=[(inp, conv), (weight, conv)],
        derive_qparams_fn=_bias_qparams,
        dtype=torch.int32,
        quant_min=-(2**31),
        quant_max=2**31 - 1,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
    )


def _attr(module: nn.Module, target: str) -> torch.Tensor:
    for part in target.split("."):
        module = getattr(module, part)
    return module  # type: ignore[return-value]


class LearnedWeightQuantizer(Quantizer):
    """Annotates convs (+ReLU6), adds and pads of an exported graph; see the module doc."""

    def __init__(self, convs: Iterable[QuantizedConv], activation: QuantizationSpec) -> None:
        super().__init__()
        self.activation = activation
        self.weights = [
            (c.folded_levels.float() * c.folded_scale.view(-1, 1, 1, 1), c.folded_scale)
            for c in convs
        ]

    def _scale_for(self, weight: torch.Tensor) -> torch.Tensor:
        for candidate, scale in self.weights:
            if candidate.shape == weight.shape and torch.allclose(
                candidate, weight, rtol=1e-5, atol=1e-7
            ):
                return scale
        raise QTDoGError(
            f"a conv weight of shape {tuple(weight.shape)} matches no learned integer weight"
        )

    def _annotate_with_activation(
        self,
        node: fx.Node,
        qspecs: dict[fx.Node, QuantizationSpec | DerivedQuantizationSpec],
        activations: frozenset,
    ) -> None:
        """Quantize ``node``'s inputs, and its output after the activation that alone follows
        it (one of ``activations``), or right after it when there is none."""
        activation = sole_user(node, activations)
        node.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map=qspecs,
            output_qspec=None if activation is not None else self.activation,
            _annotated=True,
        )
        if activation is not None:
            activation.meta["quantization_annotation"] = QuantizationAnnotation(
                output_qspec=self.activation, _annotated=True
            )

    def annotate(self, model: fx.GraphModule) -> fx.GraphModule:
        for node in model.graph.nodes:
            if node.op != "call_function":
                continue
            if node.target in CONV:
                inp, weight = node.args[0], node.args[1]
                if weight.op != "get_attr":
                    raise QTDoGError(f"conv {node.name}: weight is not a constant of the graph")
                spec = _weight_spec(self._scale_for(_attr(model, weight.target)))
                qspecs: dict[fx.Node, QuantizationSpec | DerivedQuantizationSpec] = {
                    inp: self.activation,
                    weight: spec,
                }
                bias = node.args[2] if len(node.args) > 2 else None
                if isinstance(bias, fx.Node):
                    qspecs[bias] = _bias_spec(node, inp, weight)
                self._annotate_with_activation(node, qspecs, ACTIVATION)
            elif node.target in _ADD and all(isinstance(a, fx.Node) for a in node.args[:2]):
                # A residual add followed by its ReLU (ResNet's blocks) is one quantized op, as
                # conv + ReLU is: quantizing between them left a Q/DQ pair per block that
                # onnxruntime runs in float (a third of ResNet-50's int8 time).
                qspecs = {a: self.activation for a in node.args[:2]}
                self._annotate_with_activation(node, qspecs, RELU)
            elif node.target in PAD:
                inp = node.args[0]
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={inp: self.activation},
                    output_qspec=SharedQuantizationSpec((inp, node)),
                    _annotated=True,
                )
        return model

    def validate(self, model: fx.GraphModule) -> None:
        return None


def export_graph(model: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """torch.export with a dynamic batch dimension, as a GraphModule."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},)).module()


@torch.no_grad()
def convert_to_int8(
    deploy: nn.Module,
    convs: list[QuantizedConv],
    calibration: Iterable[torch.Tensor],
    observer: str = DEFAULT_ACTIVATION_OBSERVER,
) -> fx.GraphModule:
    """Calibrate activations on ``calibration`` batches (ranges by ``observer``, see
    ``ACTIVATION_OBSERVERS``) and return the int8 (Q/DQ) graph."""
    batches = list(calibration)
    if not batches:
        raise QTDoGError("activation calibration needs at least one batch of source-domain images")
    graph = export_graph(deploy, batches[0][:2])
    prepared = prepare_pt2e(graph, LearnedWeightQuantizer(convs, activation_spec(observer)))
    for batch in batches:
        prepared(batch)
    converted = convert_pt2e(prepared)
    return move_exported_model_to_eval(converted)


def count_quantized_convs(graph: fx.GraphModule) -> tuple[int, int]:
    """(convs whose weight is dequantized from int8, all convs) in a converted graph."""
    total = quantized = 0
    for node in graph.graph.nodes:
        if node.op == "call_function" and node.target in CONV:
            total += 1
            weight = node.args[1]
            if isinstance(weight, fx.Node) and "dequantize" in str(weight.target):
                quantized += 1
    return quantized, total
