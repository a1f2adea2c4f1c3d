"""Int8 conversion on a small conv net: BN folding of switched-off channels, int32
biases, and the torch int8 model computing exactly what onnxruntime computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from conftest import cpu_session, onnx_logits  # noqa: E402
from torch import nn  # noqa: E402

from qtdog_train.convert.member import convert_member  # noqa: E402

SWITCHED_OFF = 2  # a channel BatchNorm scales to ~0, with a large positive shift


class _Net(nn.Module):
    """Stem, a depthwise-separable residual block (conv+BN+ReLU6, add) and a float head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6()
        )
        self.block = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU6(),
            nn.Conv2d(8, 8, 1, bias=False),
            nn.BatchNorm2d(8),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(x + self.block(x))


def _net(kind: type[_Net] = _Net) -> nn.Module:
    torch.manual_seed(0)
    net = kind()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
        net.stem[1].weight[SWITCHED_OFF] = 1e-12
        net.stem[1].bias[SWITCHED_OFF] = 3.0
    return net.eval()


def _calibration() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(16, 3, 24, 24, generator=generator) for _ in range(2)]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("conversion") / "net.onnx"
    return convert_member(_net(), 7, _calibration(), out)


def test_switched_off_channel_computes_its_bias_alone_and_fits_int32(converted) -> None:
    import onnx
    from onnx import numpy_helper

    first = next(m for n, m in converted.int8_model.named_modules() if n.endswith("conv2d"))
    assert torch.count_nonzero(first.weight[SWITCHED_OFF]) == 0
    assert int(first.bias.abs().max()) < 2**31 - 1
    graph = onnx.load(str(converted.onnx_path)).graph
    dequantized = {n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    biases = [
        numpy_helper.to_array(t)
        for t in graph.initializer
        if t.data_type == onnx.TensorProto.INT32 and t.name in dequantized
    ]
    assert len(biases) == 3  # every conv's bias is stored as int32, as QLinearConv adds it
    assert max(int(np.abs(b.astype(np.int64)).max()) for b in biases) < 2**31 - 1


def test_torch_int8_and_onnx_compute_the_same_integers(converted) -> None:
    from qtdog_train.convert.integer_exact import IntegerAdd, IntegerConv

    kinds = [type(m) for m in converted.int8_model.modules()]
    assert kinds.count(IntegerConv) == 3 and kinds.count(IntegerAdd) == 1
    x = torch.randn(64, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch_int8 = converted.int8_model(x).numpy()
        weight_only = converted.weight_quantized(x).numpy()
    onnx_int8 = onnx_logits(converted.onnx_path, x)
    assert converted.torch_int8_convs == (3, 3)
    assert converted.onnx_int8_convs == (3, 3)
    np.testing.assert_allclose(torch_int8, onnx_int8, atol=1e-4)
    assert (torch_int8.argmax(1) == onnx_int8.argmax(1)).all()
    # activation quantization moves the logits a little, never as a wrapped-around bias would
    assert np.abs(onnx_int8 - weight_only).max() < 0.1 * np.abs(weight_only).max()


class _ResidualReLUNet(_Net):
    """The same block closed as ResNet's are: add, then ReLU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(torch.relu(x + self.block(x)))


def test_residual_add_and_its_relu_quantize_as_one_op(tmp_path: Path) -> None:
    """No Q/DQ pair between a residual add and its ReLU (onnxruntime ran it in float: a third
    of ResNet-50's int8 time), and the torch int8 model still computes onnxruntime's logits."""
    import onnx

    from qtdog_train.convert.integer_exact import IntegerAdd

    result = convert_member(_net(_ResidualReLUNet), 7, _calibration(), tmp_path / "relu.onnx")
    graph = onnx.load(str(result.onnx_path)).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    relus = [node for node in graph.node if node.op_type == "Relu"]
    assert relus and all(producers[node.input[0]] == "Add" for node in relus)
    assert [type(m) for m in result.int8_model.modules()].count(IntegerAdd) == 1
    x = torch.randn(64, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch_int8 = result.int8_model(x).numpy()
    onnx_int8 = onnx_logits(result.onnx_path, x)
    np.testing.assert_allclose(torch_int8, onnx_int8, atol=1e-4)
    assert (torch_int8.argmax(1) == onnx_int8.argmax(1)).all()


def test_folded_batchnorm_is_an_exact_identity_with_positive_eps() -> None:
    """torch <= 2.11 rejects eps == 0 (the GPU machine's torch failed on it): the folded
    BatchNorm must keep eps > 0 and still pass activations through unchanged."""
    from qtdog_train.convert.fold import dequantized_copy, fold_batchnorm

    plain, convs = dequantized_copy(_net(), 7)
    fold_batchnorm(plain, convs)
    norms = [m for m in plain.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(bn.eps > 0 for bn in norms)
    x = torch.randn(2, 8, 5, 5)
    assert all(torch.equal(bn(x), x) for bn in norms)


def _activation_scales(graph) -> list[float]:
    target = torch.ops.quantized_decomposed.quantize_per_tensor.default
    return [float(n.args[1]) for n in graph.graph.nodes if n.target == target]


def test_minmax_observer_is_the_default_and_keeps_the_whole_calibrated_range(
    converted, tmp_path: Path
) -> None:
    from qtdog_train.config import ACTIVATION_OBSERVERS
    from qtdog_train.convert.pt2e import ACTIVATION_OBSERVERS as PT2E_OBSERVERS

    assert tuple(PT2E_OBSERVERS) == ACTIVATION_OBSERVERS
    calibration = _calibration()  # the batches of the `converted` fixture
    histogram = convert_member(_net(), 7, calibration, tmp_path / "h.onnx", observer="histogram")
    assert histogram.onnx_int8_convs == (3, 3)
    everything = torch.cat(calibration)
    expected_input_scale = (float(everything.max()) - min(0.0, float(everything.min()))) / 255
    default_scales, hist_scales = (
        _activation_scales(converted.int8_graph),  # converted with the default observer
        _activation_scales(histogram.int8_graph),
    )
    assert default_scales[0] == pytest.approx(expected_input_scale, rel=1e-5)
    assert default_scales[0] > hist_scales[0]  # the histogram observer clips Gaussian tails
    with pytest.raises(Exception, match="observer"):
        convert_member(_net(), 7, calibration, tmp_path / "x.onnx", observer="percentile")


def _qlinear_add_session(a: tuple[float, int], b: tuple[float, int], c: tuple[float, int]):
    """onnxruntime's QLinearAdd (the kernel its QDQ fusion runs for a residual add) alone."""
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(n, TensorProto.UINT8, [None]) for n in ("a", "b")]
    constants = []
    for name, (scale, zero) in zip("abc", (a, b, c), strict=True):
        constants.append(helper.make_tensor(f"s{name}", TensorProto.FLOAT, [], [scale]))
        constants.append(helper.make_tensor(f"z{name}", TensorProto.UINT8, [], [zero]))
    node = helper.make_node(
        "QLinearAdd", ["a", "sa", "za", "b", "sb", "zb", "sc", "zc"], ["c"], domain="com.microsoft"
    )
    output = helper.make_tensor_value_info("c", TensorProto.UINT8, [None])
    graph = helper.make_graph([node], "qlinear_add", inputs, [output], constants)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return cpu_session(helper.make_model(graph, opset_imports=opsets).SerializeToString())


def test_integer_add_equals_onnxruntime_on_every_input_pair() -> None:
    """Every (a, b) uint8 pair under 60 random scale / zero-point sets. A fixed part computed
    with three roundings instead of onnxruntime's fused multiply-add misses on some of them
    (it flipped 39 outputs of one residual add of a trained member on 6 photos)."""
    from qtdog_train.convert.integer_exact import IntegerAdd

    a, b = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8))
    a, b = a.ravel(), b.ravel()
    rng = np.random.default_rng(0)
    for _ in range(60):
        scales = [float(np.float32(s)) for s in rng.uniform(0.01, 1.0, 3)]
        zeros = [int(z) for z in rng.integers(0, 256, 3)]
        qa, qb, qc = zip(scales, zeros, strict=True)
        expected = _qlinear_add_session(qa, qb, qc).run(None, {"a": a, "b": b})[0]
        module = IntegerAdd(qa, qb, (*qc, 0, 255))
        got = module(torch.from_numpy(a), torch.from_numpy(b)).numpy()
        assert np.array_equal(got, expected), (qa, qb, qc, int((got != expected).sum()))


def test_int8_trace_pairs_every_int8_op_and_finds_the_one_that_departs(converted) -> None:
    """bench/int8_trace.py on the small net: the two runtimes' uint8 tensors line up op for op
    and agree; after shifting one add's output by a level in torch, that add is the departure."""
    import copy

    from conftest import load_bench_module

    from qtdog_train.convert.integer_exact import IntegerAdd

    trace = load_bench_module("int8_trace.py")
    x = torch.randn(8, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    onnx_side, logit_gap = trace.onnx_uint8_tensors(converted.onnx_path, x.numpy())
    assert len(onnx_side) == 4  # 3 QLinearConv + 1 QLinearAdd
    assert logit_gap < 1e-5  # the traced graph computes what the user's session computes
    rows = trace.compare(trace.torch_uint8_tensors(converted.int8_model, x), onnx_side)
    assert len(rows) == 4 and trace.first_departure(rows) is None

    broken = copy.deepcopy(converted.int8_model)
    add_name, add = next((n, m) for n, m in broken.named_modules() if isinstance(m, IntegerAdd))
    add.fixed = add.fixed + 1.0
    rows = trace.compare(trace.torch_uint8_tensors(broken, x), onnx_side)
    departure = trace.first_departure(rows)
    assert departure is not None and departure["torch"] == add_name
    assert departure["max_levels"] == 1
    assert all(r["differ"] == 0 for r in rows[: rows.index(departure)])


def test_integer_conv_accumulates_exactly_when_partial_sums_pass_float32() -> None:
    """A 1x1 conv over 2,048 channels of 7-bit weights can reach partial sums past 2^24, where
    float32 rounds: the module then accumulates in float64 and matches int64 arithmetic."""
    from qtdog_train.convert.integer_exact import IntegerConv

    generator = torch.Generator().manual_seed(4)

    def conv(weight: torch.Tensor, zero_point: int) -> IntegerConv:
        channels = weight.shape[0]
        return IntegerConv(
            weight, torch.zeros(channels, dtype=torch.int32), torch.full((channels,), 1e-6),
            zero_point, 0, (-1e9, 1e9), ([1, 1], [0, 0], [1, 1], 1),
        )  # fmt: skip

    wide = torch.randint(40, 64, (4, 2048, 1, 1), generator=generator, dtype=torch.int8)
    q = torch.randint(200, 256, (2, 2048, 3, 3), generator=generator, dtype=torch.uint8)
    module = conv(wide, 0)
    assert module.accumulator == torch.float64
    exact = torch.einsum("nchw,oc->nohw", q.to(torch.int64), wide.flatten(1).to(torch.int64))
    got = module._accumulate(q.to(torch.float32)).round().to(torch.int64)
    assert torch.equal(got, exact) and int(exact.max()) > 2**24
    assert conv(wide[:, :64], 128).accumulator == torch.float32  # small kernels stay in float32
