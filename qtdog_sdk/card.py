"""Model card (README.md) with Hugging Face Hub metadata, rendered from config.json.

``config.metrics`` has this shape (every key optional; see docs/model-format.md)::

    {
      "dataset": {"name": "PACS", "hub_id": "flwrlabs/pacs"},   # or just "PACS"
      "selection": "training-domain validation",
      "domains": {
        "sketch": {"accuracy": 0.81, "split": "test", "held_out": true, "n": 3929},
        "photo":  {"accuracy": 0.97, "split": "val",  "held_out": false, "n": 334}
      }
    }

Accuracies are fractions in [0, 1]. Each domain becomes one ``model-index``
result, so the Hub shows per-domain accuracy.

Example::

    >>> from qtdog_sdk.card import render_model_card
    >>> text = render_model_card(config)              # doctest: +SKIP
    >>> text.startswith("---\\nlibrary_name: qtdog")   # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
from typing import Any

from qtdog_sdk.format import ModelConfig

__all__ = ["CARD_TAGS", "card_metadata", "dataset_info", "render_model_card"]

CARD_TAGS = ["qtdog", "quantization", "int8", "domain-generalization", "onnx"]


def dataset_info(config: ModelConfig) -> tuple[str | None, str | None]:
    """(display name, Hub dataset id) from ``metrics["dataset"]`` or ``training["dataset"]``."""
    raw = config.metrics.get("dataset") or config.training.get("dataset")
    if isinstance(raw, dict):
        name = raw.get("name") or raw.get("hub_id")
        return (str(name) if name else None), (str(raw["hub_id"]) if raw.get("hub_id") else None)
    if isinstance(raw, str) and raw:
        return raw, (raw if "/" in raw else None)
    return None, None


def _domains(config: ModelConfig) -> dict[str, dict[str, Any]]:
    raw = config.metrics.get("domains")
    if not isinstance(raw, dict):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, dict)}


def _model_name(config: ModelConfig, repo_id: str | None) -> str:
    if repo_id:
        return repo_id.split("/")[-1]
    name = config.training.get("name")
    return str(name) if name else f"qtdog-{config.architecture}"


def card_metadata(config: ModelConfig, repo_id: str | None = None) -> dict[str, Any]:
    """The YAML front matter of the card as a dict."""
    meta: dict[str, Any] = {
        "library_name": "qtdog",
        "license": "apache-2.0",
        "pipeline_tag": "image-classification",
        "tags": list(CARD_TAGS),
    }
    ds_name, ds_id = dataset_info(config)
    if ds_id or ds_name:
        meta["datasets"] = [ds_id or ds_name]
    results = []
    for domain, info in _domains(config).items():
        acc = info.get("accuracy")
        if not isinstance(acc, (int, float)):
            continue
        split = str(info.get("split", "test"))
        held = bool(info.get("held_out", False))
        kind = "held-out domain" if held else "source domain"
        results.append(
            {
                "task": {"type": "image-classification", "name": "Image Classification"},
                "dataset": {
                    "name": f"{ds_name or 'dataset'} ({domain})",
                    "type": ds_id or ds_name or "unknown",
                    "config": domain,
                    "split": split,
                },
                "metrics": [
                    {
                        "type": "accuracy",
                        "value": round(float(acc), 6),
                        "name": f"Accuracy ({kind} {domain})",
                    }
                ],
            }
        )
    if results:
        meta["model-index"] = [{"name": _model_name(config, repo_id), "results": results}]
    return meta


def _yaml(meta: dict[str, Any]) -> str:
    try:
        import yaml

        return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    except ImportError:  # pragma: no cover - PyYAML comes with huggingface_hub
        # JSON is valid YAML
        return json.dumps(meta, indent=2) + "\n"


def _fmt_acc(value: Any) -> str:
    return f"{100 * float(value):.1f}%" if isinstance(value, (int, float)) else "-"


def render_model_card(config: ModelConfig, repo_id: str | None = None) -> str:
    """Render README.md: YAML metadata for the Hub, then a human-readable card."""
    meta = card_metadata(config, repo_id)
    name = _model_name(config, repo_id)
    ds_name, _ = dataset_info(config)
    q = config.quantization
    pre = config.preprocessing
    load_id = repo_id or "path/to/this/repository"
    lines: list[str] = ["---", _yaml(meta).rstrip("\n"), "---", "", f"# {name}", ""]
    lines += [
        f"An ensemble of {len(config.members)} int8-quantized `{config.architecture}` image classifiers "
        f"trained with [QT-DoG](https://arxiv.org/abs/2410.06020) (quantization-aware training for domain "
        f"generalization){f' on {ds_name}' if ds_name else ''}. Prediction = softmax of the members' mean logits.",
        "",
        f"**Labels** ({config.num_classes}): " + ", ".join(f"`{label}`" for label in config.labels),
        "",
        "## Usage",
        "",
        "```bash",
        "pip install qtdog",
        f"qtdog predict image.jpg --model {load_id}",
        "```",
        "",
        "```python",
        "from qtdog_sdk import QTDoGEnsemble",
        "",
        f'model = QTDoGEnsemble.from_pretrained("{load_id}")',
        'print(model.predict("image.jpg").label)',
        "```",
        "",
    ]
    domains = _domains(config)
    if domains:
        lines += [
            "## Accuracy per domain",
            "",
            "| domain | role | split | accuracy | images |",
            "|---|---|---|---|---|",
        ]
        for domain, info in domains.items():
            role = "held out (unseen)" if info.get("held_out") else "source"
            lines.append(
                f"| {domain} | {role} | {info.get('split', '-')} | {_fmt_acc(info.get('accuracy'))} "
                f"| {info.get('n', '-')} |"
            )
        selection = config.metrics.get("selection") or config.training.get("selection")
        if selection:
            lines += ["", f"Model selection: {selection}."]
        lines.append("")
    measured = config.metrics.get("qtdog_eval")
    if measured:
        lines += [
            "Measured on this repository with the SDK:",
            "",
            "```bash",
            str(measured["command"]),
            "```",
            "",
        ]
        for domain, result in measured.get("results", {}).items():
            lines.append(
                f"- {domain}: {_fmt_acc(result.get('accuracy'))} ({result.get('n', '-')} images)"
            )
        lines.append("")
    lines += ["## Members", "", "| member | seed | source-val accuracy |", "|---|---|---|"]
    for m in config.members:
        lines.append(f"| {m.name} | {m.seed} | {_fmt_acc(m.val_acc)} |")
    lines += [
        "",
        "## Quantization and preprocessing",
        "",
        f"- Weights: {q.weight_bits}-bit, {q.weight_scheme}, stored as {q.weight_storage}",
        f"- Activations (ONNX): {q.activations}; graph format {q.onnx_format}",
        f"- Input: RGB, {pre.resize} to {pre.size[0]}x{pre.size[1]} ({pre.interpolation}), "
        f"scaled to [0, 1], mean {list(pre.mean)}, std {list(pre.std)}",
        f"- Files: `config.json` (format {config.format} v{config.format_version}), "
        + ", ".join(f"`{m.onnx}`" for m in config.members if m.onnx)
        + (f", `{config.ensemble_onnx}`" if config.ensemble_onnx else "")
        + ", "
        + ", ".join(f"`{m.weights}`" for m in config.members),
        "",
    ]
    command = config.training.get("command")
    if command or config.training:
        lines += ["## Training", ""]
        if command:
            lines += ["```bash", str(command), "```", ""]
        extra = {k: v for k, v in config.training.items() if k != "command"}
        if extra:
            lines += [
                "```json",
                json.dumps(extra, indent=2, sort_keys=True, default=str),
                "```",
                "",
            ]
    lines += [
        "## Citation",
        "",
        "```bibtex",
        "@inproceedings{javed2025qtdog,",
        "  title={{QT-DoG}: Quantization-aware Training for Domain Generalization},",
        "  author={Javed, Saqib and Le, Hieu and Salzmann, Mathieu},",
        "  booktitle={International Conference on Machine Learning (ICML)},",
        "  year={2025}",
        "}",
        "```",
        "",
    ]
    return "\n".join(lines)
