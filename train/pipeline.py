"""One command's work: data -> members (train, convert) -> ensemble -> model repository.

Layout of ``--out``::

    run.json                 the TrainConfig
    member-<i>/log.jsonl     evaluations and the quantizer switch, as JSON lines
    member-<i>/checkpoint.pt resumable state (never part of the model repository)
    member-<i>/report.json   selection and conversion numbers of the member
    summary.json             everything measured, one file
    model/                   the model repository the SDK loads
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from qtdog_sdk._version import __version__
from qtdog_sdk.errors import QTDoGError
from qtdog_sdk.format import ONNX_INPUT_NAME, Member, Preprocessing, Quantization
from qtdog_train.config import TrainConfig
from qtdog_train.data.augment import domainbed_augment
from qtdog_train.data.datasets import load_dataset
from qtdog_train.data.loader import RunData, build_run_data
from qtdog_train.evaluation import (
    Predictions,
    agreement,
    evaluate_run,
    mean_logits,
    run_predictions,
    summarize,
)
from qtdog_train.models.backbones import normalization_for
from qtdog_train.repository import member_file_names, save_member_weights, write_repository
from qtdog_train.trainer import MemberResult, resolve_device, train_member

if TYPE_CHECKING:  # torchao is imported only when converting
    from qtdog_train.convert.member import ConvertedMember

REPO_DIR = "model"
Reporter = Callable[[str, dict[str, Any]], None]


def onnx_predictor(path: Path, threads: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def predict(x: torch.Tensor) -> torch.Tensor:
        out = session.run(None, {ONNX_INPUT_NAME: x.detach().cpu().float().numpy()})[0]
        out = torch.from_numpy(out)
        return out.mean(dim=1) if out.dim() == 3 else out

    return predict


def calibration_batches(
    data: RunData, count: int, batch: int = 64, seed: int = 0, augment: bool = False
) -> list[torch.Tensor]:
    """``count`` source-domain training images (balanced over domains), on the CPU.

    ``augment`` applies the DomainBed training augmentation to them (crops, flips,
    color jitter, grayscale): wider activation ranges than the plain images give.
    """
    generator = torch.Generator().manual_seed(seed)
    per_domain = max(1, count // len(data.source_domains))
    chosen = []
    for domain in data.source_domains:
        part = data.train[domain]
        index = torch.randperm(len(part), generator=generator)[:per_domain]
        chosen.append(part.pixels[index.to(part.pixels.device)].cpu())
    pixels = torch.cat(chosen)
    mean, std = data.mean.cpu(), data.std.cpu()
    batches = []
    for start in range(0, len(pixels), batch):
        images = pixels[start : start + batch].float() / 255.0
        if augment:
            images = domainbed_augment(images, generator)
        batches.append((images - mean) / std)
    return batches


def member_calibration(
    cfg: TrainConfig,
    data: RunData,
    member: int,
    images: int | None = None,
    recipe: str | None = None,
) -> list[torch.Tensor]:
    """The calibration batches of member ``member`` of a run: ``cfg``'s image count and
    recipe unless given, drawn with the member's seed (so a re-conversion sees the same
    images as the run's own)."""
    return calibration_batches(
        data,
        cfg.calibration_images if images is None else images,
        seed=cfg.seed + member,
        augment=(recipe or cfg.calibration) == "augmented",
    )


#: Forms that run the int8 graph eagerly in torch: slow, so the source holdout is opt-in.
_SLOW_FORMS = ("torch_int8", "pt2e_reference")


def conversion_predictions(
    converted: ConvertedMember,
    data: RunData,
    forms: tuple[str, ...] = ("fake_quant", "torch_int8", "onnx_int8"),
    include_val: bool = True,
    slow_on_val: bool = False,
) -> dict[str, Predictions]:
    """Top-1 predictions of a converted member's forms on ``data`` (on the CPU).

    ``fake_quant``: the weight-quantized model with float activations (an ERM model's
    post-training integer weights); ``torch_int8``: the int8 graph computed like integer
    kernels; ``onnx_int8``: the ONNX file under onnxruntime; ``pt2e_reference``: pt2e's
    float32 execution of the Q/DQ graph. The slow torch forms see the source holdout only
    with ``slow_on_val``.
    """
    models = {
        "fake_quant": lambda: converted.weight_quantized,
        "torch_int8": lambda: converted.int8_model,
        "onnx_int8": lambda: onnx_predictor(converted.onnx_path),
        "pt2e_reference": lambda: converted.int8_graph,
    }
    return {
        form: run_predictions(
            models[form](),
            data,
            include_val=include_val and (slow_on_val or form not in _SLOW_FORMS),
        )
        for form in forms
    }


