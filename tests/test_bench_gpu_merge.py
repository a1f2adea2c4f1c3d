"""bench/gpu/merge.py: results a GPU call brings back join the committed sweep file, one line
per (arm, held-out domain, trial seed), a rerun replacing the earlier line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import BENCH


def _row(arm: str, domain: str, trial: int, test_acc: float) -> dict:
    return {"arm": arm, "test_domain": domain, "trial_seed": trial, "test_acc": test_acc}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _merge(*args: str | Path) -> str:
    """Run bench/gpu/merge.py as a user would; its one-line summary."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "gpu" / "merge.py"), *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_new_runs_are_appended_and_a_rerun_replaces_its_line(tmp_path: Path):
    committed = tmp_path / "results"
    committed.mkdir()
    _write(
        committed / "sweep_gpu112.jsonl",
        [_row("erm", "art_painting", 0, 0.60), _row("qtdog", "art_painting", 0, 0.61)],
    )
    # the second call reran qtdog art trial 0 (a fresh machine cannot resume) and ran cartoon
    call_one = _write(tmp_path / "one.jsonl", [_row("erm", "cartoon", 0, 0.70)])
    call_two = _write(
        tmp_path / "two.jsonl",
        [_row("qtdog", "art_painting", 0, 0.63), _row("qtdog", "cartoon", 0, 0.71)],
    )

    summary = _merge(call_one, call_two, "--protocol", "gpu112", "--into", committed)

    target = committed / "sweep_gpu112.jsonl"
    assert summary == f"{target}: 4 runs (2 added, 1 replaced)"
    rows = {(r["arm"], r["test_domain"], r["trial_seed"]): r["test_acc"] for r in _read(target)}
    assert rows == {
        ("erm", "art_painting", 0): 0.60,
        ("qtdog", "art_painting", 0): 0.63,
        ("erm", "cartoon", 0): 0.70,
        ("qtdog", "cartoon", 0): 0.71,
    }


def test_a_new_protocol_starts_its_own_file_and_blank_lines_are_skipped(tmp_path: Path):
    brought_back = tmp_path / "results.jsonl"
    brought_back.write_text(json.dumps(_row("erm", "photo", 1, 0.9)) + "\n\n")

    summary = _merge(brought_back, "--protocol", "gpu224", "--into", tmp_path / "new")

    target = tmp_path / "new" / "sweep_gpu224.jsonl"
    assert summary == f"{target}: 1 run (1 added, 0 replaced)"
    assert _read(target) == [_row("erm", "photo", 1, 0.9)]
