"""Inference backends: run a batch through every ensemble member.

A backend turns a preprocessed batch ``float32 [N, 3, H, W]`` into per-member
logits ``float32 [N, M, C]``. Two exist:

- ``"onnx"`` (default): onnxruntime on the int8 QDQ graphs; never imports torch.
- ``"torch"``: timm + the safetensors weights (int8 dequantized once); needs
  ``pip install 'qtdog[torch]'``.

Backends are imported lazily by :func:`create_backend`, so importing this
package costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from qtdog_sdk.errors import BackendUnavailableError
from qtdog_sdk.format import ModelConfig

__all__ = [
    "BACKENDS",
    "DEVICES",
    "Backend",
    "backend_files",
    "create_backend",
    "resolve_backend_name",
]

BACKENDS = ("auto", "onnx", "torch")
DEVICES = ("auto", "cpu", "cuda")


@runtime_checkable
class Backend(Protocol):
    """What :class:`~qtdog_sdk.QTDoGEnsemble` needs from a backend."""

    name: str
    device: str

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Per-member logits ``float32 [N, M, C]`` for a batch ``float32 [N, 3, H, W]``."""
        ...


def resolve_backend_name(backend: str) -> str:
    """``"auto"`` means ONNX (fast on CPU, no torch needed)."""
    if backend not in BACKENDS:
        raise BackendUnavailableError(
            f"unknown backend {backend!r} (expected one of: {', '.join(BACKENDS)})"
        )
    return "onnx" if backend == "auto" else backend


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise BackendUnavailableError(
            f"unknown device {device!r} (expected one of: {', '.join(DEVICES)})"
        )
    return device


def backend_files(config: ModelConfig, backend: str) -> list[str]:
    """The payload files a backend reads (these get their sha256 verified)."""
    backend = resolve_backend_name(backend)
    if backend == "onnx":
        if config.ensemble_onnx:
            return [config.ensemble_onnx]
        return [m.onnx for m in config.members]
    return [m.weights for m in config.members]


def create_backend(
    repo_dir: str | Path, config: ModelConfig, backend: str = "auto", device: str = "auto"
) -> Backend:
    """Instantiate a backend for a verified local model repository."""
    backend = resolve_backend_name(backend)
    device = check_device(device)
    if backend == "onnx":
        from qtdog_sdk.backends.onnx_backend import OnnxBackend

        return OnnxBackend(repo_dir, config, device=device)
    from qtdog_sdk.backends.torch_backend import TorchBackend

    return TorchBackend(repo_dir, config, device=device)
