"""What the demo shows about a model and its predictions, without Gradio.

Everything here works on the SDK's public objects (``QTDoGEnsemble``,
``Prediction``) and plain data, so it is importable and testable without the
``demo`` extra.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Below this fraction of members voting for the ensemble's label, the demo
# warns that the image may lie outside what the model knows.
DEFAULT_AGREEMENT_THRESHOLD = 0.6

# Tensors of a member's safetensors file (docs/model-format.md) that a float
# checkpoint would not hold: per-channel step sizes of the int8 weights, and
# BatchNorm's step counters.
_NOT_WEIGHTS = ("weight_scale", "num_batches_tracked")

# Bytes per element of the safetensors dtypes.
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_DTYPE_BYTES.update(dict.fromkeys(("I16", "U16", "F16", "BF16"), 2))
_DTYPE_BYTES.update(dict.fromkeys(("I32", "U32", "F32"), 4))
_DTYPE_BYTES.update(dict.fromkeys(("I64", "U64", "F64"), 8))

_ALGORITHMS = {"qtdog": "QT-DoG", "erm": "ERM"}


def _mb(num_bytes: float) -> str:
    return f"{num_bytes / 1e6:.1f} MB" if num_bytes >= 1e5 else f"{num_bytes / 1e3:.1f} kB"


def _pct(value: Any) -> str:
    """An accuracy as a percentage; accepts fractions (0..1) and percentages."""
    if not isinstance(value, (int, float)):
        return "n/a"
    return f"{value * 100:.1f}%" if value <= 1 else f"{value:.1f}%"


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


# ------------------------------------------------------------------ weights
def safetensors_header(path: str | Path) -> dict[str, Any]:
    """Tensor name -> {"dtype", "shape", ...} from a safetensors file; no tensor data is read."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > 100_000_000:
            raise ValueError(f"{path}: implausible safetensors header")
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return header


def _hub_safetensors_header(repo_id: str, filename: str, revision: str | None) -> dict[str, Any]:
    """The same header for a file on the Hub, read with HTTP range requests."""
    from huggingface_hub import HfApi

    meta = HfApi().parse_safetensors_file_metadata(repo_id, filename, revision=revision)
    return {name: {"dtype": t.dtype, "shape": list(t.shape)} for name, t in meta.tensors.items()}


@dataclass
class WeightStats:
    """The weights of one ensemble member, counted from its safetensors header."""

    num_weights: int  # elements a float checkpoint would hold (step sizes excluded)
    stored_bytes: int  # bytes of tensor data as stored (int8 convs, float rest)

    @property
    def float32_bytes(self) -> int:
        return self.num_weights * 4


def weight_stats(header: dict[str, Any]) -> WeightStats:
    """Count a member's weights and their stored bytes from its safetensors header."""
    weights = stored = 0
    for name, meta in header.items():
        count = math.prod(int(d) for d in meta.get("shape", []))
        stored += count * _DTYPE_BYTES.get(str(meta.get("dtype")), 4)
        if not name.endswith(_NOT_WEIGHTS):
            weights += count
    return WeightStats(num_weights=weights, stored_bytes=stored)


def ensemble_weight_stats(model: Any) -> list[WeightStats] | None:
    """Per-member weight counts, from local files or (Hub models) the Hub; None if unreachable.

    A Hub model loaded for onnxruntime has only its ONNX graphs locally; the
    safetensors headers are then read from the Hub (a few kB each).
    """
    root = Path(getattr(model, "repo_dir", "") or ".")
    stats = []
    try:
        for member in model.config.members:
            local = root / member.weights
            if local.is_file():
                header = safetensors_header(local)
            elif getattr(model, "hub_repo_id", None):
                header = _hub_safetensors_header(
                    model.hub_repo_id, member.weights, getattr(model, "hub_revision", None)
                )
            else:
                return None
            stats.append(weight_stats(header))
    except Exception:  # a size panel is not worth failing the demo over (I/O, network, format)
        return None
    return stats


# -------------------------------------------------------------- model panel
def unseen_domains(model: Any) -> list[str]:
    return _as_list((model.config.training or {}).get("test_domains"))


def _accuracies(config: Any, held_out: bool) -> str:
    domains = (config.metrics or {}).get("domains") or {}
    test_domains = set(_as_list((config.training or {}).get("test_domains")))
    parts = []
    for name, entry in domains.items():
        if not isinstance(entry, dict):
            continue
        if bool(entry.get("held_out", name in test_domains)) != held_out:
            continue
        text = f"{name} **{_pct(entry.get('accuracy'))}**"
        if entry.get("split"):
            text += f" · {entry['split']}"
        elif not held_out:
            text += " · images held out of training"
        parts.append(text)
    return ", ".join(parts)


