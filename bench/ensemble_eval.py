"""Mean-logit ensemble of selected checkpoints, as trained (float ERM or fake-quant QT-DoG).

Members may come from different run folders (``RUN`` or ``RUN:MEMBER``) as long as they share
the data protocol (dataset, held-out domains, trial seed, resolution). Prints each member and
the ensemble on the source holdout and the held-out domains, one JSON object per line:

    python bench/ensemble_eval.py runs/sweep/cpu112/erm/sketch/trial0 \\
        runs/pacs-sketch-erm-m3:1 runs/pacs-sketch-erm-m3:2 --out bench/results/erm_ensemble.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from qtdog_train.evaluation import evaluate_run, mean_logits
from qtdog_train.pipeline import load_run_data
from qtdog_train.trainer import load_selected_model

PROTOCOL_FIELDS = ("dataset", "test_domains", "trial_seed", "image_size", "holdout_fraction")


def parse_member(spec: str) -> tuple[Path, int]:
    run, _, member = spec.partition(":")
    return Path(run), int(member or 0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("members", nargs="+", help="RUN or RUN:MEMBER (member 0 by default)")
    parser.add_argument("--out", type=Path, help="write every line as one JSON document here")
    args = parser.parse_args()
    specs = [parse_member(s) for s in args.members]
    loaded = [load_selected_model(run, member) for run, member in specs]
    first = loaded[0][0]
    for (run, _), (cfg, _) in zip(specs, loaded, strict=True):
        differs = [f for f in PROTOCOL_FIELDS if getattr(cfg, f) != getattr(first, f)]
        if differs:
            raise SystemExit(f"{run}: {', '.join(differs)} differ from {specs[0][0]}")
    data = load_run_data(first, torch.device("cpu"))
    models = [model for _, model in loaded]
    rows = []
    with torch.inference_mode():
        for (run, member), model in zip(specs, models, strict=True):
            rows.append({"member": f"{run}:{member}", **evaluate_run(model, data)})
            print(json.dumps(rows[-1]), flush=True)
        ensemble = mean_logits(models)
        rows.append({"member": f"ensemble of {len(models)}", **evaluate_run(ensemble, data)})
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