def reconvert(
    model: torch.nn.Module,
    bits: int,
    calibration: list[torch.Tensor],
    data: RunData,
    observer: str,
    forms: tuple[str, ...] = ("fake_quant", "onnx_int8"),
    include_val: bool = True,
    slow_on_val: bool = False,
) -> tuple[ConvertedMember, dict[str, Predictions]]:
    """Convert a trained model into a throwaway directory and predict ``data`` with ``forms``
    (for studies of the conversion itself; the returned member's ONNX file is gone)."""
    from qtdog_train.convert.member import convert_member  # torchao: only when converting

    with tempfile.TemporaryDirectory() as tmp:
        converted = convert_member(model, bits, calibration, Path(tmp) / "m.onnx", observer)
        preds = conversion_predictions(converted, data, forms, include_val, slow_on_val)
    return converted, preds


def _cpu_data(data: RunData) -> RunData:
    if data.mean.device.type == "cpu":
        return data
    from dataclasses import replace

    from qtdog_train.data.loader import DomainTensors

    def move(parts: dict[str, DomainTensors]) -> dict[str, DomainTensors]:
        return {k: DomainTensors(v.pixels.cpu(), v.labels.cpu()) for k, v in parts.items()}

    return replace(
        data,
        train=move(data.train),
        holdout=move(data.holdout),
        test=move(data.test),
        mean=data.mean.cpu(),
        std=data.std.cpu(),
    )


def training_report(result: MemberResult) -> dict[str, Any]:
    """What every member's report.json holds, converted or not: its seed, the selected
    checkpoint and its accuracy, the switch, and its training time over every invocation."""
    return {
        "member": result.index,
        "seed": result.seed,
        "best_step": result.best_step,
        "selected": result.best,
        "switch": result.switch,
        "train_seconds": result.seconds,
    }


def convert_and_report(
    cfg: TrainConfig, result: MemberResult, cpu: RunData, repo_dir: Path
) -> tuple[Member, dict[str, Any]]:
    """Convert one member, write its files, and measure fake-quant vs torch int8 vs ONNX
    (``cpu``: the run's data on the CPU, where conversion and onnxruntime work)."""
    onnx_name, weights_name = member_file_names(result.index)
    calibration = member_calibration(cfg, cpu, result.index)
    from qtdog_train.convert.member import convert_member  # torchao: only when converting

    converted = convert_member(
        result.model, cfg.bits, calibration, repo_dir / onnx_name, cfg.activation_observer
    )
    save_member_weights(
        converted.state,
        repo_dir / weights_name,
        {
            "architecture": cfg.backbone,
            "bits": str(cfg.bits),
            "seed": str(result.seed),
            "format": "qtdog-member-v1",
        },
    )
    preds = conversion_predictions(converted, cpu)
    report = {
        **training_report(result),
        "conversion": conversion_settings(cfg),
        **{name: summarize(p, cpu) for name, p in preds.items()},
        "agreement_torch_int8_vs_onnx": agreement(preds["torch_int8"], preds["onnx_int8"]),
        "agreement_fake_quant_vs_onnx": agreement(preds["fake_quant"], preds["onnx_int8"]),
        "torch_int8_convs": list(converted.torch_int8_convs),
        "onnx_int8_convs": list(converted.onnx_int8_convs),
    }
    member = _member_entry(result)
    return member, report


def _member_entry(result: MemberResult) -> Member:
    onnx_name, weights_name = member_file_names(result.index)
    return Member(
        name=f"member-{result.index}",
        onnx=onnx_name,
        weights=weights_name,
        seed=result.seed,
        val_acc=float(result.best["val_acc"]),
    )