def model_facts(model: Any, stats: list[WeightStats] | None = None) -> list[tuple[str, str]]:
    """(what, value) rows describing the model; ``stats`` from :func:`ensemble_weight_stats`."""
    config = model.config
    training = config.training or {}
    quant = config.quantization
    rows: list[tuple[str, str]] = []

    sources = ", ".join(_as_list(training.get("source_domains"))) or "n/a"
    if training.get("dataset"):
        sources += f" ({training['dataset']})"
    rows.append(("Trained on", sources))
    if unseen_domains(model):
        rows.append(("Never saw in training", ", ".join(unseen_domains(model))))
    if unseen := _accuracies(config, held_out=True):
        rows.append(("Accuracy on the unseen domain", unseen))
    if seen := _accuracies(config, held_out=False):
        rows.append(("Accuracy on the training domains", seen))

    recipe = []
    if training.get("algorithm"):
        recipe.append(
            _ALGORITHMS.get(str(training["algorithm"]).lower(), str(training["algorithm"]))
        )
    if training.get("steps"):
        recipe.append(f"{training['steps']} steps")
    if training.get("q_start") is not None and str(training.get("algorithm")).lower() == "qtdog":
        recipe.append(f"quantization from step {training['q_start']}")
    if recipe:
        rows.append(("Training", ", ".join(recipe)))
    height, width = config.preprocessing.size
    rows.append(("Architecture", f"{config.architecture}, {height}x{width} input"))
    rows.append((f"Classes ({len(model.labels)})", ", ".join(model.labels)))
    rows.append(
        (
            "Quantization",
            f"{quant.weight_bits}-bit weights ({quant.weight_scheme}, stored as "
            f"{quant.weight_storage}); activations {quant.activations}",
        )
    )
    rows.append(("Ensemble members", str(model.num_members)))
    if stats:
        stored = sum(s.stored_bytes for s in stats)
        as_float = sum(s.float32_bytes for s in stats)
        rows.append(
            (
                "Weights",
                f"**{_mb(stored)}** for the {len(stats)} members, versus {_mb(as_float)} as "
                f"float32 (**{as_float / max(stored, 1):.1f}x smaller**)",
            )
        )
    size = getattr(model, "size_bytes", None)
    if size:
        rows.append(
            ("Repository files on disk", _mb(size) + " (ONNX graphs and safetensors weights)")
        )
    return rows


def describe_model(model: Any) -> str:
    """Markdown for the "About this model" panel."""
    stats = ensemble_weight_stats(model)
    rows = model_facts(model, stats)
    table = "| Property | Value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    if not stats:
        return table
    per_member = stats[0].num_weights
    note = (
        f"Float32 size = weights × 4 bytes: {per_member:,} weights per member, counted in the "
        "members' safetensors files (int8 conv weights and the float tensors beside them; "
        "per-channel step sizes left out). The int8 size is the bytes those files store."
    )
    return f"{table}\n\n<sub>{note}</sub>"


# -------------------------------------------------------------- predictions
@dataclass
class Rendered:
    """What the demo shows for one image."""

    label: dict[str, float] | None  # for gr.Label: top-k label -> probability
    details: str  # markdown: member votes, agreement, warnings or the error
    result: dict[str, Any] | None  # machine-readable summary (JSON output)


def render_error(message: str) -> Rendered:
    text = (
        f"**Could not classify this image.** {message}\n\n"
        "Upload a photo, drawing or painting as PNG, JPEG, WebP, BMP or GIF."
    )
    return Rendered(label=None, details=text, result={"error": message})


def render_prediction(
    pred: Any,
    member_names: list[str],
    threshold: float = DEFAULT_AGREEMENT_THRESHOLD,
) -> Rendered:
    """Turn one successful SDK ``Prediction`` into the demo's outputs."""
    votes = list(pred.member_labels or [])
    if len(member_names) != len(votes):
        member_names = [f"member {i}" for i in range(len(votes))]
    agreeing = sum(v == pred.label for v in votes)
    uncertain = len(votes) > 1 and pred.agreement < threshold
    if len(votes) > 1:
        parts = [
            f"**Ensemble vote: {pred.label}**, {agreeing} of {len(votes)} members agree "
            f"(agreement {pred.agreement:.0%})."
        ]
    else:
        parts = [f"**Prediction: {pred.label}** (a single model: no ensemble vote)."]
    if uncertain:
        parts.append(
            f"⚠️ **The members disagree** (agreement {pred.agreement:.0%}, below {threshold:.0%}): "
            "this image may be outside what the model knows. Treat the prediction with caution."
        )
    if votes:
        parts.append(
            "| " + " | ".join(member_names) + " |\n"
            "|" + "---|" * len(votes) + "\n"
            "| " + " | ".join(votes) + " |"
        )
    return Rendered(
        label={item.label: float(item.score) for item in pred.top_k},
        details="\n\n".join(parts),
        result={
            "label": pred.label,
            "score": float(pred.score),
            "agreement": float(pred.agreement),
            "uncertain": bool(uncertain),
            "member_votes": dict(zip(member_names, votes, strict=True)),
            "top_k": [{"label": i.label, "score": float(i.score)} for i in pred.top_k],
            "error": None,
        },
    )
