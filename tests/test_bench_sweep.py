"""The sweep's ensemble arms reuse the finished single-member run as their member 0."""

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


def test_erm_ensemble_arm_reuses_erm_and_reports_the_float_ensemble(
    shapes_root: Path, tmp_path: Path
):
    pytest.importorskip("torch")
    from qtdog_train.pipeline import run

    sweep = _load_sweep()
    assert sweep.arm_config("erm5", {})["members"] == 5
    fake_quant_eoq = sweep.arm_config("eoq5-fq", {})
    assert (fake_quant_eoq["algorithm"], fake_quant_eoq["members"]) == ("qtdog", 5)
    assert not fake_quant_eoq["export"] and sweep.MEMBER_ZERO_FROM["eoq5-fq"] == "qtdog"
    erm_dir, ensemble_dir = tmp_path / "erm", tmp_path / "erm5"
    config = {"algorithm": "erm", "export": False}
    single = run(tiny_config(shapes_root, erm_dir, members=1, **config))
    assert "ensemble" not in single  # one member: nothing to ensemble
    (erm_dir / "summary.json").write_text(json.dumps(single))

    sweep.reuse_member_zero(erm_dir, ensemble_dir)
    ensemble = run(tiny_config(shapes_root, ensemble_dir, members=2, **config))
    assert ensemble["members"][0]["selected"] == single["members"][0]["selected"]
    result = ensemble["ensemble"]
    assert set(result["test"]) == {"sketch"} and set(result["val"]) == {"cartoon", "photo"}
    # the same ensemble rebuilt from the saved checkpoints (bench/ensemble_eval.py's path)
    import torch

    from qtdog_train.evaluation import evaluate_run, mean_logits
    from qtdog_train.pipeline import load_run_data
    from qtdog_train.trainer import load_selected_model

    loaded = [load_selected_model(ensemble_dir, i) for i in (0, 1)]
    data = load_run_data(loaded[0][0], torch.device("cpu"))
    again = evaluate_run(mean_logits([model for _, model in loaded]), data)
    assert again["test_acc"] == pytest.approx(result["test_acc"])
    assert again["val_acc"] == pytest.approx(result["val_acc"])
    line = sweep.result_line("erm5", "sketch", 0, ensemble)
    assert line["test_acc"] == result["test_acc"] and line["members"] == 2
    assert not (ensemble_dir / "model" / "ensemble.onnx").exists()  # nothing converted
