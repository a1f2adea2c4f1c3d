"""Write a trained ensemble as a model repository (the format of qtdog_sdk.format)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from qtdog_sdk.card import render_model_card
from qtdog_sdk.format import (
    CARD_NAME,
    Member,
    ModelConfig,
    Preprocessing,
    Quantization,
    write_config,
)


def member_file_names(index: int) -> tuple[str, str]:
    return f"member-{index}.onnx", f"member-{index}.safetensors"


def save_member_weights(
    state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]
) -> None:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)


def write_repository(
    repo_dir: Path,
    architecture: str,
    labels: list[str],
    members: list[Member],
    preprocessing: Preprocessing,
    quantization: Quantization,
    training: dict[str, Any],
    metrics: dict[str, Any],
    ensemble_onnx: str | None,
) -> ModelConfig:
    """Write config.json (hashing the member files already in ``repo_dir``) and the model card."""
    config = ModelConfig(
        architecture=architecture,
        labels=labels,
        members=members,
        preprocessing=preprocessing,
        quantization=quantization,
        ensemble_onnx=ensemble_onnx,
        training=training,
        metrics=metrics,
    )
    write_config(repo_dir, config)
    (repo_dir / CARD_NAME).write_text(render_model_card(config), encoding="utf-8")
    return config
