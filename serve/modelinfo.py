"""What the demo shows about a model and its predictions, without Gradio.

Everything here works on the SDK's public objects (``QTDoGEnsemble``,
``Prediction``) and plain data, so it is importable and testable without the
``demo`` extra.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Below this fraction of members voting for the ensemble's label, the demo
# warns that the image may lie outside what the model knows.
DEFAULT_AGREEMENT_THRESHOLD = 0.6

# Tensors in a member's safetensors file that hold quantization parameters,
# not weights of the network; they are left out of the float32 comparison.
_QUANT_PARAM_SUFFIXES = ("scale", "scales", "zero_point", "zero_points", "step_size")

# Bytes per element of the safetensors dtypes a member file can hold.
_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


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


def model_dir(model: Any) -> Path | None:
    """The local directory the model was loaded from, if the SDK tells."""
    for attr in ("path", "repo_dir", "local_dir", "root"):
        value = getattr(model, attr, None)
        if value is not None and Path(value).is_dir():
            return Path(value)
    return None


def safetensors_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes); no data is read."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > 100_000_000:
            raise ValueError(f"{path}: implausible safetensors header")
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return header


@dataclass
class WeightStats:
    """Weights of one ensemble member, counted from its safetensors file."""

    num_weights: int  # elements of every tensor except quantization parameters
    num_int8: int  # of which stored as 8-bit integers
    stored_bytes: int  # file size

    @property
    def float32_bytes(self) -> int:
        return self.num_weights * 4


def member_weight_stats(path: str | Path) -> WeightStats:
    """Count the weights in a member's safetensors file from its header."""
    total = int8 = 0
    for name, meta in safetensors_header(path).items():
        if name.lower().endswith(_QUANT_PARAM_SUFFIXES):
            continue
        count = 1
        for dim in meta.get("shape", []):
            count *= int(dim)
        total += count
        if meta.get("dtype") in ("I8", "U8"):
            int8 += count
    return WeightStats(num_weights=total, num_int8=int8, stored_bytes=Path(path).stat().st_size)


def ensemble_weight_stats(model: Any) -> list[WeightStats] | None:
    """Per-member weight counts, or None when the member files are not reachable."""
    root = model_dir(model)
    if root is None:
        return None
    try:
        return [member_weight_stats(root / m.weights) for m in model.config.members]
    except (OSError, ValueError, KeyError, struct.error):
        return None


def held_out_accuracies(config: Any) -> dict[str, Any]:
    """Domain -> accuracy for the domains the model never trained on."""
    domains = (config.metrics or {}).get("domains") or {}
    test_domains = set(_as_list((config.training or {}).get("test_domains")))
    return {
        name: entry.get("accuracy")
        for name, entry in domains.items()
        if isinstance(entry, dict) and (entry.get("held_out") or name in test_domains)
    }


def describe_model(model: Any) -> str:
    """Markdown for the "About this model" panel."""
    config = model.config
    training = config.training or {}
    quant = config.quantization
    sources = _as_list(training.get("source_domains"))
    targets = _as_list(training.get("test_domains"))
    dataset = training.get("dataset")
    lines: list[str] = []

    trained = f"**Trained on:** {', '.join(sources) if sources else 'n/a'}"
    if dataset:
        trained += f" ({dataset})"
    lines.append(trained)
    if targets:
        lines.append(f"**Never saw during training:** {', '.join(targets)}")
    held_out = held_out_accuracies(config)
    if held_out:
        accs = ", ".join(f"{name} {_pct(acc)}" for name, acc in held_out.items())
        lines.append(f"**Accuracy on the unseen domain:** {accs}")
    domains = (config.metrics or {}).get("domains") or {}
    seen = {
        n: e.get("accuracy")
        for n, e in domains.items()
        if isinstance(e, dict) and n not in held_out
    }
    if seen:
        lines.append(
            "**Accuracy on the training domains (held-out images):** "
            + ", ".join(f"{n} {_pct(a)}" for n, a in seen.items())
        )
    recipe = [str(training[k]) for k in ("algorithm",) if training.get(k)]
    if training.get("steps"):
        recipe.append(f"{training['steps']} steps")
    lines.append(
        f"**Architecture:** {config.architecture}" + (f" ({', '.join(recipe)})" if recipe else "")
    )
    lines.append(f"**Classes ({len(model.labels)}):** {', '.join(model.labels)}")
    lines.append(
        f"**Quantization:** {quant.weight_bits}-bit weights ({quant.weight_scheme}, stored as "
        f"{quant.weight_storage}), activations {quant.activations}"
    )
    lines.append(f"**Ensemble members:** {model.num_members}")

    size = getattr(model, "size_bytes", None)
    stats = ensemble_weight_stats(model)
    if stats:
        n_weights = sum(s.num_weights for s in stats)
        stored = sum(s.stored_bytes for s in stats)
        as_float = sum(s.float32_bytes for s in stats)
        lines.append(
            f"**Size:** {_mb(stored)} of member weights on disk versus {_mb(as_float)} "
            f"as float32 ({as_float / max(stored, 1):.1f}x smaller)"
            + (f"; the whole repository, ONNX graphs included, is {_mb(size)}" if size else "")
        )
        lines.append(
            f"<sub>Float32 size = the {n_weights:,} weights counted in the members' safetensors "
            f"files ({n_weights // len(stats):,} per member, quantization scales excluded) × 4 bytes.</sub>"
        )
    elif size:
        lines.append(f"**Size on disk:** {_mb(size)}")
    return "\n\n".join(lines)


def unseen_domains(model: Any) -> list[str]:
    return _as_list((model.config.training or {}).get("test_domains"))


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
    names = (
        member_names
        if len(member_names) == len(votes)
        else [f"member {i}" for i in range(len(votes))]
    )
    agreeing = sum(v == pred.label for v in votes)
    uncertain = len(votes) > 1 and pred.agreement < threshold
    parts = []
    if len(votes) > 1:
        parts.append(
            f"**Ensemble vote: {pred.label}**, {agreeing} of {len(votes)} members agree "
            f"(agreement {pred.agreement:.0%})."
        )
    else:
        parts.append(f"**Prediction: {pred.label}** (a single model: no ensemble vote).")
    if uncertain:
        parts.append(
            f"⚠️ **The members disagree** (agreement {pred.agreement:.0%}, below {threshold:.0%}): "
            "this image may be outside what the model knows. Treat the prediction with caution."
        )
    if votes:
        rows = "\n".join(f"| {name} | {vote} |" for name, vote in zip(names, votes, strict=True))
        parts.append("| member | vote |\n|---|---|\n" + rows)
    return Rendered(
        label={item.label: float(item.score) for item in pred.top_k},
        details="\n\n".join(parts),
        result={
            "label": pred.label,
            "score": float(pred.score),
            "agreement": float(pred.agreement),
            "uncertain": bool(uncertain),
            "member_votes": dict(zip(names, votes, strict=True)),
            "top_k": [{"label": i.label, "score": float(i.score)} for i in pred.top_k],
            "error": None,
        },
    )
