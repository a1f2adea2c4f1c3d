"""Package a trained model repository compactly, measured with the SDK's own ``qtdog eval``.

``ensemble.onnx`` already holds every member, so the per-member ONNX files
are dropped (``"onnx": null`` in config.json), exporter metadata is
stripped and stride-2 pads folded into their convs (output-identical; see
``fold_pads_into_convs``); the safetensors stay for the torch backend. The held-out-domain accuracy is measured on the packaged copy
through the SDK (the code path ``qtdog eval`` runs) and written into the card
with the command that reproduces it. This is how the SDK's embedded default
model is made::

    python -m qtdog_train.package runs/pacs-sketch-qtdog-eoq5/model qtdog_sdk/assets/default_model \\
        --data ../shared/data/PACS --domain sketch
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from qtdog_sdk.card import render_model_card
from qtdog_sdk.format import CARD_NAME, ModelConfig, read_config, verify_files, write_config
from qtdog_train.convert.onnx_export import fold_pads_into_convs, strip_metadata


def compact_repository(src: Path, dst: Path) -> ModelConfig:
    """Copy ``src`` to ``dst`` without per-member ONNX files when a merged graph exists."""
    config = read_config(src)
    verify_files(src, config)
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    keep = [m.weights for m in config.members]
    if config.ensemble_onnx:
        keep.append(config.ensemble_onnx)
        for member in config.members:
            member.onnx = None
    else:
        keep += [m.onnx for m in config.members if m.onnx]
    for name in keep:
        shutil.copy2(src / name, dst / name)
        if name.endswith(".onnx"):
            strip_metadata(dst / name)
            fold_pads_into_convs(dst / name)
    write_config(dst, config)
    (dst / CARD_NAME).write_text(render_model_card(config), encoding="utf-8")
    return config


def record_eval(repo: Path, data: Path, domains: list[str], command: str) -> ModelConfig:
    """Evaluate ``repo`` with the SDK on ``domains`` and store the results in its config and card."""
    from qtdog_sdk import QTDoGEnsemble
    from qtdog_sdk.evaluate import evaluate_domain

    model = QTDoGEnsemble.from_pretrained(repo, backend="onnx")
    config = read_config(repo)
    results = {}
    for domain in domains:
        result = evaluate_domain(model, data, domain)
        results[domain] = {"accuracy": result["accuracy"], "n": result["n"]}
    config.metrics["qtdog_eval"] = {"command": command, "results": results}
    write_config(repo, config)
    (repo / CARD_NAME).write_text(render_model_card(config), encoding="utf-8")
    return config


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument(
        "--data", type=Path, required=True, help="DomainBed-layout root to evaluate on"
    )
    parser.add_argument("--domain", nargs="+", default=["sketch"])
    args = parser.parse_args()
    compact_repository(args.src, args.dst)
    command = f"qtdog eval {args.dst} --data {args.data} --domain {' --domain '.join(args.domain)}"
    config = record_eval(args.dst, args.data, args.domain, command)
    for domain, r in config.metrics["qtdog_eval"]["results"].items():
        print(f"{domain}: {100 * r['accuracy']:.2f}% of {r['n']} images")


if __name__ == "__main__":
    main()
