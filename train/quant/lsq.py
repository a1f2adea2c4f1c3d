"""LSQ weight quantization (Esser et al., 2020) as a torch parametrization.

``w_q = round(clamp(w / s, -Q_N, Q_P)) * s`` with one learned step size ``s``
per output channel, a straight-through estimator through ``round``, and
LSQ's gradient scale on ``s``. Two departures from the paper, both needed on
depthwise-separable backbones (stack-notes, last section) and both flags:

- ``s`` is stored as ``log s`` (``step_param="log"``): it can never go
  negative, and Adam's roughly constant-size updates become relative changes
  of ``s`` (about lr per step: at lr 5e-5 the grid barely moves, results
  section 17). ``step_param="linear"`` stores ``s`` itself as the paper does
  (Adam moves it by about lr per step, a relative change of lr / s) and
  quantizes with ``|s|`` so it stays positive.
- The initial step size is a choice (``s_init``): the paper's
  ``2 mean|w| / sqrt(Q_P)``, max-abs, or the per-channel MSE-optimal value.

Attaching through ``torch.nn.utils.parametrize`` quantizes every conv,
whatever its subclass (timm's ``Conv2dSame`` included), because the conv's
own forward reads ``self.weight``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

S_INIT_RULES = ("lsq", "maxabs", "mse")
#: Which convs LSQ quantizes: every one (the paper), or all but the depthwise ones (whose
#: channels hold 9-25 weights each, where a shared per-channel grid rounds hardest).
QUANTIZED_LAYERS = ("all", "no-depthwise")
#: How each step size is stored and learned: as ``log s`` (this project's default) or as ``s``.
STEP_PARAMETRIZATIONS = ("log", "linear")


def qrange(bits: int) -> tuple[int, int]:
    """(Q_N, Q_P) of a signed ``bits``-bit grid: values in [-Q_N, Q_P]."""
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in 2..8 to fit int8, got {bits}")
    return 2 ** (bits - 1), 2 ** (bits - 1) - 1


def _per_channel(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().reshape(weight.shape[0], -1)


def init_step_size(weight: torch.Tensor, bits: int, rule: str = "mse") -> torch.Tensor:
    """Initial per-output-channel step size for ``weight`` under ``rule``."""
    qn, qp = qrange(bits)
    w = _per_channel(weight).float()
    tiny = torch.finfo(torch.float32).tiny * 1e6
    if rule == "lsq":
        s = 2 * w.abs().mean(dim=1) / math.sqrt(qp)
    elif rule == "maxabs":
        s = w.abs().amax(dim=1) / qp
    elif rule == "mse":
        base = w.abs().amax(dim=1, keepdim=True) / qp
        best_err = torch.full((w.shape[0],), float("inf"), device=w.device)
        s = base.squeeze(1).clone()
        for fraction in torch.linspace(0.2, 1.0, 81).tolist():
            cand = (base * fraction).clamp_min(tiny)
            err = ((torch.clamp(torch.round(w / cand), -qn, qp) * cand - w) ** 2).sum(dim=1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            s = torch.where(better, cand.squeeze(1), s)
    else:
        raise ValueError(f"unknown step-size init {rule!r}; choose from {', '.join(S_INIT_RULES)}")
    return s.clamp_min(tiny)


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return (x.round() - x).detach() + x


def _scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    return (x - x * scale).detach() + x * scale


class LSQWeight(nn.Module):
    """Parametrization turning a float conv weight into its fake-quantized value."""

    def __init__(
        self,
        weight: torch.Tensor,
        bits: int,
        s_init: str = "mse",
        grad_scale: bool = True,
        step_param: str = "log",
    ) -> None:
        super().__init__()
        if step_param not in STEP_PARAMETRIZATIONS:
            raise ValueError(
                f"unknown step-size parametrization {step_param!r}; "
                f"choose from {', '.join(STEP_PARAMETRIZATIONS)}"
            )
        self.bits = bits
        self.qn, self.qp = qrange(bits)
        self.grad_scale = 1.0 / math.sqrt(self.qp * weight.numel()) if grad_scale else 1.0
        self.step_param = step_param
        init = init_step_size(weight, bits, s_init).to(weight.device)
        if step_param == "log":
            self.log_step = nn.Parameter(init.log())
        else:
            self.linear_step = nn.Parameter(init)

    def parameter(self) -> nn.Parameter:
        """The learned tensor behind the step sizes (``log s`` or ``s``)."""
        return self.log_step if self.step_param == "log" else self.linear_step

    def step_size(self) -> torch.Tensor:
        if self.step_param == "log":
            return self.log_step.exp()
        return self.linear_step.abs().clamp_min(torch.finfo(self.linear_step.dtype).tiny)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        s = _scale_grad(self.step_size(), self.grad_scale).view(-1, *([1] * (weight.dim() - 1)))
        return _round_ste(torch.clamp(weight / s, -self.qn, self.qp)) * s

    @torch.no_grad()
    def integers(self, weight: torch.Tensor) -> torch.Tensor:
        """The integer levels of ``weight`` (int8 tensor, values in [-Q_N, Q_P])."""
        s = self.step_size().view(-1, *([1] * (weight.dim() - 1)))
        return torch.clamp(torch.round(weight / s), -self.qn, self.qp).to(torch.int8)


def conv_modules(model: nn.Module) -> Iterator[tuple[str, nn.Conv2d]]:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            yield name, module


def is_depthwise(conv: nn.Conv2d) -> bool:
    """One filter per input channel (groups == in_channels > 1)."""
    return conv.groups > 1 and conv.groups == conv.in_channels


def attach_lsq(
    model: nn.Module,
    bits: int,
    s_init: str = "mse",
    grad_scale: bool = True,
    layers: str = "all",
    step_param: str = "log",
) -> list[str]:
    """Quantize the weight of the convs of ``model`` that ``layers`` selects (see
    ``QUANTIZED_LAYERS``); returns the quantized conv names."""
    if layers not in QUANTIZED_LAYERS:
        raise ValueError(
            f"unknown layer selection {layers!r}; choose from {', '.join(QUANTIZED_LAYERS)}"
        )
    names = []
    for name, conv in list(conv_modules(model)):
        if parametrize.is_parametrized(conv, "weight"):
            continue
        if layers == "no-depthwise" and is_depthwise(conv):
            continue
        parametrize.register_parametrization(
            conv, "weight", LSQWeight(conv.weight, bits, s_init, grad_scale, step_param)
        )
        names.append(name)
    return names


def lsq_quantizer(conv: nn.Module) -> LSQWeight | None:
    if not parametrize.is_parametrized(conv, "weight"):
        return None
    for p in conv.parametrizations["weight"]:
        if isinstance(p, LSQWeight):
            return p
    return None


def is_quantized(model: nn.Module) -> bool:
    return any(lsq_quantizer(conv) is not None for _, conv in conv_modules(model))


def is_fully_quantized(model: nn.Module) -> bool:
    """Every conv carries LSQ (the model's integer weights are exactly what it trained with)."""
    return all(lsq_quantizer(conv) is not None for _, conv in conv_modules(model))


def step_size_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [
        q.parameter() for _, conv in conv_modules(model) if (q := lsq_quantizer(conv)) is not None
    ]


def is_quantized_state(state: dict[str, torch.Tensor]) -> bool:
    """Whether a model state dict carries LSQ step sizes (either parametrization)."""
    return any(key.endswith(("log_step", "linear_step")) for key in state)


def quantized_conv_weights(model: nn.Module) -> list[nn.Parameter]:
    """The float 'shadow' weights behind every quantized conv."""
    return [
        conv.parametrizations["weight"].original
        for _, conv in conv_modules(model)
        if lsq_quantizer(conv)
    ]


@torch.no_grad()
def weight_integers_and_scales(
    conv: nn.Conv2d, bits: int, s_init: str = "maxabs"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 levels, per-channel scale) of a conv: the learned ones if LSQ is attached,
    else post-training ones from ``s_init`` (used for float models such as ERM)."""
    quantizer = lsq_quantizer(conv)
    if quantizer is not None:
        weight = conv.parametrizations["weight"].original
        return quantizer.integers(weight), quantizer.step_size().float().clone()
    weight = conv.weight
    scale = init_step_size(weight, bits, s_init)
    qn, qp = qrange(bits)
    levels = torch.clamp(torch.round(weight / scale.view(-1, 1, 1, 1)), -qn, qp).to(torch.int8)
    return levels, scale
