"""``qtdog train``: the training backend's command (registered by the SDK's CLI).

This module stays import-light (no torch at import) so ``qtdog --help`` is fast;
the work happens in :mod:`qtdog_train.pipeline`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from qtdog_train.config import DEFAULT_ACTIVATION_OBSERVER

TRAIN_HELP = """Train an ERM or QT-DoG ensemble on a DomainBed-layout dataset and write an int8 model repository.

Example:

  qtdog train --data ../shared/data/PACS --dataset PACS --test-domain sketch --algorithm qtdog --members 5 --steps 5000 --q-start 2000 --image-size 224 --out runs/pacs-sketch
"""


def train_command(
    data: Annotated[
        Path, typer.Option(help="Dataset root in DomainBed layout: ROOT/<domain>/<class>/<image>.")
    ],
    out: Annotated[
        Path,
        typer.Option(help="Run folder: logs, checkpoints, and the model repository in OUT/model."),
    ],
    dataset: Annotated[
        str | None,
        typer.Option(
            help="Known dataset name (PACS, VLCS, OfficeHome, TerraIncognita, DomainNet); default: every sub-folder is a domain."
        ),
    ] = None,
    test_domain: Annotated[
        list[str], typer.Option("--test-domain", help="Held-out domain (repeat for several).")
    ] = ["sketch"],  # noqa: B006
    algorithm: Annotated[str, typer.Option(help="erm or qtdog.")] = "qtdog",
    official_compat: Annotated[
        bool,
        typer.Option(
            "--official-compat",
            help="Behave like the released QT-DoG code: after --q-start, conv weights and step sizes are frozen; BN affine and classifier train.",
        ),
    ] = False,
    bits: Annotated[int, typer.Option(help="Weight bits (2-8); 7 in the paper.")] = 7,
    steps: Annotated[int, typer.Option(help="Training steps.")] = 5000,
    q_start: Annotated[
        int, typer.Option(help="Step at which LSQ weight quantization switches on.")
    ] = 2000,
    eval_every: Annotated[
        int, typer.Option(help="Evaluate (source holdout + test) every N steps.")
    ] = 250,
    checkpoint_every: Annotated[
        int, typer.Option(help="Write a resumable checkpoint every N steps.")
    ] = 250,
    batch_size: Annotated[int, typer.Option(help="Images per source domain per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 5e-5,
    s_lr: Annotated[
        float | None, typer.Option(help="Learning rate of the LSQ step sizes; default: --lr.")
    ] = None,
    s_param: Annotated[
        str,
        typer.Option(
            help="How LSQ learns each step size s: log (log s, default; Adam moves s by relative "
            "steps of ~lr) or linear (s itself, as the paper; steps of ~lr, kept positive as |s|)."
        ),
    ] = "log",
    s_init: Annotated[
        str, typer.Option(help="Initial step size: lsq (paper), maxabs, or mse.")
    ] = "mse",
    quantized_layers: Annotated[
        str,
        typer.Option(
            help="Convs LSQ quantizes: all (paper) or no-depthwise (depthwise convs train in float "
            "and get post-training integers at conversion)."
        ),
    ] = "all",
    weight_decay: Annotated[float, typer.Option(help="Adam weight decay.")] = 0.0,
    dropout: Annotated[float, typer.Option(help="Dropout before the classifier.")] = 0.0,
    image_size: Annotated[
        int, typer.Option(help="Training and model input resolution (square).")
    ] = 224,
    backbone: Annotated[str, typer.Option(help="timm model name.")] = "tf_efficientnet_lite0",
    pretrained: Annotated[
        str,
        typer.Option(
            help="auto (offline weights for Lite0, the Hub otherwise), none, or a .safetensors path."
        ),
    ] = "auto",
    members: Annotated[
        int, typer.Option(help="Ensemble members (EoQ), each with its own seed.")
    ] = 1,
    seed: Annotated[int, typer.Option(help="Seed of member 0 (member i uses seed + i).")] = 0,
    trial_seed: Annotated[int, typer.Option(help="Seed of the 80/20 domain splits.")] = 0,
    holdout_fraction: Annotated[
        float, typer.Option(help="Fraction of each domain held out for validation.")
    ] = 0.2,
    calibration_images: Annotated[
        int, typer.Option(help="Source-domain images used to calibrate int8 activations.")
    ] = 256,
    calibration: Annotated[
        str,
        typer.Option(
            help="Calibration images as they are (plain) or with the training augmentation "
            "(augmented). plain won on held-out source domains: docs/results.md section 3."
        ),
    ] = "plain",
    activation_observer: Annotated[
        str,
        typer.Option(
            help="How int8 activation ranges are calibrated: minmax (the observed range) or "
            "histogram (clipping chosen by L2 error). minmax had the smaller worst-case cost "
            "on held-out source domains: docs/results.md section 3."
        ),
    ] = DEFAULT_ACTIVATION_OBSERVER,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    compile: Annotated[
        str,
        typer.Option(
            help="torch.compile the training forward: on, off, or auto (on CUDA, the "
            "quantized phase when >= 1500 steps remain; measured in docs/results.md)."
        ),
    ] = "auto",
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail on a corrupt image instead of skipping it.")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue an interrupted run in --out from its checkpoints."),
    ] = False,
    export: Annotated[
        bool, typer.Option(help="Convert to int8 and write the model repository.")
    ] = True,
) -> None:
    from qtdog_train.config import TrainConfig
    from qtdog_train.pipeline import run
    from qtdog_train.progress import RichReporter

    cfg = TrainConfig(
        data=str(data),
        out=str(out),
        dataset=dataset,
        test_domains=list(test_domain),
        algorithm=algorithm,
        official_compat=official_compat,
        bits=bits,
        steps=steps,
        q_start=q_start,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        batch_size=batch_size,
        lr=lr,
        s_lr=s_lr,
        s_init=s_init,
        s_param=s_param,
        quantized_layers=quantized_layers,
        weight_decay=weight_decay,
        dropout=dropout,
        image_size=image_size,
        backbone=backbone,
        pretrained=pretrained,
        members=members,
        seed=seed,
        trial_seed=trial_seed,
        holdout_fraction=holdout_fraction,
        calibration_images=calibration_images,
        calibration=calibration,
        activation_observer=activation_observer,
        device=device,
        compile=compile,
        strict=strict,
        export=export,
    )
    reporter = RichReporter()
    summary: dict[str, Any] = run(cfg, resume=resume, report=reporter)
    reporter.close()
    reporter.print_summary(summary)


train_command.__doc__ = TRAIN_HELP
