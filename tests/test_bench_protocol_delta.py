"""bench/protocol_delta.py: the change of an arm's paired advantage between two protocols."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BENCH, load_bench_module

FIELDS = ("arm", "test_domain", "trial_seed", "test_acc", "val_acc")
Row = tuple[str, str, int, float, float]


def _records(rows: list[Row]) -> list[dict]:
    return [dict(zip(FIELDS, row, strict=True)) for row in rows]


def _write(path: Path, rows: list[Row]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in _records(rows)))
    return path


def _cli(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run bench/protocol_delta.py as a user would, output captured."""
    return subprocess.run(
        [sys.executable, str(BENCH / "protocol_delta.py"), *map(str, args)],
        capture_output=True,
        text=True,
        check=check,
    )


def test_the_advantage_is_paired_per_domain_and_trial_across_protocols(tmp_path: Path):
    delta = load_bench_module("protocol_delta.py")
    changed = [
        ("erm", "art", 0, 0.60, 0.80),
        ("qtdog", "art", 0, 0.62, 0.81),  # +2 held out
        ("erm", "art", 1, 0.50, 0.80),
        ("qtdog", "art", 1, 0.40, 0.80),  # replaced by the later line below
        ("qtdog", "art", 1, 0.56, 0.79),  # +6
        ("erm", "photo", 0, 0.90, 0.80),  # no qtdog twin: no pair
    ]
    reference = [
        ("erm", "art", 0, 0.50, 0.70),
        ("qtdog", "art", 0, 0.51, 0.70),  # +1
        ("erm", "art", 1, 0.55, 0.70),
        ("qtdog", "art", 1, 0.55, 0.71),  # +0
        ("erm", "cartoon", 0, 0.5, 0.7),  # not under the changed protocol
        ("qtdog", "cartoon", 0, 0.6, 0.7),
    ]
    got = delta.protocol_delta(_records(changed), _records(reference), "qtdog", "erm", "test_acc")
    assert got.keys() == {("art", 0), ("art", 1)}
    assert got[("art", 0)] == pytest.approx(0.02 - 0.01)
    assert got[("art", 1)] == pytest.approx(0.06 - 0.00)

    a = _write(tmp_path / "a.jsonl", changed)
    b = _write(tmp_path / "b.jsonl", reference)
    out = tmp_path / "delta.md"
    result = _cli(a, b, "--out", out)
    assert out.read_text() == result.stdout
    assert "| art | 1 | +6.00 | +0.00 | +6.00 | -1.00 | +1.00 | -2.00 |" in result.stdout
    # mean of +1 and +6 held out; standard error = stdev / sqrt(2) = 2.5
    assert (
        "**2 pairs**" in result.stdout
        and "**+3.50 ± 2.50** (2 / 2 higher, sd 3.54)" in result.stdout
    )


def test_no_common_pair_is_a_one_line_error(tmp_path: Path):
    a = _write(tmp_path / "a.jsonl", [("erm", "art", 0, 0.5, 0.7), ("qtdog", "art", 0, 0.6, 0.7)])
    b = _write(tmp_path / "b.jsonl", [("erm", "art", 1, 0.5, 0.7), ("qtdog", "art", 1, 0.6, 0.7)])
    result = _cli(a, b, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"no (domain, trial) has qtdog and erm in {a} and in {b}"
    ]


def test_baseline_none_compares_the_arms_own_accuracy(tmp_path: Path):
    a = _write(
        tmp_path / "cpu.jsonl", [("qtdog", "art", 0, 0.61, 0.86), ("qtdog", "art", 1, 0.60, 0.88)]
    )
    b = _write(
        tmp_path / "gpu.jsonl", [("qtdog", "art", 0, 0.60, 0.87), ("qtdog", "art", 1, 0.63, 0.88)]
    )
    result = _cli(a, b, "--baseline", "none")
    assert "| art | 0 | 61.00 | 60.00 | +1.00 | 86.00 | 87.00 | -1.00 |" in result.stdout
    # differences +1 and -3: mean -1, sd 2.83, standard error 2.00
    assert "**-1.00 ± 2.00** (1 / 2 higher, sd 2.83)" in result.stdout


def test_one_pair_is_reported_without_a_standard_error(tmp_path: Path):
    a = _write(
        tmp_path / "a.jsonl", [("erm", "art", 0, 0.75, 0.95), ("qtdog", "art", 0, 0.76, 0.94)]
    )
    b = _write(
        tmp_path / "b.jsonl", [("erm", "art", 0, 0.60, 0.87), ("qtdog", "art", 0, 0.60, 0.86)]
    )
    result = _cli(a, b)
    total = result.stdout.splitlines()[-1]
    assert total.startswith("| **1 pair** | | +1.00 | +0.00 | **+1.00** (1 / 1 higher) |")
    assert "nan" not in result.stdout and "±" not in result.stdout
