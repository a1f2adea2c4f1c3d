"""bench/step_sizes.py: where LSQ's learned step sizes went since the switch, per conv kind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BENCH, load_bench_module, tiny_config


def test_step_size_report_sees_a_faster_step_size_lr_move_the_grid(
    shapes_root: Path, tmp_path: Path
):
    pytest.importorskip("torch")
    from qtdog_train.pipeline import run

    step_sizes = load_bench_module("step_sizes.py")
    slow, fast, linear = tmp_path / "slow", tmp_path / "fast", tmp_path / "linear"
    for out, s_lr, s_param in ((slow, None, "log"), (fast, 0.05, "log"), (linear, None, "linear")):
        keep = out == slow  # one float phase serves all three: their seeds are alike
        settings = {"keep_float_phase": keep, "s_lr": s_lr, "s_param": s_param}
        run(tiny_config(shapes_root, out, members=1, export=False, **settings))
    switch = slow / "member-0" / "float-phase.pt"
    reports = {
        name: step_sizes.step_size_report(out, switch)
        for name, out in (("slow", slow), ("fast", fast), ("linear", linear))
    }
    for report in reports.values():
        assert report["all"]["convs"] == sum(
            report[k]["convs"] for k in ("stem", "depthwise", "pointwise", "head") if k in report
        )
        assert report["stem"]["convs"] == report["head"]["convs"] == 1
        assert 0 < report["all"]["zero_share"] < 1 and 0 <= report["all"]["clip_share"] < 1
        assert report["all"]["weight_move"] > 0  # the weights trained on after the switch
        assert 0 < report["depthwise"]["init_step_median"] < 1
    # one float phase, one init: the same median step size whatever trained after it
    medians = [r["all"]["init_step_median"] for r in reports.values()]
    assert medians == pytest.approx([medians[0]] * 3, rel=1e-6)  # log s stores it as exp(log s)
    # Adam moves log(s) by about its lr per step: 6 steps at 5e-5 against 6 at 5e-2
    assert reports["slow"]["all"]["abs_log2_step_ratio"] < 1e-3
    assert reports["fast"]["all"]["abs_log2_step_ratio"] > 0.05
    # the paper's parametrization (s learned as is, reloaded from its checkpoint): s moves by
    # about lr per step, lr / s relative: these small step sizes move hundreds of times faster
    assert (
        reports["linear"]["all"]["abs_log2_step_ratio"]
        > 20 * reports["slow"]["all"]["abs_log2_step_ratio"]
    )

    out = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "step_sizes.py"), str(slow), str(fast), "--switch", str(switch),
         "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == json.loads(
        json.dumps({str(slow): reports["slow"], str(fast): reports["fast"]})
    )
    assert f"| {fast} | all | " in done.stdout

    missing = subprocess.run(
        [sys.executable, str(BENCH / "step_sizes.py"), str(fast)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines()[-1].endswith("no float checkpoint at the switch")
