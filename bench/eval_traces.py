"""Evaluation traces of single-member runs: how far held-out accuracy moves between checkpoints.

A run reports the held-out accuracy of one checkpoint, the one source validation picks. This
script reads every evaluation of each run (``member-0/log.jsonl``) and prints, per run, that
selected number beside the last evaluation's, and how much held-out and source-validation
accuracy change from one evaluation to the next from ``--after`` on. When consecutive
checkpoints differ by as much as two arms do, one selected checkpoint per run cannot tell the
arms apart. It is analysis only: nothing here is chosen from held-out numbers.

    tar -xzf bench/results/gpu_h200_2026-11-27/call8/runs.tgz -C /tmp/c8
    tar -xzf bench/results/gpu_h200_2026-11-27/call9/runs.tgz -C /tmp/c9
    python bench/eval_traces.py /tmp/c8 /tmp/c9 --arms erm qtdog --after 2000 \\
        --out docs/plots/gpu112-5k

With ``--pair ARM:BASELINE`` it also pairs the two arms' runs of each (domain, trial) step
by step: the mean difference at every common evaluation from ``--after`` on, held out and
source val, so a difference at the selected checkpoints can be told from one that holds at
every checkpoint (``--trial-seeds`` keeps only those trials).

Only finished runs count (a ``member-0/report.json``, whose ``best_step`` is the selected
checkpoint). Roots are read in order; a run found under a later root replaces the same (arm,
domain, trial) from an earlier one. Writes ``traces.md`` and ``traces_<domain>.png`` (held-out accuracy per
evaluation, the selected checkpoint circled) when ``--out`` is given.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path
from typing import NamedTuple

from aggregate import add_pair_option, mean_se, read_jsonl

RunKey = tuple[str, str, int]  # (arm, held-out domain, trial seed)


class Trace(NamedTuple):
    evaluations: list[dict]  # the periodic evaluations, in step order (switch events left out)
    best_step: int  # the checkpoint the trainer selected (report.json)


def find_runs(
    roots: list[Path], arms: list[str], trials: list[int] | None = None
) -> dict[RunKey, Trace]:
    """Every finished single-member run's trace under ``root/<arm>/<domain>/trial<k>/member-0``
    (only trial seeds in ``trials``, when given)."""
    runs: dict[RunKey, Trace] = {}
    for root in roots:
        for arm in arms:
            for report in sorted((root / arm).glob("*/trial*/member-0/report.json")):
                trial_dir = report.parent.parent
                key = (arm, trial_dir.parent.name, int(trial_dir.name.removeprefix("trial")))
                if trials is not None and key[2] not in trials:
                    continue
                records = read_jsonl(report.parent / "log.jsonl")
                evaluations = [r for r in records if "test_acc" in r and "event" not in r]
                runs[key] = Trace(evaluations, json.loads(report.read_text())["best_step"])
    return runs


def mean_step_change(records: list[dict], field: str, after: int) -> float:
    """Mean absolute change of ``field`` between consecutive evaluations at steps >= after."""
    values = [r[field] for r in records if r["step"] >= after]
    changes = [abs(b - a) for a, b in itertools.pairwise(values)]
    return statistics.fmean(changes) if changes else float("nan")


def trace_row(trace: Trace, after: int) -> dict:
    """What one run's trace says: the selected checkpoint against the last one, and the
    step-to-step movement."""
    records = trace.evaluations
    selected = next(r for r in records if r["step"] == trace.best_step)
    return {
        "selected_step": selected["step"],
        "selected_test": selected["test_acc"],
        "last_step": records[-1]["step"],
        "last_test": records[-1]["test_acc"],
        "test_change": mean_step_change(records, "test_acc", after),
        "val_change": mean_step_change(records, "val_acc", after),
    }


def paired_by_step(
    runs: dict[RunKey, Trace], arm: str, baseline: str, after: int
) -> dict[int, dict[str, list[float]]]:
    """Per evaluation step >= ``after``: arm minus baseline over the (domain, trial) pairs
    both arms finished, held out (``test``) and source val (``val``)."""
    steps: dict[int, dict[str, list[float]]] = {}
    for (a, domain, trial), trace in sorted(runs.items()):
        twin = runs.get((baseline, domain, trial))
        if a != arm or twin is None:
            continue
        base = {r["step"]: r for r in twin.evaluations}
        for record in trace.evaluations:
            other = base.get(record["step"])
            if record["step"] < after or other is None:
                continue
            diffs = steps.setdefault(record["step"], {"test": [], "val": []})
            diffs["test"].append(record["test_acc"] - other["test_acc"])
            diffs["val"].append(record["val_acc"] - other["val_acc"])
    return dict(sorted(steps.items()))


def pct(value: float) -> str:
    return f"{100 * value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("roots", type=Path, nargs="+", help="folders holding <arm>/<domain>/...")
    parser.add_argument("--arms", nargs="+", default=["erm", "qtdog"])
    parser.add_argument("--after", type=int, default=0, help="first step of the movement stats")
    add_pair_option(parser, "step-by-step paired difference of two of --arms (repeatable)")
    parser.add_argument("--trial-seeds", type=int, nargs="+", help="only these trials")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    for root in args.roots:
        if not root.is_dir():
            parser.error(f"{root}: no such folder")
    runs = find_runs(args.roots, args.arms, args.trial_seeds)
    if not runs:
        parser.error(f"no finished run (member-0/report.json) of {args.arms} under {args.roots}")
    rows = {key: trace_row(trace, args.after) for key, trace in sorted(runs.items())}

    lines = [
        f"| arm | held out | trial | selected step | test at selected | last step | test at last "
        f"| mean step-to-step change from step {args.after}: test | source val |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (arm, domain, trial), row in rows.items():
        lines.append(
            f"| {arm} | {domain} | {trial} | {row['selected_step']} | {pct(row['selected_test'])} "
            f"| {row['last_step']} | {pct(row['last_test'])} | {pct(row['test_change'])} "
            f"| {pct(row['val_change'])} |"
        )
    lines.append("")
    for arm in args.arms:
        mine = [row for (a, _, _), row in rows.items() if a == arm]
        if not mine:
            continue
        test_mean, test_se = mean_se([row["test_change"] for row in mine])
        val_mean, _ = mean_se([row["val_change"] for row in mine])
        last_minus_selected = [row["last_test"] - row["selected_test"] for row in mine]
        lines.append(
            f"- {arm}: {len(mine)} runs; held-out accuracy moves {pct(test_mean)} ± "
            f"{pct(test_se)} points per evaluation (source val {pct(val_mean)}); last minus "
            f"selected checkpoint {pct(statistics.fmean(last_minus_selected))} points"
        )
    for arm, baseline in args.pair:
        lines += [
            "",
            f"| step | {arm} - {baseline}: held out | source val | pairs |",
            "|---|---|---|---|",
        ]
        for step, diffs in paired_by_step(runs, arm, baseline, args.after).items():
            (test, test_se), (val, val_se) = mean_se(diffs["test"]), mean_se(diffs["val"])
            lines.append(
                f"| {step} | {pct(test)} ± {pct(test_se)} | {pct(val)} ± {pct(val_se)} "
                f"| {len(diffs['test'])} |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is None:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "traces.md").write_text(text)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for domain in sorted({d for _, d, _ in runs}):
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for (arm, d, trial), trace in sorted(runs.items()):
            if d != domain:
                continue
            steps = [r["step"] for r in trace.evaluations]
            tests = [100 * r["test_acc"] for r in trace.evaluations]
            (line,) = ax.plot(steps, tests, marker=".", label=f"{arm}, trial {trial}")
            row = rows[(arm, d, trial)]
            ax.plot(
                row["selected_step"], 100 * row["selected_test"], "o", markersize=10,
                markerfacecolor="none", color=line.get_color(),
            )  # fmt: skip
        ax.set_xlabel("step")
        ax.set_ylabel("held-out accuracy (%)")
        ax.set_title(f"PACS, {domain} held out (circle: selected by source val)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.out / f"traces_{domain}.png", dpi=120)
        plt.close(fig)


if __name__ == "__main__":
    main()
