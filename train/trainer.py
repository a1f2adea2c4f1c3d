"""Train one ensemble member: ERM, or QT-DoG (LSQ switched on at ``q_start``).

DomainBed protocol: Adam, balanced minibatches across source domains,
BatchNorm frozen, evaluation every ``eval_every`` steps on the source
holdout (model selection) and the test domains (reported, never used to
choose). For QT-DoG, only evaluations after the switch are eligible, since
the quantized model is the artifact. Checkpoints make a run resumable with
nothing lost beyond the last one.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from qtdog_train.config import TrainConfig
from qtdog_train.data.loader import RunData
from qtdog_train.evaluation import evaluate_run
from qtdog_train.models.backbones import create_backbone, set_train_mode
from qtdog_train.quant.lsq import (
    attach_lsq,
    is_quantized,
    is_quantized_state,
    quantized_conv_weights,
    step_size_parameters,
)

CHECKPOINT_NAME = "checkpoint.pt"
#: A QT-DoG member's checkpoint at the quantizer switch, before it: the whole float phase.
#: A variant that differs only after the switch (bits, step-size lr, quantized layers) can
#: start from it, so that its pair with QT-DoG differs in nothing else (bench/sweep.py
#: ``--share-float-phase``).
FLOAT_PHASE_NAME = "float-phase.pt"
LOG_NAME = "log.jsonl"
StepCallback = Callable[[int, dict[str, Any]], None]


@dataclass
class MemberResult:
    """The selected model of one member and what was measured along the way."""

    index: int
    seed: int
    model: nn.Module
    best_step: int
    best: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    switch: dict[str, Any] | None = None
    seconds: float = 0.0


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        from qtdog_sdk.errors import QTDoGError

        raise QTDoGError("--device cuda: no CUDA GPU is available here")
    return torch.device(device)


def attach_configured_lsq(cfg: TrainConfig, model: nn.Module) -> list[str]:
    """Attach LSQ to ``model`` as ``cfg`` asks (bits, step-size init and parametrization,
    which convs)."""
    return attach_lsq(
        model, cfg.bits, cfg.s_init, layers=cfg.quantized_layers, step_param=cfg.s_param
    )


def build_model(
    cfg: TrainConfig, num_classes: int, quantized: bool, device: torch.device
) -> nn.Module:
    model = create_backbone(
        cfg.backbone, num_classes, cfg.pretrained if not quantized else "none", cfg.dropout
    )
    if quantized:
        attach_configured_lsq(cfg, model)
    # NHWC: oneDNN's depthwise convs train ~1.5x faster on CPU this way (measured on Lite0).
    return model.to(device, memory_format=torch.channels_last)


def load_selected_model(run_dir: Path, member: int = 0) -> tuple[TrainConfig, nn.Module]:
    """The selected (best source-validation) model of a run's member, as it was trained:
    LSQ-quantized for QT-DoG, float for ERM; on the CPU, in eval mode."""
    run_dir = Path(run_dir)
    cfg = TrainConfig.from_dict(json.loads((run_dir / "run.json").read_text()))
    ckpt = torch.load(
        run_dir / f"member-{member}" / CHECKPOINT_NAME, map_location="cpu", weights_only=True
    )
    state = ckpt.get("best_model", ckpt["model"])
    quantized = is_quantized_state(state)
    model = build_model(
        cfg, int(state["classifier.weight"].shape[0]), quantized, torch.device("cpu")
    )
    model.load_state_dict(state)
    return cfg, model.eval()


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam over what trains now. After the switch: weights + step sizes (paper), or,
    with ``official_compat``, only BatchNorm affine and the classifier (the released code)."""
    if not is_quantized(model):
        return torch.optim.Adam(
            model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True
        )
    steps = step_size_parameters(model)
    if cfg.official_compat:
        frozen = {id(p) for p in quantized_conv_weights(model)} | {id(p) for p in steps}
        for p in model.parameters():
            if id(p) in frozen:
                p.requires_grad_(False)
        trainable = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.Adam(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    step_ids = {id(p) for p in steps}
    weights = [p for p in model.parameters() if id(p) not in step_ids]
    return torch.optim.Adam(
        [
            {"params": weights, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
            {"params": steps, "lr": cfg.step_size_lr, "weight_decay": 0.0},
        ],
        fused=True,
    )


def switch_to_quantized(
    cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer
) -> torch.optim.Optimizer:
    """Attach LSQ and rebuild the optimizer, keeping Adam's moments of the weights."""
    old_state = {
        id(p): optimizer.state[p]
        for group in optimizer.param_groups
        for p in group["params"]
        if p in optimizer.state
    }
    attach_configured_lsq(cfg, model)
    new_optimizer = build_optimizer(cfg, model)
    for group in new_optimizer.param_groups:
        for p in group["params"]:
            if id(p) in old_state:
                new_optimizer.state[p] = old_state[id(p)]
    return new_optimizer


#: ``compile="auto"`` on CUDA compiles the LSQ (quantized) phase only, and only when at
#: least this many steps remain. Measured on an H200 at 112 px, batch 3 x 32
#: (docs/results.md, section 9): the compiled float step was no faster than eager (28.5
#: vs 27.0 ms), the quantized step 2.3x faster (32.4 vs 73.0 ms: eager LSQ is many small
#: kernels), and compiling the quantized graph took ~60 s, ~1500 steps to earn back.
AUTO_COMPILE_MIN_STEPS = 1500


def compiled_forward(
    cfg: TrainConfig, model: nn.Module, device: torch.device, steps_left: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The training forward for the phase starting now: ``torch.compile``d or eager.

    ``cfg.compile``: ``on`` always compiles, ``off`` never; ``auto`` compiles on CUDA
    once the model is quantized and ``steps_left >= AUTO_COMPILE_MIN_STEPS`` (never on
    the CPU, where compiling costs minutes)."""
    if cfg.compile == "on":
        return torch.compile(model)
    worth_it = is_quantized(model) and steps_left >= AUTO_COMPILE_MIN_STEPS
    if cfg.compile == "auto" and device.type == "cuda" and worth_it:
        return torch.compile(model)
    return model


def train_step(
    cfg: TrainConfig,
    model: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    data: RunData,
    generator: torch.Generator,
) -> torch.Tensor:
    """One optimizer step on a fresh balanced, augmented minibatch; returns the loss (on device)."""
    set_train_mode(model)
    x, y = data.sample_batch(cfg.batch_size, generator)
    loss = F.cross_entropy(forward(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def _rng_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {"generator": generator.get_state(), "torch": torch.get_rng_state()}


def _save_atomically(state: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def train_member(
    cfg: TrainConfig,
    data: RunData,
    index: int,
    out_dir: Path,
    device: torch.device,
    on_step: StepCallback | None = None,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> MemberResult:
    """Train member ``index`` (seed ``cfg.seed + index``) and return its selected model."""
    seed = cfg.seed + index
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    num_classes = len(data.classes)
    checkpoint_path = out_dir / CHECKPOINT_NAME
    log_path = out_dir / LOG_NAME
    start_step, best_step, best, best_state, switch = 0, -1, {"val_acc": -1.0}, None, None
    history: list[dict[str, Any]] = []
    elapsed = 0.0

    if checkpoint_path.is_file():
        ckpt = torch.load(checkpoint_path, map_location=device, weights_only=True)
        quantized = bool(ckpt["quantized"])
        model = build_model(cfg, num_classes, quantized, device)
        model.load_state_dict(ckpt["model"])
        optimizer = build_optimizer(cfg, model)
        optimizer.load_state_dict(ckpt["optimizer"])
        generator.set_state(ckpt["rng"]["generator"].cpu())
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        start_step, best_step, elapsed = ckpt["step"], ckpt["best_step"], ckpt["elapsed"]
        best, switch = json.loads(ckpt["best_json"]), json.loads(ckpt["switch_json"])
        best_state = ckpt.get("best_model")
        history = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
        # a float checkpoint taken at the switch step precedes the switch: its record is stale
        history = [
            h
            for h in history
            if h.get("step", 0) <= start_step and (quantized or h.get("event") != "switch")
        ]
        log_path.write_text("".join(json.dumps(h) + "\n" for h in history))
    else:
        model = build_model(cfg, num_classes, False, device)
        optimizer = build_optimizer(cfg, model)
        log_path.write_text("")

    def log(record: dict[str, Any]) -> None:
        history.append(record)
        with log_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    forward = compiled_forward(cfg, model, device, cfg.steps - start_step)
    started = time.perf_counter() - elapsed
    running_loss, running_n = 0.0, 0

    def checkpoint(step: int) -> dict[str, Any]:
        state = {
            "step": step,
            "quantized": is_quantized(model),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": _rng_state(generator),
            "best_step": best_step,
            "best_json": json.dumps(best),
            "switch_json": json.dumps(switch),
            "elapsed": time.perf_counter() - started,
        }
        if best_state is not None:
            state["best_model"] = best_state
        return state

    for step in range(start_step, cfg.steps):
        if cfg.algorithm == "qtdog" and step == cfg.q_start and not is_quantized(model):
            if cfg.keep_float_phase:
                _save_atomically(checkpoint(step), out_dir / FLOAT_PHASE_NAME)
            model.eval()
            before = evaluate_run(model, data)
            optimizer = switch_to_quantized(cfg, model, optimizer)
            forward = compiled_forward(cfg, model, device, cfg.steps - step)
            after = evaluate_run(model, data)
            switch = {"event": "switch", "step": step, "before": before, "after": after}
            log(switch)
            if on_event:
                on_event("switch", switch)
        loss = float(train_step(cfg, model, forward, optimizer, data, generator).detach())
        running_loss += loss
        running_n += 1
        done = step + 1
        metrics: dict[str, Any] = {"loss": loss}
        if done % cfg.eval_every == 0 or done == cfg.steps:
            model.eval()
            result = evaluate_run(model, data)
            record = {
                "step": done,
                "loss": running_loss / running_n,
                "quantized": is_quantized(model),
                "elapsed": time.perf_counter() - started,
                **result,
            }
            running_loss, running_n = 0.0, 0
            log(record)
            metrics.update(record)
            eligible = cfg.algorithm != "qtdog" or is_quantized(model)
            if eligible and result["val_acc"] > best["val_acc"]:
                best, best_step = dict(result), done
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            _save_atomically(checkpoint(done), checkpoint_path)
        if on_step:
            on_step(done, metrics)

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    selected = copy.deepcopy(model).cpu()
    for p in selected.parameters():
        p.requires_grad_(False)
    return MemberResult(
        index=index,
        seed=seed,
        model=selected,
        best_step=best_step,
        best=best,
        history=history,
        switch=switch,
        seconds=time.perf_counter() - started,
    )


__all__ = [
    "AUTO_COMPILE_MIN_STEPS",
    "MemberResult",
    "build_model",
    "build_optimizer",
    "compiled_forward",
    "resolve_device",
    "switch_to_quantized",
    "train_member",
    "train_step",
]
