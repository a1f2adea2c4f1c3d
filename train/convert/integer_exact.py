"""Run a converted (Q/DQ) graph's convs with the arithmetic of integer kernels.

pt2e's reference graph computes each quantized conv as ``dequantize -> float32
conv -> quantize``. That is an approximation of what int8 runtimes do:
onnxruntime's QLinearConv (MLAS) accumulates ``(x - zx) * w`` exactly in
int32, adds the int32 bias, converts to float32, multiplies by
``float32(sx * sw / sy)``, rounds half to even and adds ``zy``. The float32
conv on dequantized values rounds every product and partial sum instead, and
on a 49-conv network those last-bit differences move enough outputs across a
rounding boundary, then cascade, to flip ~1% of top-1 predictions on
uncertain images. This pass replaces each ``conv [-> clamp] -> quantize``
by :class:`IntegerConv`, which computes exactly what QLinearConv computes,
and each ``dequantize + dequantize -> add -> quantize`` (residual adds) by
:class:`IntegerAdd`, the float32 arithmetic of MLAS's QLinearAdd, so the
torch int8 model and the ONNX model run the same integer graph. Pads,
pooling and the float classifier stay as pt2e wrote them.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
import torchao.quantization.pt2e  # noqa: F401  (registers the quantized_decomposed ops)
from torch import fx, nn

from qtdog_sdk.errors import QTDoGError
from qtdog_train.convert.ops import ACTIVATION, ADD, CLAMP, CONV, RELU, sole_user

_qd = torch.ops.quantized_decomposed
_QUANTIZE = {_qd.quantize_per_tensor.default}
_DEQUANTIZE = {_qd.dequantize_per_tensor.default}
_DEQUANTIZE_CHANNEL = {_qd.dequantize_per_channel.default}
#: float32 represents every integer below this exactly.
_FLOAT32_EXACT = 2**24


class IntegerConv(nn.Module):
    """uint8 activations in, uint8 out: int32 accumulation + float32 requantization."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor,
        multiplier: torch.Tensor,
        input_zero_point: int,
        output_zero_point: int,
        output_range: tuple[float, float],
        conv_args: tuple[list[int], list[int], list[int], int],
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight.to(torch.float32))
        self.register_buffer("bias", bias.to(torch.int64).view(1, -1, 1, 1))
        self.register_buffer("multiplier", multiplier.to(torch.float32).view(1, -1, 1, 1))
        self.input_zero_point = input_zero_point
        self.output_zero_point = output_zero_point
        self.low, self.high = output_range
        self.stride, self.padding, self.dilation, self.groups = conv_args
        # Every partial sum of an output is bounded by max|x - zx| * sum|w| over its kernel;
        # below 2^24 float32 holds them all exactly, whatever order the conv sums in.
        largest_input = max(input_zero_point, 255 - input_zero_point)
        bound = largest_input * float(self.weight.abs().flatten(1).sum(1).max())
        self.accumulator = torch.float32 if bound < _FLOAT32_EXACT else torch.float64

    def _accumulate(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            x.to(self.accumulator),
            self.weight.to(self.accumulator),
            None,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        x = q.to(torch.float32) - self.input_zero_point
        acc = self._accumulate(x)
        total = acc.round().to(torch.int64) + self.bias
        scaled = total.to(torch.float32) * self.multiplier
        scaled = scaled.clamp(self.low, self.high)
        return (torch.round(scaled) + self.output_zero_point).to(torch.uint8)


class IntegerAdd(nn.Module):
    """uint8 + uint8 -> uint8 as MLAS's AVX2 QLinearAdd computes it, in float32:
    ``round(fma(a, ra, fma(b, rb, fixed)))`` with ``ra = sa/sc``, ``rb = sb/sc`` and
    ``fixed = zc - fma(ra, za, rb*zb)``.

    The fixed part is written ``zc - (ra*za + rb*zb)`` in MLAS's source, but
    onnxruntime's wheel (1.32) computes it contracted into a fused multiply-add, as
    a compiler may in the FMA-enabled AVX2 kernel. Computing it with three roundings instead
    moves ``fixed`` by one float32 ulp for some scales, enough to flip outputs that
    lie within an ulp of a rounding tie (a test checks all 65,536 input pairs
    against onnxruntime's kernel). A float32 fused multiply-add is emulated exactly
    in float64: the product of a uint8 (or a zero point) and a float32 is exact
    there, and so is its sum with a float32 of similar magnitude, leaving the
    single rounding to float32 that FMA does.
    """

    def __init__(
        self, a: tuple[float, int], b: tuple[float, int], out: tuple[float, int, int, int]
    ) -> None:
        super().__init__()
        f32 = torch.float32
        (sa, za), (sb, zb), (sc, zc, self.low, self.high) = a, b, out
        self.ratio_a = torch.tensor(sa, dtype=f32) / torch.tensor(sc, dtype=f32)
        self.ratio_b = torch.tensor(sb, dtype=f32) / torch.tensor(sc, dtype=f32)
        zero_points = self._fma(torch.tensor(float(za)), self.ratio_a, self.ratio_b * zb)
        self.fixed = torch.tensor(float(zc), dtype=f32) - zero_points

    @staticmethod
    def _fma(x: torch.Tensor, ratio: torch.Tensor, addend: torch.Tensor) -> torch.Tensor:
        exact = x.to(torch.float64) * ratio.double() + addend.to(torch.float64)
        return exact.to(torch.float32)

    def forward(self, qa: torch.Tensor, qb: torch.Tensor) -> torch.Tensor:
        value = self._fma(qa, self.ratio_a, self._fma(qb, self.ratio_b, self.fixed))
        return torch.round(value).clamp(self.low, self.high).to(torch.uint8)


def _activation_and_quantize(
    node: fx.Node, activations: frozenset
) -> tuple[fx.Node | None, fx.Node | None]:
    """The activation (one of ``activations``) that alone follows ``node``, if any, and the
    quantize node that alone follows that tail (None when the chain is not this shape)."""
    activation = sole_user(node, activations)
    return activation, sole_user(node if activation is None else activation, _QUANTIZE)


def _integer_add(add: fx.Node) -> tuple[IntegerAdd, tuple[fx.Node, fx.Node], fx.Node] | None:
    """The IntegerAdd for ``add``, its two uint8 inputs and the quantize node it replaces."""
    dq_a, dq_b = add.args[0], add.args[1]
    if len(add.args) > 2 or add.kwargs.get("alpha", 1) != 1:
        return None
    if not all(isinstance(d, fx.Node) and d.target in _DEQUANTIZE for d in (dq_a, dq_b)):
        return None
    relu, quantize = _activation_and_quantize(add, RELU)
    if quantize is None:
        return None

    def qparams(node: fx.Node) -> tuple[float, int]:
        return _scalar(node.args[1]), int(_scalar(node.args[2]))

    out = (*qparams(quantize), int(quantize.args[3]), int(quantize.args[4]))
    if relu is not None and out[1] != out[2]:
        # the integer add clamps to [qmin, qmax]: that is the ReLU only when 0.0 is qmin
        return None
    module = IntegerAdd(qparams(dq_a), qparams(dq_b), out)  # type: ignore[arg-type]
    return module, (dq_a.args[0], dq_b.args[0]), quantize  # type: ignore[return-value]


def _attr(module: nn.Module, node: fx.Node) -> torch.Tensor:
    if node.op != "get_attr":
        raise QTDoGError(f"{node.name}: expected a constant of the graph")
    value: object = module
    for part in str(node.target).split("."):
        value = getattr(value, part)
    assert isinstance(value, torch.Tensor)
    return value


def _scalar(value: object) -> float:
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)  # type: ignore[arg-type]


