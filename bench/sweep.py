"""The PACS sweep: arms x held-out domains x trial seeds, resumable, appending results.

Every run goes to ``OUT/<protocol>/<arm>/<domain>/trial<k>/``; a run whose
``summary.json`` exists is skipped, an interrupted one resumes from its
checkpoints, so a long sweep can be completed across several sessions or GPU
loans. Each finished run appends one JSON line to ``OUT/<protocol>/results.jsonl``;
``bench/aggregate.py`` turns that file into tables and charts.

Arms (all under one protocol: resolution, steps, q_start, batch, lr):
  erm              DomainBed ERM (float; target accuracy of the selected checkpoint)
  qtdog            QT-DoG, LSQ on every conv from q_start (paper behaviour, fake-quant model)
  qtdog-official   QT-DoG --official-compat (the released code's behaviour)
  eoq5             5 QT-DoG members, int8 ONNX ensemble (mean logits); member 0 is
                   the qtdog arm's run when that is finished (identical training)
  eoq5-fq          the same 5 QT-DoG members, nothing converted: their fake-quant
                   ensemble (mean logits), for GPU loans too short for five int8
                   conversions on the CPU; member 0 is the qtdog arm's run
  erm5             5 ERM members, float ensemble (mean logits): the ensemble without
                   quantization, so EoQ's gain can be split into ensembling and QT-DoG;
                   member 0 is the erm arm's run
  qtdog-b8 .. -b4  bit-width ablation
  qtdog-slrN       step-size learning rate N x lr (default: = lr)
  qtdog-nodw       LSQ on every conv except the depthwise ones (which layers are quantized)
  qtdog-linear     step sizes learned as s (the paper) instead of log s (--s-param linear)

With ``--share-float-phase`` the single-member QT-DoG variants (qtdog-official, -bN, -slrN,
-nodw, -linear) and erm start from the qtdog run's checkpoint at the switch when it exists, so such
an arm and QT-DoG share the float phase exactly and their pair differs only after the
switch (list qtdog before them in ``--arms``). ERM started there trains on in float and,
like the QT-DoG arms, selects among the evaluations after the switch.

CPU protocol (hours on 2 cores):
    python bench/sweep.py --data ../shared/data/PACS --protocol cpu112 --image-size 112 --steps 600 --q-start 240 --eval-every 100
Full protocol on a CUDA GPU:
    python bench/sweep.py --data PACS --protocol full224 --image-size 224 --steps 5000 --q-start 2000 --eval-every 250 --device cuda --trial-seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtdog_train.config import TrainConfig
from qtdog_train.data.datasets import KNOWN_DATASETS
from qtdog_train.trainer import CHECKPOINT_NAME, FLOAT_PHASE_NAME, LOG_NAME

ARMS = (
    "erm",
    "qtdog",
    "qtdog-official",
    "eoq5",
    "eoq5-fq",
    "erm5",
    "qtdog-b8",
    "qtdog-b6",
    "qtdog-b5",
    "qtdog-b4",
    "qtdog-slr10",
    "qtdog-slr100",
    "qtdog-nodw",
    "qtdog-linear",
)


def arm_config(arm: str, base: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig fields of one arm on top of the shared protocol."""
    cfg = dict(base)
    if arm == "erm":
        cfg.update(algorithm="erm", bits=8, members=1, export=False)
    elif arm == "qtdog":
        cfg.update(algorithm="qtdog", members=1, export=False)
    elif arm == "qtdog-official":
        cfg.update(algorithm="qtdog", official_compat=True, members=1, export=False)
    elif arm == "eoq5":
        cfg.update(algorithm="qtdog", members=5, export=True)
    elif arm == "eoq5-fq":
        cfg.update(algorithm="qtdog", members=5, export=False)
    elif arm == "erm5":
        cfg.update(algorithm="erm", bits=8, members=5, export=False)
    elif arm == "qtdog-nodw":
        cfg.update(algorithm="qtdog", quantized_layers="no-depthwise", members=1, export=False)
    elif arm == "qtdog-linear":
        cfg.update(algorithm="qtdog", s_param="linear", members=1, export=False)
    elif match := re.fullmatch(r"qtdog-b(\d)", arm):
        cfg.update(algorithm="qtdog", bits=int(match.group(1)), members=1, export=False)
    elif match := re.fullmatch(r"qtdog-slr(\d+)", arm):
        cfg.update(algorithm="qtdog", s_lr=int(match.group(1)) * cfg["lr"], members=1, export=False)
    else:
        raise SystemExit(f"unknown arm {arm!r}; choose from {', '.join(ARMS)}")
    return cfg


