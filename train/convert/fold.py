"""From a trained (fake-quantized) model to a deployable float graph with integer weights.

Every conv's weight becomes exactly ``levels * scale`` (the integers and
per-channel scales learned by LSQ, or post-training ones for float models),
and each frozen BatchNorm that follows a conv is folded into it. Folding
multiplies output channel ``k`` by ``g_k = gamma_k / sqrt(var_k + eps)``:
the integers stay the same (sign-flipped where ``g_k < 0``) and the scale
becomes ``scale_k * |g_k|``. The BatchNorm is left as an exact identity, so
any graph tool that folds BN again changes nothing.

A channel that BatchNorm switched off (``|g_k|`` near zero, as some
ImageNet-pretrained channels are) would get a folded scale so small that its
bias no longer fits the int32 that int8 runtimes keep it in (scale of the
bias = input scale x weight scale): onnxruntime silently wraps it around.
Such a channel computes its bias alone anyway, so its integers become zero
and its scale is raised to the smallest one that keeps the bias in range.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from qtdog_sdk.errors import QTDoGError
from qtdog_train.quant.lsq import conv_modules, weight_integers_and_scales

#: Smallest activation scale the int8 graph may use (the calibration observer's ``eps``).
MIN_ACTIVATION_SCALE = 2.0**-12
#: Largest |bias| / (activation scale x weight scale) allowed: int32 with a 2x margin.
MAX_BIAS_LEVEL = 2.0**30


@dataclass
class QuantizedConv:
    """Integer weights of one conv, before and after BatchNorm folding."""

    name: str
    levels: torch.Tensor
    scale: torch.Tensor
    folded_levels: torch.Tensor
    folded_scale: torch.Tensor


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, nn.Conv2d, nn.modules.batchnorm._BatchNorm]]:
    """Pairs (conv, BN that directly follows it) among each module's children, in order."""
    pairs = []
    for parent_name, parent in model.named_modules():
        last: tuple[str, nn.Conv2d] | None = None
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                last = (f"{parent_name}.{child_name}".lstrip("."), child)
            elif isinstance(child, nn.modules.batchnorm._BatchNorm):
                if last is not None and child.num_features == last[1].out_channels:
                    pairs.append((last[0], last[1], child))
                last = None
    return pairs


def _strip_parametrizations(conv: nn.Conv2d) -> None:
    """Turn a parametrized conv of a deep copy back into a plain one.

    ``parametrize.remove_parametrizations`` edits the generated class, which a
    deep copy shares with the original model; this edits only the instance.
    """
    if not parametrize.is_parametrized(conv):
        return
    weight = conv.parametrizations["weight"].original.detach().clone()
    del conv._modules["parametrizations"]
    conv.__class__ = type(conv).__bases__[0]
    conv.weight = nn.Parameter(weight)


@torch.no_grad()
def _set_identity(bn: nn.modules.batchnorm._BatchNorm) -> None:
    bn.weight.fill_(1.0)
    bn.bias.zero_()
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0)
    # Not 0: torch <= 2.11 rejects eps == 0 in batch_norm (seen on the GPU machine's
    # torch 2.11). 1e-12 is below float32's resolution at 1, so sqrt(1 + eps) == 1 exactly.
    bn.eps = 1e-12


@torch.no_grad()
def dequantized_copy(model: nn.Module, bits: int) -> tuple[nn.Module, dict[str, QuantizedConv]]:
    """A plain (unparametrized) eval copy of ``model`` whose conv weights are ``levels * scale``."""
    plain = copy.deepcopy(model).cpu().eval()
    convs: dict[str, QuantizedConv] = {}
    for name, conv in list(conv_modules(plain)):
        levels, scale = weight_integers_and_scales(conv, bits)
        _strip_parametrizations(conv)
        conv.weight.copy_(levels.float() * scale.view(-1, 1, 1, 1))
        convs[name] = QuantizedConv(name, levels, scale, levels.clone(), scale.clone())
    return plain, convs


def integer_state_dict(
    plain: nn.Module, convs: dict[str, QuantizedConv]
) -> dict[str, torch.Tensor]:
    """State dict for the model format: ``X.weight`` of each quantized conv stored as
    ``X.weight_int8`` + ``X.weight_scale``; every other tensor as it is."""
    state = {k: v.detach().clone().contiguous() for k, v in plain.state_dict().items()}
    for name, conv in convs.items():
        del state[f"{name}.weight"]
        state[f"{name}.weight_int8"] = conv.levels.contiguous()
        state[f"{name}.weight_scale"] = conv.scale.float().contiguous()
    return state


@torch.no_grad()
def fold_batchnorm(plain: nn.Module, convs: dict[str, QuantizedConv]) -> None:
    """Fold every conv-following BatchNorm into its conv, in place (see the module doc)."""
    for name, conv, bn in conv_bn_pairs(plain):
        g = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * g
        if conv.bias is not None:
            shift = shift + conv.bias * g
        entry = convs[name]
        sign = torch.where(g < 0, -1, 1).to(torch.int8)
        levels = entry.levels * sign.view(-1, 1, 1, 1)
        scale = entry.scale * g.abs()
        floor = shift.abs() / (MIN_ACTIVATION_SCALE * MAX_BIAS_LEVEL)
        switched_off = scale < floor
        levels[switched_off] = 0
        entry.folded_levels = levels
        entry.folded_scale = torch.where(switched_off, floor, scale)
        conv.weight.copy_(entry.folded_levels.float() * entry.folded_scale.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter(shift.detach().clone())
        _set_identity(bn)


@torch.no_grad()
def check_same_outputs(
    reference: nn.Module, candidate: nn.Module, x: torch.Tensor, what: str
) -> None:
    """Fail loudly if ``candidate`` does not compute what ``reference`` computes on ``x``."""
    expected, got = reference.eval()(x), candidate.eval()(x)
    err = (expected - got).abs().max().item()
    tol = 1e-3 * max(1.0, expected.abs().max().item())
    if err > tol:
        raise QTDoGError(f"{what} changed the outputs by {err:.2e} (tolerance {tol:.1e})")