def _integer_conv(gm: fx.GraphModule, conv: fx.Node) -> tuple[IntegerConv, fx.Node, fx.Node] | None:
    """The IntegerConv for ``conv``, its uint8 input and the quantize node it replaces."""
    args = list(conv.args) + [None] * (7 - len(conv.args))
    dq_x, dq_w, dq_b, stride, padding, dilation, groups = args
    if not (isinstance(dq_x, fx.Node) and dq_x.target in _DEQUANTIZE):
        return None
    if not (isinstance(dq_w, fx.Node) and dq_w.target in _DEQUANTIZE_CHANNEL):
        return None
    activation, quantize = _activation_and_quantize(conv, ACTIVATION)
    if quantize is None or quantize.args[0] is not (activation or conv):
        return None
    low, high = -float("inf"), float("inf")
    if activation is not None and activation.target in CLAMP:
        low, high = _scalar(activation.args[1]), _scalar(activation.args[2])
    elif activation is not None:
        low = 0.0
    x_scale, x_zero = _scalar(dq_x.args[1]), int(_scalar(dq_x.args[2]))
    y_scale, y_zero = _scalar(quantize.args[1]), int(_scalar(quantize.args[2]))
    y_min, y_max = int(quantize.args[3]), int(quantize.args[4])
    weight = _attr(gm, dq_w.args[0])
    w_scale = _attr(gm, dq_w.args[1]).to(torch.float32)
    if isinstance(dq_b, fx.Node):
        if dq_b.target not in _DEQUANTIZE_CHANNEL:
            return None  # a float bias: leave this conv to the reference graph
        bias = _attr(gm, dq_b.args[0])
    else:
        bias = torch.zeros(weight.shape[0], dtype=torch.int32)
    # Computed in float32 in this order, as onnxruntime computes its output scales.
    multiplier = torch.tensor(x_scale, dtype=torch.float32) * w_scale
    multiplier = multiplier / torch.tensor(y_scale, dtype=torch.float32)
    out_low = max(y_min - y_zero, low / y_scale)
    out_high = min(y_max - y_zero, high / y_scale)
    module = IntegerConv(
        weight,
        bias,
        multiplier,
        x_zero,
        y_zero,
        (out_low, out_high),
        (
            list(stride or [1, 1]),
            list(padding or [0, 0]),
            list(dilation or [1, 1]),
            int(groups or 1),
        ),
    )
    return module, dq_x.args[0], quantize  # type: ignore[return-value]


