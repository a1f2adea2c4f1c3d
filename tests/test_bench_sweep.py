"""The sweep's EoQ arm reuses the finished ``qtdog`` run as its member 0."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import tiny_config

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load_sweep():
    spec = importlib.util.spec_from_file_location("bench_sweep", BENCH / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eoq_member_zero_is_the_qtdog_run_without_retraining(shapes_root: Path, tmp_path: Path):
    pytest.importorskip("torch")
    from qtdog_train.pipeline import run

    sweep = _load_sweep()
    qtdog_dir, eoq_dir = tmp_path / "qtdog", tmp_path / "eoq5"
    single = run(tiny_config(shapes_root, qtdog_dir, members=1, export=False))
    (qtdog_dir / "summary.json").write_text(json.dumps(single))
    log_before = (qtdog_dir / "member-0" / "log.jsonl").read_text()

    sweep.reuse_member_zero(qtdog_dir, eoq_dir)
    sweep.reuse_member_zero(qtdog_dir, eoq_dir)  # a second call leaves the copy alone
    ensemble = run(tiny_config(shapes_root, eoq_dir, members=2))

    assert (eoq_dir / "member-0" / "log.jsonl").read_text() == log_before  # not retrained
    reused, trained = ensemble["members"]
    assert reused["selected"] == single["members"][0]["selected"]
    assert reused["best_step"] == single["members"][0]["best_step"]
    assert trained["seed"] == reused["seed"] + 1
    assert "onnx_int8" in reused and "onnx_int8" in trained
    assert (Path(ensemble["repository"]) / "ensemble.onnx").is_file()


def test_nothing_is_reused_from_an_unfinished_qtdog_run(tmp_path: Path):
    sweep = _load_sweep()
    unfinished = tmp_path / "qtdog"
    (unfinished / "member-0").mkdir(parents=True)
    sweep.reuse_member_zero(unfinished, tmp_path / "eoq5")
    assert not (tmp_path / "eoq5").exists()
