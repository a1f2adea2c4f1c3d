"""Single models inside ensemble runs, paired: member i of one arm against member i of another.

Member i of ``eoq5-fq`` (QT-DoG) and of ``erm5`` (ERM) on the same held-out domain and trial
share the split and the seed, and their trajectories are the same up to the LSQ switch, so
each pair is a QT-DoG-vs-ERM comparison with everything else held fixed. Five members per
run give five pairs per (domain, trial) where the single-member arms give one. Members that
finished in a run cut short (no ``summary.json``) count too: each member's report is final.

    tar -xzf bench/results/gpu_h200_2026-11-27/call3/runs.tgz -C /tmp/call3
    python bench/member_pairs.py /tmp/call3 --arm eoq5-fq --baseline erm5
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from aggregate import mean_se

MemberKey = tuple[str, int, int]  # (held-out domain, trial seed, member index)


def member_results(root: Path, arm: str) -> dict[MemberKey, dict]:
    """Every finished member's report.json under ``root/<arm>/<domain>/trial<k>/``."""
    found = {}
    for report in sorted((root / arm).glob("*/trial*/member-*/report.json")):
        member_dir = report.parent
        trial_dir = member_dir.parent
        key = (
            trial_dir.parent.name,
            int(trial_dir.name.removeprefix("trial")),
            int(member_dir.name.removeprefix("member-")),
        )
        found[key] = json.loads(report.read_text())
    return found


def paired_members(root: Path, arm: str, baseline: str) -> list[dict]:
    """One row per member present in both arms: test and source-val accuracy differences."""
    ours, theirs = member_results(root, arm), member_results(root, baseline)
    rows = []
    for key in sorted(ours.keys() & theirs.keys()):
        a, b = ours[key], theirs[key]
        if a["seed"] != b["seed"]:
            raise SystemExit(f"{key}: seeds differ ({a['seed']} vs {b['seed']}); not a pair")
        rows.append(
            {
                "test_domain": key[0],
                "trial_seed": key[1],
                "member": key[2],
                "seed": a["seed"],
                "test_acc": a["selected"]["test_acc"],
                "baseline_test_acc": b["selected"]["test_acc"],
                "test_diff": a["selected"]["test_acc"] - b["selected"]["test_acc"],
                "val_diff": a["selected"]["val_acc"] - b["selected"]["val_acc"],
            }
        )
    return rows


def summarize(rows: list[dict]) -> dict[str, float]:
    test = [r["test_diff"] for r in rows]
    mean, se = mean_se(test)
    return {
        "pairs": len(rows),
        "test_diff": mean,
        "test_diff_se": se,
        "wins": sum(d > 0 for d in test),
        "val_diff": statistics.fmean(r["val_diff"] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path, help="a sweep protocol folder (<arm>/<domain>/trial<k>)")
    parser.add_argument("--arm", required=True)
    parser.add_argument("--baseline", required=True)
    args = parser.parse_args()
    rows = paired_members(args.root, args.arm, args.baseline)
    if not rows:
        raise SystemExit(f"{args.root}: no member of {args.arm!r} has a twin in {args.baseline!r}")
    groups = {"all": rows} | {
        d: [r for r in rows if r["test_domain"] == d]
        for d in sorted({r["test_domain"] for r in rows})
    }
    print(
        f"| {args.arm} - {args.baseline}, per member | pairs | test (points) | wins | source val |"
    )
    print("|---|---|---|---|---|")
    result = {}
    for name, group in groups.items():
        s = result[name] = summarize(group)
        se = "" if math.isnan(s["test_diff_se"]) else f" ± {100 * s['test_diff_se']:.2f}"
        print(
            f"| {name} | {s['pairs']} | {100 * s['test_diff']:+.2f}{se} | "
            f"{s['wins']} / {s['pairs']} | {100 * s['val_diff']:+.2f} |"
        )
    print(json.dumps({"arm": args.arm, "baseline": args.baseline, "groups": result}))


if __name__ == "__main__":
    main()