def _swap_in(
    gm: fx.GraphModule, op: fx.Node, module: nn.Module, inputs: tuple, quantize: fx.Node
) -> None:
    """Replace the chain ``op [-> clamp] -> quantize`` by ``module(*inputs)``.

    The float chain is erased explicitly: in-place clamps count as impure for DCE.
    """
    name = f"integer_{op.name}"
    gm.add_submodule(name, module)
    with gm.graph.inserting_before(quantize):
        node = gm.graph.call_module(name, inputs)
    quantize.replace_all_uses_with(node)
    chain = [quantize]
    while chain[-1] is not op:
        chain.append(chain[-1].args[0])  # type: ignore[arg-type]
    for dead in chain:
        gm.graph.erase_node(dead)


def integer_exact(graph: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``graph`` whose quantized convs and adds run as integer kernels do."""
    gm = copy.deepcopy(graph)
    for add in [n for n in gm.graph.nodes if n.op == "call_function" and n.target in ADD]:
        if (found_add := _integer_add(add)) is not None:
            module_add, inputs, quantize = found_add
            _swap_in(gm, add, module_add, inputs, quantize)
    replaced = 0
    for conv in [n for n in gm.graph.nodes if n.op == "call_function" and n.target in CONV]:
        if (found := _integer_conv(gm, conv)) is not None:
            module, q_input, quantize = found
            _swap_in(gm, conv, module, (q_input,), quantize)
            replaced += 1
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    gm.integer_convs = replaced  # type: ignore[assignment]
    return gm
