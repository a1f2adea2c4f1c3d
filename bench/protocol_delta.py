"""Does a protocol change move an arm's advantage? The paired difference of differences.

Two sweeps that differ in one protocol setting (resolution, schedule length) and share the
splits and trial seeds give, per (held-out domain, trial seed), ``arm - baseline`` under each.
This script pairs those per-(domain, trial) differences across the two protocols and reports
their difference, mean ± standard error, on the held-out domain and on source validation:

    python bench/protocol_delta.py bench/results/sweep_gpu112-5k.jsonl \\
        bench/results/sweep_gpu112.jsonl --arm qtdog --baseline erm

reads "QT-DoG - ERM at 5000 steps, minus QT-DoG - ERM at 600 steps, same (domain, trial)".
Pairing twice removes both the split's difficulty and the protocol's overall effect (both
arms gain at 5000 steps); what is left is the protocol's effect on the arm's advantage. It is
a measurement of protocols: nothing is chosen from the held-out column.

``--baseline none`` compares the arm's own accuracy instead: with the same protocol run on
two machines (same split and initialization; another random stream for the minibatches and
augmentations, other float kernels) it measures how far one run of a configuration moves
(the noise floor of a single run; the standard deviation is in the last row):

    python bench/protocol_delta.py bench/results/sweep_gpu112_on_cpu.jsonl \\
        bench/results/sweep_gpu112.jsonl --arm qtdog --baseline none
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from aggregate import mean_se, read_jsonl

PairKey = tuple[str, int]  # (held-out domain, trial seed)


def arm_minus_baseline(
    rows: list[dict], arm: str, baseline: str | None, field: str
) -> dict[PairKey, float]:
    """``arm - baseline`` of ``field`` per (domain, trial) where both finished (the arm's own
    ``field`` when ``baseline`` is None); a later line of the same (arm, domain, trial)
    replaces an earlier one."""
    latest: dict[tuple[str, str, int], dict] = {}
    for row in rows:
        latest[(row["arm"], row["test_domain"], row["trial_seed"])] = row
    diffs = {}
    for (name, domain, trial), row in latest.items():
        base = latest.get((baseline, domain, trial)) if baseline else {field: 0.0}
        if name != arm or base is None:
            continue
        if row.get(field) is not None and base.get(field) is not None:
            diffs[(domain, trial)] = row[field] - base[field]
    return diffs


def paired_change(new: dict[PairKey, float], old: dict[PairKey, float]) -> dict[PairKey, float]:
    """``new - old`` for every (domain, trial) in both, in sorted order."""
    return {key: new[key] - old[key] for key in sorted(new.keys() & old.keys())}


def protocol_delta(
    changed: list[dict], reference: list[dict], arm: str, baseline: str | None, field: str
) -> dict[PairKey, float]:
    """Per (domain, trial) present under both protocols: the change of ``arm - baseline``."""
    return paired_change(
        arm_minus_baseline(changed, arm, baseline, field),
        arm_minus_baseline(reference, arm, baseline, field),
    )


def _mean_text(values: list[float], sign: str) -> str:
    """Mean ± standard error in points; one value has no standard error to show."""
    mean, se = mean_se(values)
    return f"{100 * mean:{sign}.2f}" + (f" ± {100 * se:.2f}" if len(values) > 1 else "")


def report(changed: Path, reference: Path, arm: str, baseline: str | None) -> str:
    """A markdown table: per (domain, trial) and overall, held out and source val."""
    rows_new, rows_old = read_jsonl(changed), read_jsonl(reference)
    columns = {}  # field -> (arm - baseline under A, under B, their change)
    for field in ("test_acc", "val_acc"):
        new = arm_minus_baseline(rows_new, arm, baseline, field)
        old = arm_minus_baseline(rows_old, arm, baseline, field)
        columns[field] = (new, old, paired_change(new, old))
    keys = list(columns["test_acc"][2])
    if not keys:
        raise SystemExit(
            f"no (domain, trial) has {arm}{f' and {baseline}' if baseline else ''} "
            f"in {changed} and in {reference}"
        )
    compared = f"{arm} - {baseline}" if baseline else arm
    sign = "+" if baseline else ""  # columns A and B: differences, or accuracies
    lines = [
        f"`{compared}` in {changed.name} (A) and {reference.name} (B), points; "
        "same (held-out domain, trial seed)",
        "",
        "| held out | trial | held out: A | B | A - B | source val: A | B | A - B |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in keys:
        cells = []
        for field in ("test_acc", "val_acc"):
            new, old, delta = columns[field]
            cells += [f"{100 * d[key]:{sign}.2f}" if key in d else "-" for d in (new, old)]
            cells.append(f"{100 * delta[key]:+.2f}" if key in delta else "-")
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    total = []
    for field in ("test_acc", "val_acc"):
        new, old, delta = columns[field]
        for values in ([new[k] for k in keys if k in new], [old[k] for k in keys if k in old]):
            total.append(_mean_text(values, sign))
        values = [delta[k] for k in keys if k in delta]
        higher = sum(v > 0 for v in values)
        spread = f", sd {100 * statistics.stdev(values):.2f}" if len(values) > 1 else ""
        total.append(f"**{_mean_text(values, '+')}** ({higher} / {len(values)} higher{spread})")
    label = f"{len(keys)} pair" + ("s" if len(keys) > 1 else "")
    lines.append(f"| **{label}** | | " + " | ".join(total) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("changed", type=Path, help="results.jsonl of the changed protocol (A)")
    parser.add_argument("reference", type=Path, help="results.jsonl of the reference (B)")
    parser.add_argument("--arm", default="qtdog")
    parser.add_argument(
        "--baseline", default="erm", help="'none': the arm's own accuracy, not a difference"
    )
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    for path in (args.changed, args.reference):
        if not path.is_file():
            raise SystemExit(f"{path}: no such results file")
    baseline = None if args.baseline.lower() == "none" else args.baseline
    table = report(args.changed, args.reference, args.arm, baseline)
    print(table, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)


if __name__ == "__main__":
    main()
