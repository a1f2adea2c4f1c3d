"""Every hyperparameter of a training run, in one serializable object.

The CLI flags map one-to-one onto these fields; the run writes the object to
``run.json`` and into the model repository's provenance, so a result can
always be traced to the exact settings that produced it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

ALGORITHMS = ("erm", "qtdog")
CALIBRATIONS = ("plain", "augmented")
#: Names of convert.pt2e.ACTIVATION_OBSERVERS (kept here so the config needs no torchao).
ACTIVATION_OBSERVERS = ("minmax", "histogram")
#: Chosen on held-out *source* domains (docs/results.md section 3, second round).
DEFAULT_ACTIVATION_OBSERVER = "minmax"


@dataclass
class TrainConfig:
    data: str
    out: str
    dataset: str | None = None
    test_domains: list[str] = field(default_factory=lambda: ["sketch"])
    algorithm: str = "qtdog"
    official_compat: bool = False
    bits: int = 7
    steps: int = 5000
    q_start: int = 2000
    eval_every: int = 250
    checkpoint_every: int = 250
    batch_size: int = 32
    lr: float = 5e-5
    s_lr: float | None = None
    s_init: str = "mse"
    #: LSQ stores each step size as "log" (log s, the default) or "linear" (s, as the paper)
    s_param: str = "log"
    quantized_layers: str = "all"
    weight_decay: float = 0.0
    dropout: float = 0.0
    image_size: int = 224
    backbone: str = "tf_efficientnet_lite0"
    pretrained: str = "auto"
    members: int = 1
    seed: int = 0
    trial_seed: int = 0
    holdout_fraction: float = 0.2
    device: str = "auto"
    compile: str = "auto"
    calibration_images: int = 256
    calibration: str = "plain"
    activation_observer: str = DEFAULT_ACTIVATION_OBSERVER
    strict: bool = False
    export: bool = True
    merge_members: bool = True
    #: also keep each member's checkpoint at the switch (``float-phase.pt``), from which a
    #: QT-DoG variant can start (bench/sweep.py ``--share-float-phase``); off: it costs a
    #: second checkpoint's disk
    keep_float_phase: bool = False

    def validate(self) -> None:
        """Reject inconsistent settings with a one-line message naming the flag."""
        from qtdog_sdk.errors import QTDoGError

        if self.algorithm not in ALGORITHMS:
            raise QTDoGError(
                f"--algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}"
            )
        if not 2 <= self.bits <= 8:
            raise QTDoGError(f"--bits must be between 2 and 8, got {self.bits}")
        if self.steps < 1:
            raise QTDoGError(f"--steps must be positive, got {self.steps}")
        if self.algorithm == "qtdog" and not 0 <= self.q_start < self.steps:
            raise QTDoGError(
                f"--q-start must be in [0, --steps), got {self.q_start} with --steps {self.steps}"
            )
        if self.members < 1:
            raise QTDoGError(f"--members must be at least 1, got {self.members}")
        if not 0 < self.holdout_fraction < 1:
            raise QTDoGError(f"--holdout-fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.batch_size < 1 or self.eval_every < 1 or self.image_size < 16:
            raise QTDoGError(
                "--batch-size and --eval-every must be positive and --image-size at least 16"
            )
        if self.calibration not in CALIBRATIONS:
            raise QTDoGError(
                f"--calibration must be one of {', '.join(CALIBRATIONS)}, got {self.calibration!r}"
            )
        if self.activation_observer not in ACTIVATION_OBSERVERS:
            raise QTDoGError(
                f"--activation-observer must be one of {', '.join(ACTIVATION_OBSERVERS)}, "
                f"got {self.activation_observer!r}"
            )
        if self.compile not in ("auto", "on", "off"):
            raise QTDoGError(f"--compile must be auto, on or off, got {self.compile!r}")
        from qtdog_train.quant.lsq import QUANTIZED_LAYERS, STEP_PARAMETRIZATIONS

        if self.quantized_layers not in QUANTIZED_LAYERS:
            raise QTDoGError(
                f"--quantized-layers must be one of {', '.join(QUANTIZED_LAYERS)}, "
                f"got {self.quantized_layers!r}"
            )
        if self.s_param not in STEP_PARAMETRIZATIONS:
            raise QTDoGError(
                f"--s-param must be one of {', '.join(STEP_PARAMETRIZATIONS)}, got {self.s_param!r}"
            )
        if self.official_compat and self.algorithm != "qtdog":
            raise QTDoGError("--official-compat only applies to --algorithm qtdog")

    @property
    def step_size_lr(self) -> float:
        return self.lr if self.s_lr is None else self.s_lr

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
