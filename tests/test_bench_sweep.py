"""The sweep runner: its command appends results and skips finished runs; its ensemble arms
reuse the finished single-member run as their member 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BENCH, load_bench_module, tiny_config


def _load_sweep():
    return load_bench_module("sweep.py")


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
    # member 0 came back from its final checkpoint: its training time is the single run's, not
    # the ~0 s this invocation spent on it, and the line adds up both members'
    reused_seconds = ensemble["members"][0]["train_seconds"]
    assert reused_seconds >= 0.5 * single["members"][0]["train_seconds"] > 0
    assert line["train_seconds"] == pytest.approx(
        sum(m["train_seconds"] for m in ensemble["members"])
    )
    assert not (ensemble_dir / "model" / "ensemble.onnx").exists()  # nothing converted


def test_member_pairs_match_twin_members_of_two_ensemble_runs(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """bench/member_pairs.py pairs member i of a QT-DoG ensemble with member i of an ERM one
    (same split and seed) and reports their accuracy differences."""
    pytest.importorskip("torch")
    from qtdog_train.pipeline import run

    monkeypatch.syspath_prepend(str(BENCH))
    import member_pairs

    root = tmp_path / "protocol"
    for arm, algorithm in (("eoq5-fq", "qtdog"), ("erm5", "erm")):
        out = root / arm / "sketch" / "trial0"
        run(tiny_config(shapes_root, out, algorithm=algorithm, members=2, export=False))
    rows = member_pairs.paired_members(root, "eoq5-fq", "erm5")
    assert [(r["test_domain"], r["trial_seed"], r["member"]) for r in rows] == [
        ("sketch", 0, 0),
        ("sketch", 0, 1),
    ]
    for row in rows:
        report = json.loads(
            (
                root / "erm5" / "sketch" / "trial0" / f"member-{row['member']}" / "report.json"
            ).read_text()
        )
        assert row["baseline_test_acc"] == report["selected"]["test_acc"]
        assert row["test_diff"] == pytest.approx(row["test_acc"] - row["baseline_test_acc"])
    summary = member_pairs.summarize(rows)
    assert summary["pairs"] == 2 and 0 <= summary["wins"] <= 2
    # a member trained with another seed is not a twin
    other = root / "erm5" / "sketch" / "trial0" / "member-1" / "report.json"
    other.write_text(json.dumps(json.loads(other.read_text()) | {"seed": 99}))
    with pytest.raises(SystemExit, match="seeds differ"):
        member_pairs.paired_members(root, "eoq5-fq", "erm5")


def test_aggregate_pairs_arms_on_the_same_domain_and_trial(tmp_path: Path):
    """bench/aggregate.py: paired differences use only (domain, trial) cells both arms have,
    and --pair adds comparisons besides every arm - erm."""
    import subprocess
    import sys

    def row(arm: str, domain: str, trial: int, acc: float, val: float) -> dict:
        return {
            "arm": arm,
            "test_domain": domain,
            "trial_seed": trial,
            "test_acc": acc,
            "val_acc": val,
        }

    rows = [
        row("erm", "sketch", 0, 0.50, 0.80),
        row("erm", "sketch", 1, 0.60, 0.85),
        row("erm5", "sketch", 0, 0.70, 0.90),
        row("eoq5-fq", "sketch", 0, 0.75, 0.86),
        row("eoq5-fq", "sketch", 1, 0.80, 0.87),  # no erm5 twin: not a pair for eoq5-fq - erm5
    ]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "agg"
    command = [sys.executable, str(BENCH / "aggregate.py"), str(results), "--out", str(out)]
    done = subprocess.run(
        [*command, "--pair", "eoq5-fq:erm5"],
        capture_output=True,
        text=True,
        check=True,
    )
    table = (out / "table.md").read_text()
    assert table in done.stdout
    assert (
        "| eoq5-fq - erm | 22.5 ± 2.5 (pairs=2) | 2 / 2 | 4.0 ± 2.0 (pairs=2) | s0, s1 |" in table
    )
    assert "| eoq5-fq - erm5 | 5.0 (pairs=1) | 1 / 1 | -4.0 (pairs=1) | s0 |" in table
    assert (
        "| eoq5-fq - erm | 22.50 ± 2.50 (trials=2) | 2 / 2 | 4.00 ± 2.00 (trials=2) | 0, 1 |"
        in (table)
    )
    assert (out / "bars_sketch.png").stat().st_size > 0
    bad = subprocess.run(
        [*command, "--pair", "eoq5-fq"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "expected ARM:BASELINE" in bad.stderr


def test_aggregate_pairs_the_domain_average_by_complete_trials():
    """bench/aggregate.py: the paired PACS-average difference counts only trials in which
    both arms finished every held-out domain, one difference of averages per trial."""
    aggregate = load_bench_module("aggregate.py")
    rows = [
        {"arm": arm, "test_domain": d, "trial_seed": t, "test_acc": acc, "val_acc": 0.8}
        for arm, d, t, acc in [
            ("erm", "art", 0, 0.50),
            ("erm", "sketch", 0, 0.60),
            ("erm", "art", 1, 0.40),
            ("erm", "sketch", 1, 0.70),
            ("qtdog", "art", 0, 0.56),  # trial 0: average +0.03
            ("qtdog", "sketch", 0, 0.60),
            ("qtdog", "sketch", 1, 0.90),  # trial 1 lacks art: left out
        ]
    ]
    assert sorted(aggregate.complete_trials(rows, "erm", ["art", "sketch"])) == [0, 1]
    assert list(aggregate.complete_trials(rows, "qtdog", ["art", "sketch"])) == [0]
    row = aggregate.paired_average_row(rows, "qtdog", "erm", ["art", "sketch"])
    assert row == "| qtdog - erm | 3.00 (trials=1) | 1 / 1 | 0.00 (trials=1) | 0 |"
    assert aggregate.paired_average_row(rows, "qtdog", "erm5", ["art", "sketch"]) is None


def test_eval_traces_select_the_trainers_checkpoint_and_plot(shapes_root: Path, tmp_path: Path):
    """bench/eval_traces.py reads a real QT-DoG run's evaluation log and report: the selected
    row is the trainer's checkpoint (best source val among quantized ones), with its accuracy
    from the log, and it writes its table and plot."""
    pytest.importorskip("torch")
    import subprocess
    import sys

    from qtdog_train.pipeline import run

    root = tmp_path / "protocol"
    out = root / "qtdog" / "sketch" / "trial0"
    summary = run(
        tiny_config(shapes_root, out, members=1, export=False, eval_every=3, checkpoint_every=3)
    )
    traces = load_bench_module("eval_traces.py")
    runs = traces.find_runs([root], ["qtdog", "erm"])
    assert list(runs) == [("qtdog", "sketch", 0)]
    trace = runs[("qtdog", "sketch", 0)]
    records = trace.evaluations
    assert [r["step"] for r in records] == [3, 6, 9, 12]  # the switch event is left out
    assert [r["quantized"] for r in records] == [False, False, True, True]
    row = traces.trace_row(trace, after=6)
    member = summary["members"][0]
    assert row["selected_step"] == member["best_step"] in (9, 12)
    assert row["selected_test"] == member["selected"]["test_acc"]
    tests = [r["test_acc"] for r in records]
    assert row["test_change"] == pytest.approx(
        (abs(tests[2] - tests[1]) + abs(tests[3] - tests[2])) / 2
    )

    # an ERM twin (same seeds): paired step by step with QT-DoG, from step 6 on
    erm_out = root / "erm" / "sketch" / "trial0"
    run(
        tiny_config(
            shapes_root, erm_out, algorithm="erm", members=1, export=False, eval_every=3,
            checkpoint_every=3,
        )
    )  # fmt: skip
    runs = traces.find_runs([root], ["qtdog", "erm"])
    assert traces.find_runs([root], ["qtdog", "erm"], trials=[1]) == {}
    erm_records = {r["step"]: r for r in runs[("erm", "sketch", 0)].evaluations}
    paired = traces.paired_by_step(runs, "qtdog", "erm", after=6)
    assert list(paired) == [6, 9, 12]
    for r in records[1:]:
        assert paired[r["step"]]["test"] == [r["test_acc"] - erm_records[r["step"]]["test_acc"]]
        assert paired[r["step"]]["val"] == [r["val_acc"] - erm_records[r["step"]]["val_acc"]]
    assert paired[6] == {"test": [0.0], "val": [0.0]}  # the float phase is shared

    plots = tmp_path / "plots"
    done = subprocess.run(
        [sys.executable, str(BENCH / "eval_traces.py"), str(root), "--out", str(plots),
         "--arms", "qtdog", "erm", "--after", "6", "--pair", "qtdog:erm"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "| qtdog | sketch | 0 |" in done.stdout
    assert "| step | qtdog - erm: held out | source val | pairs |" in done.stdout
    assert "| 6 | 0.00 ± nan | 0.00 ± nan | 1 |" in done.stdout
    assert (plots / "traces.md").read_text() in done.stdout + "\n"
    assert (plots / "traces_sketch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = subprocess.run(
        [sys.executable, str(BENCH / "eval_traces.py"), str(tmp_path / "nowhere")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert missing.returncode == 2 and "nowhere: no such folder" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_every_arm_builds_a_valid_config_and_nodw_spares_the_depthwise_convs(tmp_path: Path):
    from qtdog_train.config import TrainConfig

    sweep = _load_sweep()
    base = {"data": str(tmp_path), "out": str(tmp_path), "lr": 5e-5}
    for arm in sweep.ARMS:
        TrainConfig.from_dict(sweep.arm_config(arm, base)).validate()
    nodw = TrainConfig.from_dict(sweep.arm_config("qtdog-nodw", base))
    assert (nodw.algorithm, nodw.quantized_layers, nodw.bits) == ("qtdog", "no-depthwise", 7)
    linear = TrainConfig.from_dict(sweep.arm_config("qtdog-linear", base))
    assert (linear.algorithm, linear.s_param, linear.step_size_lr) == ("qtdog", "linear", 5e-5)
    assert sweep.shares_float_phase("qtdog-linear")
    with pytest.raises(SystemExit, match="unknown arm 'qtdog-dw'"):
        sweep.arm_config("qtdog-dw", base)


def test_sweep_command_appends_one_line_per_run_prints_progress_and_skips_finished_runs(
    shapes_root: Path, tmp_path: Path
):
    command = [
        sys.executable,
        str(BENCH / "sweep.py"),
        "--data", str(shapes_root),
        "--dataset", "shapes",
        "--protocol", "tiny",
        "--out", str(tmp_path / "runs"),
        "--results", str(tmp_path / "results"),
        "--arms", "erm", "qtdog",
        "--test-domains", "sketch",
        "--trial-seeds", "0",
        "--image-size", "32",
        "--steps", "4",
        "--q-start", "2",
        "--eval-every", "2",
        "--batch-size", "2",
        "--device", "cpu",
        "--compile", "off",
    ]  # fmt: skip
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    for arm in ("erm", "qtdog"):
        assert any(line.startswith(f"{arm} sketch trial 0: step 2/4 loss ") for line in lines)
        assert any(line.startswith(f"{arm} sketch trial 0: step 4/4 loss ") for line in lines)
    assert any(
        line.startswith("qtdog sketch trial 0: LSQ on at step 2, source val ") for line in lines
    )
    assert not any("LSQ on" in line for line in lines if line.startswith("erm "))
    progress = [line for line in lines if ": step " in line or "LSQ on" in line]
    assert progress and not any("test" in line for line in progress)  # held out: result line only

    results = tmp_path / "runs" / "tiny" / "results.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["arm"], r["test_domain"], r["trial_seed"]) for r in rows] == [
        ("erm", "sketch", 0),
        ("qtdog", "sketch", 0),
    ]
    # QT-DoG selects among quantized checkpoints only: the step-2 evaluation precedes the switch
    assert rows[1]["best_step"] == 4 and rows[1]["switch_val_drop"] is not None
    assert rows[0]["switch_val_drop"] is None
    copied = tmp_path / "results" / "sweep_tiny.jsonl"
    assert copied.read_text() == results.read_text()
    result_lines = [line for line in lines if ": test " in line]
    for row, line in zip(rows, result_lines, strict=True):
        assert line.startswith(f"{row['arm']} sketch trial 0: test {100 * row['test_acc']:.1f} ")

    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        "skip erm sketch trial 0: done",
        "skip qtdog sketch trial 0: done",
    ]
    assert len(results.read_text().splitlines()) == 2


def test_a_qtdog_variant_shares_the_float_phase_and_differs_only_after_the_switch(
    shapes_root: Path, tmp_path: Path
):
    pytest.importorskip("torch")
    import torch

    from qtdog_train.pipeline import run

    sweep = _load_sweep()
    not_variants = {a for a in sweep.ARMS if not sweep.is_qtdog_variant(a)}
    assert not_variants == {"erm", "qtdog", "eoq5", "eoq5-fq", "erm5"}  # float or ensembles
    assert sweep.is_qtdog_variant("qtdog-slr1000") and not sweep.is_qtdog_variant("qtdog-b16")
    reference_dir = tmp_path / "qtdog"
    reference = run(
        tiny_config(shapes_root, reference_dir, members=1, export=False, keep_float_phase=True)
    )
    float_phase = torch.load(
        reference_dir / "member-0" / "float-phase.pt", map_location="cpu", weights_only=True
    )
    assert (float_phase["step"], float_phase["quantized"]) == (6, False)  # q_start, before it

    def records(run_dir: Path) -> list[dict]:
        text = (run_dir / "member-0" / "log.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines()]

    # the same configuration resumed from the float phase retrains only after the switch and
    # lands exactly where the reference did
    twin_dir = tmp_path / "twin"
    assert sweep.reuse_float_phase(reference_dir, twin_dir)
    assert not sweep.reuse_float_phase(reference_dir, twin_dir)  # once
    twin = run(tiny_config(shapes_root, twin_dir, members=1, export=False))
    assert not (twin_dir / "member-0" / "float-phase.pt").exists()  # kept only when asked
    assert twin["members"][0]["selected"] == reference["members"][0]["selected"]
    assert records(twin_dir) == [
        {**r, "elapsed": t["elapsed"]} if "elapsed" in r else r
        for r, t in zip(records(reference_dir), records(twin_dir), strict=True)
    ]

    # a 4-bit variant: the same float model at the switch, one switch record, a different grid
    variant_dir = tmp_path / "qtdog-b4"
    assert sweep.reuse_float_phase(reference_dir, variant_dir)
    run(tiny_config(shapes_root, variant_dir, members=1, export=False, bits=4))
    switches = [r for r in records(variant_dir) if r.get("event") == "switch"]
    (reference_switch,) = [r for r in records(reference_dir) if r.get("event") == "switch"]
    assert len(switches) == 1 and switches[0]["before"] == reference_switch["before"]
    assert [r for r in records(variant_dir) if r.get("step", 0) < 6] == [
        r for r in records(reference_dir) if r.get("step", 0) < 6
    ]
    variant_state = torch.load(
        variant_dir / "member-0" / "checkpoint.pt", map_location="cpu", weights_only=True
    )["model"]
    reference_state = torch.load(
        reference_dir / "member-0" / "checkpoint.pt", map_location="cpu", weights_only=True
    )["model"]
    assert any(not torch.equal(variant_state[k], reference_state[k]) for k in reference_state)


def test_erm_from_the_float_phase_is_erm_trained_on_selecting_after_the_switch(
    shapes_root: Path, tmp_path: Path
):
    pytest.importorskip("torch")
    import torch

    from qtdog_train.pipeline import run

    sweep = _load_sweep()
    assert sweep.shares_float_phase("erm") and sweep.shares_float_phase("qtdog-slr100")
    assert not {a for a in sweep.ARMS if sweep.shares_float_phase(a)} & {"qtdog", "erm5", "eoq5"}
    qtdog_dir, scratch_dir, twin_dir = tmp_path / "qtdog", tmp_path / "erm", tmp_path / "twin"
    run(tiny_config(shapes_root, qtdog_dir, members=1, export=False, keep_float_phase=True))
    erm = {"algorithm": "erm", "members": 1, "export": False}
    run(tiny_config(shapes_root, scratch_dir, **erm))
    assert sweep.reuse_float_phase(qtdog_dir, twin_dir)
    twin = run(tiny_config(shapes_root, twin_dir, **erm))

    def final(run_dir: Path) -> dict:
        path = run_dir / "member-0" / "checkpoint.pt"
        return torch.load(path, map_location="cpu", weights_only=True)["model"]

    def records(run_dir: Path) -> list[dict]:
        text = (run_dir / "member-0" / "log.jsonl").read_text()
        return [
            {k: v for k, v in json.loads(line).items() if k != "elapsed"}
            for line in text.splitlines()
        ]

    # ERM and QT-DoG train alike until the switch: ERM resumed there ends on ERM's weights
    scratch_state, twin_state = final(scratch_dir), final(twin_dir)
    assert scratch_state.keys() == twin_state.keys()
    assert all(torch.equal(scratch_state[k], twin_state[k]) for k in scratch_state)
    assert records(twin_dir) == records(scratch_dir)  # no switch record, no LSQ
    assert not any(k.endswith("log_step") for k in twin_state)
    # it selects among the evaluations after the switch (step 6 preceded it)
    assert twin["members"][0]["best_step"] == 12


def test_no_float_phase_is_reused_from_a_run_before_its_switch(tmp_path: Path):
    sweep = _load_sweep()
    (tmp_path / "qtdog" / "member-0").mkdir(parents=True)
    assert not sweep.reuse_float_phase(tmp_path / "qtdog", tmp_path / "qtdog-b4")
    assert not (tmp_path / "qtdog-b4").exists()
