"""Where LSQ's learned step sizes went: a QT-DoG run's selected model against its switch.

For each quantized conv of each run's selected model, against the LSQ init the trainer
computed at the switch (re-derived here from the float checkpoint taken there): the
learned step size over its init (geometric mean over channels), the share of weights
on the zero level and on the clip levels, and how far the float weights moved since
the switch. Grouped by conv kind (stem, depthwise, pointwise, head). No data is read:
this looks at weights only, so it says nothing about accuracy and cannot leak the
held-out domain.

    python bench/step_sizes.py runs/sweep-cpu/slr-cpu112/qtdog/sketch/trial0 \\
        runs/sweep-cpu/slr-cpu112/qtdog-slr100/sketch/trial0 \\
        --switch runs/sweep-cpu/slr-cpu112/qtdog/sketch/trial0/member-0/float-phase.pt
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qtdog_train.config import TrainConfig
from qtdog_train.quant.lsq import conv_modules, is_depthwise, lsq_quantizer
from qtdog_train.trainer import (
    FLOAT_PHASE_NAME,
    attach_configured_lsq,
    build_model,
    load_selected_model,
)

KINDS = ("stem", "depthwise", "pointwise", "head", "all")


def conv_kind(index: int, count: int, conv: nn.Conv2d) -> str:
    """The first conv is the stem, the last the head (timm's conv_head); the rest are
    depthwise or pointwise (1x1, including squeeze-excite and projection convs)."""
    if index == 0:
        return "stem"
    if index == count - 1:
        return "head"
    return "depthwise" if is_depthwise(conv) else "pointwise"


def switch_model(cfg: TrainConfig, float_phase: Path) -> nn.Module:
    """A run's model right after the switch: the float weights there with LSQ attached
    (its step-size init computed from them, as the trainer does)."""
    state = torch.load(float_phase, map_location="cpu", weights_only=True)
    if state["quantized"]:
        raise SystemExit(f"{float_phase}: not a float checkpoint (taken after the switch)")
    num_classes = int(state["model"]["classifier.weight"].shape[0])
    model = build_model(cfg, num_classes, False, torch.device("cpu"))
    model.load_state_dict(state["model"])
    attach_configured_lsq(cfg, model)
    return model.eval()


@torch.no_grad()
def step_size_report(run: Path, float_phase: Path) -> dict[str, dict[str, float]]:
    """Per conv kind: mean log2(s / s_init) over channels and its mean absolute value, the
    median s_init (Adam moves a step size learned as s, the paper's way, by about lr per
    step: a relative rate of lr / s_init, against lr for log s), the share of weights at zero
    and at the clip levels, and the relative move of the float weights since the switch."""
    cfg, selected = load_selected_model(run)
    at_switch = switch_model(cfg, float_phase)
    start = dict(conv_modules(at_switch))
    convs = list(conv_modules(selected))
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    init_steps: dict[str, list[torch.Tensor]] = defaultdict(list)
    for index, (name, conv) in enumerate(convs):
        quantizer, origin = lsq_quantizer(conv), lsq_quantizer(start[name])
        if quantizer is None or origin is None:
            continue
        weight = conv.parametrizations["weight"].original
        weight0 = start[name].parametrizations["weight"].original
        levels = quantizer.integers(weight).float()
        init_step = origin.step_size()
        log_ratio = (quantizer.step_size().log() - init_step.log()) / math.log(2)
        for kind in (conv_kind(index, len(convs), conv), "all"):
            init_steps[kind].append(init_step)
            row = sums[kind]
            row["convs"] += 1
            row["channels"] += log_ratio.numel()
            row["log2_ratio_sum"] += float(log_ratio.sum())
            row["abs_log2_ratio_sum"] += float(log_ratio.abs().sum())
            row["weights"] += levels.numel()
            row["zero"] += float((levels == 0).sum())
            row["clipped"] += float(((levels == -quantizer.qn) | (levels == quantizer.qp)).sum())
            row["moved_sq"] += float(((weight - weight0) ** 2).sum())
            row["norm_sq"] += float((weight0**2).sum())
    return {
        kind: {
            "convs": int(row["convs"]),
            "log2_step_ratio": row["log2_ratio_sum"] / row["channels"],
            "abs_log2_step_ratio": row["abs_log2_ratio_sum"] / row["channels"],
            "init_step_median": float(torch.cat(init_steps[kind]).median()),
            "zero_share": row["zero"] / row["weights"],
            "clip_share": row["clipped"] / row["weights"],
            "weight_move": (row["moved_sq"] / row["norm_sq"]) ** 0.5,
        }
        for kind in KINDS
        if (row := sums.get(kind))
    }


def markdown(reports: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = [
        "| run | kind | convs | init step (median) | step / init: geo. mean "
        "| step / init: typical change | weights at 0 | weights clipped | float move since switch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run, report in reports.items():
        for kind, r in report.items():
            lines.append(
                f"| {run} | {kind} | {r['convs']} | {r['init_step_median']:.2e} "
                f"| {2 ** r['log2_step_ratio']:.3f}x "
                f"| {2 ** r['abs_log2_step_ratio']:.3f}x "
                f"| {100 * r['zero_share']:.1f}% | {100 * r['clip_share']:.2f}% "
                f"| {100 * r['weight_move']:.1f}% |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "runs", type=Path, nargs="+", help="QT-DoG run folders (run.json, member-0)"
    )
    parser.add_argument(
        "--switch",
        type=Path,
        help="the float checkpoint at the switch the runs share "
        "(default: each run's own member-0/float-phase.pt)",
    )
    parser.add_argument("--out", type=Path, help="write the reports as JSON here")
    args = parser.parse_args()
    reports = {}
    for run in args.runs:
        float_phase = args.switch or run / "member-0" / FLOAT_PHASE_NAME
        if not float_phase.is_file():
            raise SystemExit(f"{float_phase}: no float checkpoint at the switch")
        reports[str(run)] = step_size_report(run, float_phase)
    print(markdown(reports), end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(reports, indent=2) + "\n")


if __name__ == "__main__":
    main()