def result_line(arm: str, domain: str, trial: int, summary: dict[str, Any]) -> dict[str, Any]:
    """One results.jsonl line. ``seconds`` is the wall time of the invocation that finished
    the run (a resumed run counts only its resumed part); ``train_seconds`` adds up the
    members' training time over every invocation (their checkpoints carry it)."""
    member = summary["members"][0]
    train_seconds = [m.get("train_seconds") for m in summary["members"]]
    if "ensemble" in summary:
        test_acc, val_acc = summary["ensemble"]["test_acc"], summary["ensemble"]["val_acc"]
    else:
        test_acc, val_acc = member["selected"]["test_acc"], member["selected"]["val_acc"]
    switch = member.get("switch")
    return {
        "arm": arm,
        "test_domain": domain,
        "trial_seed": trial,
        "test_acc": test_acc,
        "val_acc": val_acc,
        "best_step": member["best_step"],
        "members": len(summary["members"]),
        "switch_val_drop": None
        if not switch
        else switch["before"]["val_acc"] - switch["after"]["val_acc"],
        "seconds": summary.get("seconds"),
        "train_seconds": None if None in train_seconds else sum(train_seconds),
    }


#: Ensemble arm -> the single-member arm whose finished run is its member 0.
MEMBER_ZERO_FROM = {"eoq5": "qtdog", "eoq5-fq": "qtdog", "erm5": "erm"}


def _start_member_zero(checkpoint: Path, target_run: Path) -> bool:
    """Give ``target_run`` a member 0 that resumes from ``checkpoint`` (with the log beside
    it; the trainer keeps only what precedes the checkpoint), once: only while the target
    has no member folder. Returns whether it copied."""
    target = target_run / "member-0"
    if target.exists():
        return False
    target.mkdir(parents=True)
    shutil.copy2(checkpoint, target / CHECKPOINT_NAME)
    shutil.copy2(checkpoint.parent / LOG_NAME, target / LOG_NAME)
    return True


def reuse_member_zero(single_run: Path, ensemble_run: Path) -> None:
    """An ensemble's member 0 is the single-member arm's run (same config, seed and data):
    copy it, once.

    The ensemble then trains members 1-4 only; member 0's checkpoint is final, so
    resuming it goes straight to conversion (or evaluation).
    """
    finished = (single_run / "summary.json").is_file()
    if finished and _start_member_zero(single_run / "member-0" / CHECKPOINT_NAME, ensemble_run):
        print(f"{ensemble_run}: member 0 reused from {single_run}", flush=True)


#: The run whose checkpoint at the switch the float-phase sharers start from.
FLOAT_PHASE_FROM = "qtdog"


def is_qtdog_variant(arm: str) -> bool:
    return arm == "qtdog-official" or bool(re.fullmatch(r"qtdog-(b\d|slr\d+|nodw|linear)", arm))


def shares_float_phase(arm: str) -> bool:
    """Single-member arms that train exactly like ``qtdog`` until its switch: its variants,
    and ERM (the same float training, which simply goes on)."""
    return arm == "erm" or is_qtdog_variant(arm)


def reuse_float_phase(reference_run: Path, variant_run: Path) -> bool:
    """Start a float-phase sharer from the reference run's checkpoint at the switch (its
    float phase), once: only a run with no member folder yet, and only when the reference
    has passed its switch. Returns whether it copied."""
    float_phase = reference_run / "member-0" / FLOAT_PHASE_NAME
    copied = float_phase.is_file() and _start_member_zero(float_phase, variant_run)
    if copied:
        print(f"{variant_run}: float phase reused from {reference_run}", flush=True)
    return copied


