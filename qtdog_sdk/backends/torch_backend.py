"""PyTorch backend: timm architecture + safetensors weights.

Each member's ``member-<i>.safetensors`` holds the state_dict of
``timm.create_model(config.architecture, num_classes=len(labels))``, except
that quantized conv weights are stored as ``X.weight_int8`` (int8) and
``X.weight_scale`` (float32 ``[C_out]``). They are dequantized once at load:
``X.weight = weight_int8.float() * weight_scale.view(-1, 1, 1, 1)``.

CPU runs fp32 in channels_last; CUDA runs bf16 (there are no int8 conv
kernels for CUDA in torch; the integers are exact in bf16 up to 8 bits, the
scales are not). torch and timm are imported only when this backend is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qtdog_sdk.errors import BackendUnavailableError, ModelFormatError
from qtdog_sdk.format import ModelConfig

__all__ = ["TorchBackend", "dequantize_state_dict"]

INT8_SUFFIX = ".weight_int8"
SCALE_SUFFIX = ".weight_scale"


def _import_torch() -> tuple[Any, Any]:
    try:
        import timm
        import torch
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the torch backend needs torch and timm ({exc.name or exc} is not installed); "
            "pip install 'qtdog[torch]'"
        ) from None
    return torch, timm


def dequantize_state_dict(tensors: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Replace every ``X.weight_int8`` / ``X.weight_scale`` pair by a float ``X.weight``."""
    import torch

    out: dict[str, Any] = {}
    for key, value in tensors.items():
        if key.endswith(SCALE_SUFFIX):
            base = key[: -len(SCALE_SUFFIX)]
            if base + INT8_SUFFIX not in tensors:
                raise ModelFormatError(f"{where}: '{key}' has no matching '{base}{INT8_SUFFIX}'")
            continue
        if not key.endswith(INT8_SUFFIX):
            out[key] = value
            continue
        base = key[: -len(INT8_SUFFIX)]
        scale = tensors.get(base + SCALE_SUFFIX)
        if scale is None:
            raise ModelFormatError(f"{where}: '{key}' has no matching '{base}{SCALE_SUFFIX}'")
        if value.dtype != torch.int8:
            raise ModelFormatError(f"{where}: '{key}' must be int8, got {value.dtype}")
        if scale.ndim != 1 or scale.shape[0] != value.shape[0]:
            raise ModelFormatError(
                f"{where}: '{base}{SCALE_SUFFIX}' must have shape [{value.shape[0]}], got {list(scale.shape)}"
            )
        view = (-1,) + (1,) * (value.ndim - 1)
        out[base + ".weight"] = value.to(torch.float32) * scale.to(torch.float32).view(view)
    return out


class TorchBackend:
    """Per-member logits from timm models rebuilt from safetensors."""

    name = "torch"

    def __init__(self, repo_dir: str | Path, config: ModelConfig, device: str = "auto") -> None:
        torch, timm = _import_torch()
        from safetensors.torch import load_file

        self._torch = torch
        self.repo_dir = Path(repo_dir)
        self.config = config
        has_cuda = torch.cuda.is_available()
        if device == "cuda" and not has_cuda:
            raise BackendUnavailableError(
                "device 'cuda' requested but torch sees no CUDA GPU here (use --device cpu)"
            )
        self.device = "cuda" if (device in ("cuda", "auto") and has_cuda) else "cpu"
        self.dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        memory_format = torch.channels_last
        self.models = []
        for member in config.members:
            path = self.repo_dir / member.weights
            try:
                model = timm.create_model(
                    config.architecture, pretrained=False, num_classes=config.num_classes
                )
            except (RuntimeError, ValueError, KeyError) as exc:
                raise ModelFormatError(
                    f"config.json: timm cannot build architecture {config.architecture!r} ({exc})"
                ) from None
            try:
                tensors = load_file(str(path))
            except Exception as exc:  # safetensors raises its own error type
                raise ModelFormatError(f"{path}: not a valid safetensors file ({exc})") from None
            state = dequantize_state_dict(tensors, where=str(path))
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                first = " ".join(str(exc).split())[:300]
                raise ModelFormatError(
                    f"{path}: weights do not fit {config.architecture} ({first})"
                ) from None
            model.eval()
            model.to(device=self.device, dtype=self.dtype, memory_format=memory_format)
            self.models.append(model)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Per-member logits ``float32 [N, M, C]``."""
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        x = x.to(device=self.device, dtype=self.dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            outs = [model(x).float() for model in self.models]
        return torch.stack(outs, dim=1).cpu().numpy()