def conversion_settings(cfg: TrainConfig) -> dict[str, Any]:
    """What a member's conversion depends on besides its weights (recorded in its report)."""
    return {
        "calibration_images": cfg.calibration_images,
        "calibration": cfg.calibration,
        "activation_observer": cfg.activation_observer,
    }


def _already_converted(
    report_path: Path, result: MemberResult, repo_dir: Path, cfg: TrainConfig
) -> tuple[Member, dict[str, Any]] | None:
    """A resumed run reuses a member's conversion when its report and files match the selection
    and the conversion settings (so ``--resume --activation-observer ...`` re-converts)."""
    if not report_path.is_file():
        return None
    report = json.loads(report_path.read_text())
    onnx_name, weights_name = member_file_names(result.index)
    if report.get("best_step") != result.best_step or "onnx_int8" not in report:
        return None
    if report.get("conversion") != conversion_settings(cfg):
        return None
    if not ((repo_dir / onnx_name).is_file() and (repo_dir / weights_name).is_file()):
        return None
    member = _member_entry(result)
    return member, report


def _domain_metrics(evaluation: dict[str, Any], data: RunData) -> dict[str, dict[str, Any]]:
    domains: dict[str, dict[str, Any]] = {}
    for domain, acc in evaluation["val"].items():
        domains[domain] = {
            "accuracy": acc,
            "split": f"holdout ({len(data.holdout[domain])} images)",
            "held_out": False,
        }
    for domain, acc in evaluation["test"].items():
        domains[domain] = {
            "accuracy": acc,
            "split": f"all ({len(data.test[domain])} images)",
            "held_out": True,
        }
    return domains


def load_run_data(
    cfg: TrainConfig, device: torch.device, report: Reporter | None = None
) -> RunData:
    """Index, decode (cached) and split the dataset of ``cfg`` for ``device``."""
    emit = report or (lambda event, payload: None)
    dataset = load_dataset(cfg.data, cfg.dataset)
    norm = normalization_for(cfg.backbone)
    emit("data", {"total": len(dataset), "domains": dataset.domains})
    return build_run_data(
        dataset,
        cfg.test_domains,
        cfg.image_size,
        norm.mean,
        norm.std,
        cfg.holdout_fraction,
        cfg.trial_seed,
        device,
        strict=cfg.strict,
        on_progress=lambda n: emit("decoded", {"n": n}),
    )


