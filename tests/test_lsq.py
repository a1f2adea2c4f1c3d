"""LSQ quantizer: integer grid, gradients (STE and step size), positivity, init rules, coverage."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from qtdog_train.quant.lsq import (  # noqa: E402
    LSQWeight,
    attach_lsq,
    conv_modules,
    init_step_size,
    is_depthwise,
    is_fully_quantized,
    is_quantized,
    lsq_quantizer,
    qrange,
    step_size_parameters,
)


@pytest.mark.parametrize("bits", [4, 7, 8])
def test_at_most_2_pow_b_levels_per_channel(bits: int) -> None:
    torch.manual_seed(0)
    weight = torch.randn(16, 8, 3, 3)
    quantizer = LSQWeight(weight, bits, s_init="lsq")
    levels = quantizer.integers(weight)
    qn, qp = qrange(bits)
    assert levels.dtype == torch.int8
    assert int(levels.min()) >= -qn and int(levels.max()) <= qp
    for channel in levels.reshape(16, -1):
        assert channel.unique().numel() <= 2**bits
    fake = quantizer(weight)
    scales = quantizer.step_size().view(-1, 1, 1, 1)
    assert torch.allclose(fake, levels.float() * scales)


def test_ste_passes_gradient_inside_range_and_blocks_it_outside() -> None:
    weight = torch.tensor([[0.1, 0.26, 5.0, -5.0]]).view(1, 4, 1, 1).requires_grad_(True)
    quantizer = LSQWeight(weight.detach(), bits=4, s_init="maxabs")
    with torch.no_grad():
        quantizer.log_step.fill_(torch.log(torch.tensor(0.1)))  # grid step 0.1, range [-0.8, 0.7]
    quantizer(weight).sum().backward()
    assert weight.grad.flatten().tolist() == [1.0, 1.0, 0.0, 0.0]


def test_step_size_gradient_matches_lsq() -> None:
    weight = torch.tensor([0.26, 5.0, -5.0]).view(1, 3, 1, 1)
    quantizer = LSQWeight(weight, bits=4, s_init="maxabs", grad_scale=False)
    with torch.no_grad():
        quantizer.log_step.fill_(torch.log(torch.tensor(0.1)))
    quantizer(weight).sum().backward()
    s = 0.1
    # d w_q / d s: round(w/s) - w/s inside, Q_P above, -Q_N below (LSQ eq. 3); chain rule through log s.
    expected = ((round(0.26 / s) - 0.26 / s) + 7 + (-8)) * s
    assert quantizer.log_step.grad.item() == pytest.approx(expected, rel=1e-4)


def test_step_sizes_stay_positive_under_adversarial_updates() -> None:
    weight = torch.randn(8, 4, 3, 3)
    quantizer = LSQWeight(weight, bits=7)
    optimizer = torch.optim.Adam([quantizer.log_step], lr=0.5)
    for _ in range(200):
        optimizer.zero_grad()
        quantizer.step_size().sum().backward()  # pushes every step size down as hard as it can
        optimizer.step()
    assert bool((quantizer.step_size() > 0).all())


def test_linear_step_sizes_follow_the_papers_dynamics_and_stay_positive() -> None:
    """``log``: Adam's first step moves log s by lr (s by lr * s); ``linear`` (the paper's s):
    it moves s itself by lr, a relative change of lr / s, and |s| keeps the grid positive."""
    torch.manual_seed(0)
    weight = torch.randn(4, 3, 3, 3) * torch.tensor([0.01, 0.1, 1.0, 10.0]).view(-1, 1, 1, 1)
    lr = 1e-4
    moves = {}
    for step_param in ("log", "linear"):
        quantizer = LSQWeight(weight, bits=7, step_param=step_param)
        before = quantizer.step_size().detach().clone()
        optimizer = torch.optim.Adam([quantizer.parameter()], lr=lr)
        quantizer(weight).pow(2).sum().backward()
        optimizer.step()
        moves[step_param] = (quantizer.step_size().detach() - before).abs(), before
    log_move, s = moves["log"]
    linear_move, s_linear = moves["linear"]
    assert torch.allclose(s, s_linear, rtol=1e-6)  # the same init, stored two ways
    assert torch.allclose(log_move, lr * s, rtol=1e-3)
    assert torch.allclose(linear_move, torch.full_like(s, lr), rtol=1e-2)
    # a channel 1000x wider (weights x 1000) moves 1000x less relative to its step size
    assert float(s[3] / s[0]) > 100 and float(linear_move[0] / s[0]) > 100 * float(
        linear_move[3] / s[3]
    )

    quantizer = LSQWeight(weight, bits=7, step_param="linear")
    with torch.no_grad():
        quantizer.linear_step.mul_(-1)  # where the paper's unguarded s can go
    assert bool((quantizer.step_size() > 0).all())
    flipped = LSQWeight(weight, bits=7, step_param="linear")
    assert torch.equal(quantizer(weight), flipped(weight))  # |s|: the same grid
    with pytest.raises(ValueError, match="unknown step-size parametrization 'exp'"):
        LSQWeight(weight, bits=7, step_param="exp")


def test_init_rules() -> None:
    torch.manual_seed(0)
    weight = torch.randn(32, 1, 3, 3)  # depthwise-like: 9 weights per channel
    qn, qp = qrange(7)
    errors = {}
    for rule in ("lsq", "maxabs", "mse"):
        s = init_step_size(weight, 7, rule).view(-1, 1, 1, 1)
        q = torch.clamp(torch.round(weight / s), -qn, qp) * s
        errors[rule] = float(((q - weight) ** 2).sum())
    assert errors["mse"] <= errors["maxabs"] + 1e-9
    assert errors["mse"] < errors["lsq"]
    s_max = init_step_size(weight, 7, "maxabs")
    assert torch.allclose(weight.abs().reshape(32, -1).amax(1), s_max * qp)
    with pytest.raises(ValueError, match="unknown step-size init"):
        init_step_size(weight, 7, "nope")


def test_attach_quantizes_every_conv_including_same_padding_subclass() -> None:
    from qtdog_train.models.backbones import create_backbone

    model = create_backbone("tf_efficientnet_lite0", num_classes=3, pretrained="none")
    convs = list(conv_modules(model))
    assert any(type(c).__name__ == "Conv2dSame" for _, c in convs)
    names = attach_lsq(model, bits=7)
    assert len(names) == len(convs) == 49
    assert all(lsq_quantizer(conv) is not None for _, conv in conv_modules(model))
    assert len(step_size_parameters(model)) == 49
    assert attach_lsq(model, bits=7) == []  # idempotent
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    assert all(p.grad is not None for p in step_size_parameters(model))


def test_no_depthwise_leaves_exactly_the_depthwise_convs_in_float() -> None:
    from qtdog_train.models.backbones import create_backbone

    model = create_backbone("tf_efficientnet_lite0", num_classes=3, pretrained="none")
    depthwise = {name for name, conv in conv_modules(model) if is_depthwise(conv)}
    assert len(depthwise) == 16
    names = attach_lsq(model, bits=7, layers="no-depthwise")
    assert len(names) == 33 and not depthwise & set(names)
    for name, conv in conv_modules(model):
        assert (lsq_quantizer(conv) is None) == (name in depthwise)
    assert is_quantized(model) and not is_fully_quantized(model)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in step_size_parameters(model))
    with pytest.raises(ValueError, match="unknown layer selection 'pointwise'"):
        attach_lsq(model, bits=7, layers="pointwise")


def test_official_compat_freezes_conv_weights_and_step_sizes() -> None:
    from qtdog_train.config import TrainConfig
    from qtdog_train.models.backbones import set_train_mode
    from qtdog_train.quant.lsq import quantized_conv_weights
    from qtdog_train.trainer import build_model, build_optimizer

    cfg = TrainConfig(data=".", out=".", official_compat=True, pretrained="none", bits=7)
    model = build_model(cfg, num_classes=3, quantized=True, device=torch.device("cpu"))
    optimizer = build_optimizer(cfg, model)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    frozen = quantized_conv_weights(model) + step_size_parameters(model)
    assert not any(id(p) in in_optimizer for p in frozen)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert id(bn.weight) in in_optimizer and id(model.classifier.weight) in in_optimizer
    before = [p.detach().clone() for p in frozen]
    bn_before = bn.weight.detach().clone()
    set_train_mode(model)
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(
            model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0])
        ).backward()
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, frozen, strict=True))
    assert not torch.equal(bn_before, bn.weight)
    assert bn.training is False  # BatchNorm frozen in train mode (DomainBed)


def test_paper_mode_trains_weights_and_step_sizes_after_switch() -> None:
    from qtdog_train.config import TrainConfig
    from qtdog_train.quant.lsq import quantized_conv_weights
    from qtdog_train.trainer import build_model, build_optimizer

    cfg = TrainConfig(data=".", out=".", pretrained="none", s_lr=1e-3)
    model = build_model(cfg, num_classes=3, quantized=True, device=torch.device("cpu"))
    optimizer = build_optimizer(cfg, model)
    groups = optimizer.param_groups
    assert len(groups) == 2 and groups[1]["lr"] == 1e-3
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in step_size_parameters(model)}
    weights_before = [p.detach().clone() for p in quantized_conv_weights(model)]
    steps_before = [p.detach().clone() for p in step_size_parameters(model)]
    nn.functional.cross_entropy(
        model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0])
    ).backward()
    optimizer.step()
    assert any(
        not torch.equal(a, b)
        for a, b in zip(weights_before, quantized_conv_weights(model), strict=True)
    )
    assert any(
        not torch.equal(a, b)
        for a, b in zip(steps_before, step_size_parameters(model), strict=True)
    )
