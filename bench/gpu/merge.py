"""Merge the results.jsonl a GPU call brought back into bench/results/sweep_<protocol>.jsonl.

One line per (arm, held-out domain, trial seed): a run reported again (a rerun on a
fresh machine repeats the runs it cannot resume) replaces the earlier line, so the
file stays fit for ``bench/aggregate.py``.

    python bench/gpu/merge.py /work/.device/.../results.jsonl --protocol gpu112
    python bench/aggregate.py bench/results/sweep_gpu112.jsonl --out bench/results/gpu112
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))  # this script lives one folder below its siblings

from aggregate import read_jsonl  # noqa: E402


def merge(existing: list[dict], new: list[dict]) -> tuple[list[dict], int, int]:
    """``existing`` updated by ``new``, keyed by (arm, test_domain, trial_seed);
    returns the rows, how many were added and how many replaced."""
    rows = {(r["arm"], r["test_domain"], r["trial_seed"]): r for r in existing}
    added = replaced = 0
    for row in new:
        key = (row["arm"], row["test_domain"], row["trial_seed"])
        if key in rows:
            replaced += 1
        else:
            added += 1
        rows[key] = row
    return list(rows.values()), added, replaced


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path, nargs="+", help="results.jsonl files from $OUT")
    parser.add_argument("--protocol", default="gpu112", help="the PROTOCOL the runs used")
    parser.add_argument("--into", type=Path, default=None, help="default: bench/results/")
    args = parser.parse_args()
    target = (args.into or REPO / "bench" / "results") / f"sweep_{args.protocol}.jsonl"
    existing = read_jsonl(target) if target.is_file() else []
    new = [row for path in args.results for row in read_jsonl(path)]
    rows, added, replaced = merge(existing, new)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(json.dumps(row) + "\n" for row in rows))
    runs = "1 run" if len(rows) == 1 else f"{len(rows)} runs"
    print(f"{target}: {runs} ({added} added, {replaced} replaced)")


if __name__ == "__main__":
    main()