def run(cfg: TrainConfig, resume: bool = False, report: Reporter | None = None) -> dict[str, Any]:
    """Train ``cfg.members`` members, convert them, and write the model repository.

    ``report(event, payload)`` receives progress: ``"data"``, ``"member_start"``,
    ``"step"``, ``"member_done"``, ``"done"``.
    """
    cfg.validate()
    out = Path(cfg.out)
    run_file = out / "run.json"
    if run_file.exists() and not resume:
        raise QTDoGError(
            f"{out}: a run already exists here; pass --resume to continue it or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(run_file)
    emit = report or (lambda event, payload: None)
    device = resolve_device(cfg.device)
    data = load_run_data(cfg, device, emit)
    cpu_data = _cpu_data(data)  # once: conversion, calibration and onnxruntime work on the CPU
    dataset_name = data.dataset_name
    norm = normalization_for(cfg.backbone)
    for error in data.errors:
        emit("warning", {"message": f"skipped: {error}"})
    repo_dir = out / REPO_DIR
    repo_dir.mkdir(parents=True, exist_ok=True)
    members: list[Member] = []
    member_reports: list[dict[str, Any]] = []
    trained_models: list[torch.nn.Module] = []  # without export: the as-trained ensemble
    started = time.perf_counter()
    for index in range(cfg.members):
        emit("member_start", {"member": index, "members": cfg.members, "steps": cfg.steps})
        result = train_member(
            cfg,
            data,
            index,
            out / f"member-{index}",
            device,
            on_step=lambda s, m: emit("step", {"step": s, **m}),
            on_event=emit,
        )
        if not cfg.export:
            member_reports.append(training_report(result))
            (out / f"member-{index}" / "report.json").write_text(
                json.dumps(member_reports[-1], indent=2)
            )
            emit("member_done", member_reports[-1])
            if cfg.members > 1:
                trained_models.append(result.model.to(device).eval())
            continue
        converted = _already_converted(
            out / f"member-{index}" / "report.json", result, repo_dir, cfg
        )
        if converted is None:
            converted = convert_and_report(cfg, result, cpu_data, repo_dir)
            (out / f"member-{index}" / "report.json").write_text(json.dumps(converted[1], indent=2))
        member, member_report = converted
        members.append(member)
        member_reports.append(member_report)
        emit("member_done", member_report)

    summary: dict[str, Any] = {
        "config": cfg.to_dict(),
        "members": member_reports,
        "version": __version__,
    }
    if trained_models:
        # the members as trained (float ERM, fake-quant QT-DoG), mean logits: an ensemble
        # baseline with nothing converted (e.g. an ERM ensemble against EoQ)
        summary["ensemble"] = evaluate_run(mean_logits(trained_models), data)
    if cfg.export:
        ensemble_name = None
        onnx_paths = [repo_dir / m.onnx for m in members]
        if cfg.merge_members and len(members) > 1:
            ensemble_name = "ensemble.onnx"
            from qtdog_train.convert.onnx_export import merge_members

            merge_members(onnx_paths, repo_dir / ensemble_name)
            ensemble_eval = evaluate_run(onnx_predictor(repo_dir / ensemble_name), cpu_data)
        else:
            ensemble_eval = _mean_logits_eval(onnx_paths, cpu_data)
        summary["ensemble"] = ensemble_eval
        command = (
            "qtdog train " + " ".join(shlex.quote(a) for a in sys.argv[2:])
            if "train" in sys.argv[1:2]
            else None
        )
        training = {
            "dataset": dataset_name,
            "source_domains": data.source_domains,
            "test_domains": data.test_domains,
            "algorithm": cfg.algorithm + (" (official-compat)" if cfg.official_compat else ""),
            "steps": cfg.steps,
            "q_start": cfg.q_start if cfg.algorithm == "qtdog" else None,
            "bits": cfg.bits,
            "image_size": cfg.image_size,
            "batch_size_per_domain": cfg.batch_size,
            "lr": cfg.lr,
            "trial_seed": cfg.trial_seed,
            "selection": "training-domain validation (best mean source-holdout accuracy)",
            "qtdog_version": __version__,
            "command": command,
            "config": cfg.to_dict(),
        }
        metrics = {
            "domains": _domain_metrics(ensemble_eval, data),
            "val_acc": ensemble_eval["val_acc"],
            "test_acc": ensemble_eval["test_acc"],
            "members": [
                {
                    k: r[k]
                    for k in (
                        "member",
                        "seed",
                        "best_step",
                        "agreement_torch_int8_vs_onnx",
                        "onnx_int8_convs",
                    )
                }
                | {
                    "fake_quant_test_acc": r["fake_quant"]["test_acc"],
                    "torch_int8_test_acc": r["torch_int8"]["test_acc"],
                    "onnx_test_acc": r["onnx_int8"]["test_acc"],
                }
                for r in member_reports
            ],
        }
        quantization = Quantization(
            weight_bits=cfg.bits,
            weight_scheme="lsq-per-channel-symmetric"
            if cfg.algorithm == "qtdog"
            else "ptq-maxabs-per-channel-symmetric",
        )
        preprocessing = Preprocessing(
            size=(cfg.image_size, cfg.image_size),
            resize="squash",
            interpolation="bilinear",
            mean=norm.mean,
            std=norm.std,
        )
        write_repository(
            repo_dir,
            cfg.backbone,
            data.classes,
            members,
            preprocessing,
            quantization,
            training,
            metrics,
            ensemble_name,
        )
        summary["repository"] = str(repo_dir)
    summary["seconds"] = time.perf_counter() - started
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    emit("done", summary)
    return summary


def _mean_logits_eval(paths: list[Path], cpu: RunData) -> dict[str, Any]:
    return evaluate_run(mean_logits([onnx_predictor(p) for p in paths]), cpu)


__all__ = [
    "REPO_DIR",
    "calibration_batches",
    "conversion_predictions",
    "conversion_settings",
    "load_run_data",
    "member_calibration",
    "onnx_predictor",
    "reconvert",
    "run",
]
