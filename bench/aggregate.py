"""Aggregate sweep results: mean +- standard error per arm and held-out domain, a markdown table,
and a bar chart (PNG) per domain.

Two paired tables follow the first: every arm minus ERM (and each ``--pair``) on the same
held-out domain and trial seed, and the same comparisons on the average over held-out domains
paired by trial seed (only trials both arms finished on every domain count).

    python bench/aggregate.py bench/results/sweep_cpu112.jsonl --out docs/plots/cpu112
    python bench/aggregate.py bench/results/sweep_gpu112.jsonl --out docs/plots/gpu112 \\
        --pair eoq5-fq:erm5 --pair qtdog-b4:qtdog
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a .jsonl file (blank lines skipped)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, se


def fmt(values: list[float], digits: int = 1) -> str:
    if not values:
        return "-"
    mean, se = mean_se(values)
    return (
        f"{100 * mean:.{digits}f}"
        + ("" if math.isnan(se) else f" ± {100 * se:.{digits}f}")
        + f" (n={len(values)})"
    )


def paired_row(rows: list[dict], arm: str, baseline: str) -> str | None:
    """One markdown row: ``arm`` minus ``baseline`` on the same held-out domain and trial
    seed, on the held-out domain and on the source holdout, or None when no such pair exists.

    Pairing removes the split's difficulty from the comparison; only pairs present for
    both arms count, so a partly finished sweep still compares like with like. The
    source-validation difference is the one a decision may use.
    """
    base = {(r["test_domain"], r["trial_seed"]): r for r in rows if r["arm"] == baseline}
    pairs = [
        (r, base[(r["test_domain"], r["trial_seed"])])
        for r in rows
        if r["arm"] == arm and (r["test_domain"], r["trial_seed"]) in base
    ]
    if not pairs:
        return None
    diffs = [r["test_acc"] - b["test_acc"] for r, b in pairs]
    val_diffs = [
        r["val_acc"] - b["val_acc"]
        for r, b in pairs
        if r.get("val_acc") is not None and b.get("val_acc") is not None
    ]
    names = ", ".join(f"{r['test_domain'][:1]}{r['trial_seed']}" for r, _ in pairs)
    return (
        f"| {arm} - {baseline} | {fmt(diffs).replace(' (n=', ' (pairs=')} | "
        f"{sum(d > 0 for d in diffs)} / {len(diffs)} | "
        f"{fmt(val_diffs).replace(' (n=', ' (pairs=')} | {names} |"
    )


def paired_table(rows: list[dict], comparisons: list[tuple[str, str]]) -> list[str]:
    """Markdown table of the (arm, baseline) comparisons that have pairs."""
    lines = [line for arm, base in comparisons if (line := paired_row(rows, arm, base))]
    header = [
        "| comparison (paired) | held-out difference (points) | wins / pairs "
        "| source-val difference (points) | pairs |",
        "|---|---|---|---|---|",
    ]
    return header + lines if lines else []


def complete_trials(rows: list[dict], arm: str, domains: list[str]) -> dict[int, dict[str, dict]]:
    """``arm``'s rows by trial seed and held-out domain, keeping only the trials that have a row
    for every one of ``domains`` (the ones an average over domains may use)."""
    cells: dict[int, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        if r["arm"] == arm:
            cells[r["trial_seed"]][r["test_domain"]] = r
    return {t: c for t, c in cells.items() if all(d in c for d in domains)}


def paired_average_row(rows: list[dict], arm: str, baseline: str, domains: list[str]) -> str | None:
    """One markdown row: ``arm`` minus ``baseline`` on the average over every held-out
    domain, paired by trial seed (two decimals), or None when no trial is complete for both.

    This is the paper's headline measure (the PACS average), with its standard error over
    trials rather than over (domain, trial) pairs: only trials in which both arms finished
    every domain count.
    """
    ours, theirs = complete_trials(rows, arm, domains), complete_trials(rows, baseline, domains)
    trials = sorted(set(ours) & set(theirs))
    if not trials:
        return None

    def average_diff(trial: int, key: str) -> float:
        return statistics.fmean(ours[trial][d][key] - theirs[trial][d][key] for d in domains)

    diffs = [average_diff(t, "test_acc") for t in trials]
    val_diffs = [
        average_diff(t, "val_acc")
        for t in trials
        if all(c[t][d].get("val_acc") is not None for c in (ours, theirs) for d in domains)
    ]
    return (
        f"| {arm} - {baseline} | {fmt(diffs, 2).replace(' (n=', ' (trials=')} | "
        f"{sum(d > 0 for d in diffs)} / {len(diffs)} | "
        f"{fmt(val_diffs, 2).replace(' (n=', ' (trials=')} | "
        + ", ".join(str(t) for t in trials)
        + " |"
    )


def paired_average_table(
    rows: list[dict], comparisons: list[tuple[str, str]], domains: list[str]
) -> list[str]:
    """Markdown table of the comparisons that have a trial complete for both arms."""
    lines = [
        line for arm, base in comparisons if (line := paired_average_row(rows, arm, base, domains))
    ]
    header = [
        "| comparison (average over held-out domains, paired by trial) "
        "| held-out difference (points) | wins / trials | source-val difference (points) "
        "| trials |",
        "|---|---|---|---|---|",
    ]
    return header + lines if lines else []


def comparison(text: str) -> tuple[str, str]:
    arm, sep, baseline = text.partition(":")
    if not sep or not arm or not baseline:
        raise argparse.ArgumentTypeError(f"--pair {text!r}: expected ARM:BASELINE")
    return arm, baseline


def add_pair_option(parser: argparse.ArgumentParser, help: str) -> None:
    """The repeatable ``--pair ARM:BASELINE`` option (a list of (arm, baseline) tuples)."""
    parser.add_argument(
        "--pair", type=comparison, action="append", default=[], metavar="ARM:BASELINE", help=help
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "results", type=Path, nargs="+", help="results.jsonl files from bench/sweep.py"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for table.md, summary.json, charts"
    )
    add_pair_option(
        parser, "a paired comparison besides every arm - erm (repeatable), e.g. eoq5-fq:erm5"
    )
    args = parser.parse_args()
    rows = [row for path in args.results for row in read_jsonl(path)]
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        acc[row["arm"]][row["test_domain"]].append(row["test_acc"])
    domains = sorted({r["test_domain"] for r in rows})
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    lines = ["| arm | " + " | ".join(domains) + " | avg |", "|---" * (len(domains) + 2) + "|"]
    summary = {}
    for arm in arms:
        complete = [
            statistics.fmean(cells[d]["test_acc"] for d in domains)
            for cells in complete_trials(rows, arm, domains).values()
        ]
        lines.append(
            f"| {arm} | " + " | ".join(fmt(acc[arm][d]) for d in domains) + f" | {fmt(complete)} |"
        )
        summary[arm] = {d: mean_se(acc[arm][d]) for d in domains if acc[arm][d]}
    comparisons = [(arm, "erm") for arm in arms if arm != "erm"] + args.pair
    if paired := paired_table(rows, comparisons):
        lines += ["", *paired]
    if averages := paired_average_table(rows, comparisons, domains):
        lines += ["", *averages]
    args.out.mkdir(parents=True, exist_ok=True)
    table = "\n".join(lines) + "\n"
    (args.out / "table.md").write_text(table)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(table)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for domain in domains:
        present = [a for a in arms if acc[a][domain]]
        means = [100 * mean_se(acc[a][domain])[0] for a in present]
        errors = [
            100 * (lambda se: 0 if math.isnan(se) else se)(mean_se(acc[a][domain])[1])
            for a in present
        ]
        fig, ax = plt.subplots(figsize=(1.2 * len(present) + 2, 3.2))
        ax.bar(present, means, yerr=errors, capsize=4, color="#4c72b0")
        ax.set_ylabel("held-out accuracy (%)")
        ax.set_title(f"PACS, {domain} held out")
        ax.set_ylim(max(0, min(means) - 10), min(100, max(means) + 5))
        fig.tight_layout()
        fig.savefig(args.out / f"bars_{domain}.png", dpi=120)
        plt.close(fig)


if __name__ == "__main__":
    main()