def progress_printer(label: str, steps: int) -> Callable[[str, dict[str, Any]], None]:
    """A ``run`` reporter that prints one line per evaluation, the quantizer switch and each
    ensemble member's start, so an hour-long CPU run shows where it is.

    Only the source-domain validation accuracy is printed while a run trains: the held-out
    accuracy appears once, in the run's result line (nothing to steer a run by)."""

    def report(event: str, payload: dict[str, Any]) -> None:
        if event == "member_start" and payload["members"] > 1:
            print(f"{label}: member {payload['member'] + 1}/{payload['members']}", flush=True)
        elif event == "switch":
            before, after = payload["before"]["val_acc"], payload["after"]["val_acc"]
            print(
                f"{label}: LSQ on at step {payload['step']}, source val "
                f"{100 * before:.1f} -> {100 * after:.1f}",
                flush=True,
            )
        elif event == "step" and "val_acc" in payload:
            print(
                f"{label}: step {payload['step']}/{steps} loss {payload['loss']:.3f} "
                f"source val {100 * payload['val_acc']:.1f} ({payload['elapsed']:.0f} s)",
                flush=True,
            )

    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True)
    parser.add_argument("--dataset", default="PACS")
    parser.add_argument(
        "--protocol", required=True, help="name of this protocol (a folder under --out)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    parser.add_argument("--arms", nargs="+", default=["erm", "qtdog", "qtdog-official", "eoq5"])
    parser.add_argument("--test-domains", nargs="+", default=None)
    parser.add_argument("--trial-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--q-start", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--s-init", default="mse")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="torch.compile the training step (auto: on CUDA); off pays no compile time per run",
    )
    parser.add_argument(
        "--results", type=Path, default=Path("bench/results"), help="where results.jsonl is copied"
    )
    parser.add_argument(
        "--share-float-phase",
        action="store_true",
        help="start erm and each QT-DoG variant arm from the qtdog run's checkpoint at the switch",
    )
    args = parser.parse_args()
    domains = args.test_domains or list(KNOWN_DATASETS.get(args.dataset, ()))
    base = {
        "data": args.data,
        "dataset": args.dataset,
        "image_size": args.image_size,
        "steps": args.steps,
        "q_start": args.q_start,
        "eval_every": args.eval_every,
        "checkpoint_every": args.eval_every,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "s_init": args.s_init,
        "device": args.device,
        "compile": args.compile,
    }
    from qtdog_train.pipeline import run

    root = args.out / args.protocol
    results = root / "results.jsonl"
    root.mkdir(parents=True, exist_ok=True)
    (root / "protocol.json").write_text(
        json.dumps(base | {"trial_seeds": args.trial_seeds}, indent=2)
    )
    for trial in args.trial_seeds:
        for domain in domains:
            for arm in args.arms:
                out = root / arm / domain / f"trial{trial}"
                if (out / "summary.json").is_file():
                    print(f"skip {arm} {domain} trial {trial}: done", flush=True)
                    continue
                if arm in MEMBER_ZERO_FROM:
                    single = root / MEMBER_ZERO_FROM[arm] / domain / f"trial{trial}"
                    reuse_member_zero(single, out)
                elif args.share_float_phase and shares_float_phase(arm):
                    reference = root / FLOAT_PHASE_FROM / domain / f"trial{trial}"
                    if not reuse_float_phase(reference, out) and not (out / "member-0").exists():
                        print(
                            f"{out}: no float phase in {reference}; trained from scratch",
                            flush=True,
                        )
                cfg = TrainConfig(
                    **arm_config(arm, base),
                    keep_float_phase=args.share_float_phase and arm == FLOAT_PHASE_FROM,
                    out=str(out),
                    test_domains=[domain],
                    trial_seed=trial,
                    seed=10 * trial,
                )
                started = time.time()
                summary = run(
                    cfg,
                    resume=(out / "run.json").is_file(),
                    report=progress_printer(f"{arm} {domain} trial {trial}", cfg.steps),
                )
                line = result_line(arm, domain, trial, summary)
                with results.open("a") as handle:
                    handle.write(json.dumps(line) + "\n")
                print(
                    f"{arm} {domain} trial {trial}: test {100 * line['test_acc']:.1f} "
                    f"(val {100 * line['val_acc']:.1f}) in {time.time() - started:.0f} s",
                    flush=True,
                )
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"sweep_{args.protocol}.jsonl").write_text(results.read_text())


if __name__ == "__main__":
    main()
