"""Training and evaluation data for one leave-domains-out run.

All decoded pixels of a run live in one uint8 tensor on the training device;
a minibatch is an index gather plus batched augmentation, with no worker
processes. Each step draws ``batch_size`` images from every source domain
(DomainBed's balanced minibatches, sampled with replacement).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from qtdog_train.data.augment import domainbed_augment
from qtdog_train.data.cache import decode_images
from qtdog_train.data.datasets import MultiDomainDataset, resolve_domains


@dataclass
class DomainTensors:
    """Pixels (uint8 NCHW) and labels of one split of one domain, on the device."""

    pixels: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class RunData:
    """Everything a run reads: per source domain train/holdout, per test domain all images."""

    classes: list[str]
    source_domains: list[str]
    test_domains: list[str]
    train: dict[str, DomainTensors]
    holdout: dict[str, DomainTensors]
    test: dict[str, DomainTensors]
    mean: torch.Tensor
    std: torch.Tensor
    errors: list[str] = field(default_factory=list)
    dataset_name: str = ""

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW -> float normalized NCHW (the model's input, channels-last in memory)."""
        x = (pixels.float() / 255.0 - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)

    def sample_batch(
        self, batch_size: int, generator: torch.Generator, augment: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One balanced minibatch: ``batch_size`` images from every source domain."""
        xs, ys = [], []
        for domain in self.source_domains:
            part = self.train[domain]
            index = torch.randint(
                len(part), (batch_size,), generator=generator, device=part.labels.device
            )
            xs.append(part.pixels[index])
            ys.append(part.labels[index])
        x = torch.cat(xs).float() / 255.0
        if augment:
            x = domainbed_augment(x, generator)
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return x, torch.cat(ys)

    def iter_eval(
        self, part: DomainTensors, batch_size: int = 256
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(part), batch_size):
            yield (
                self.normalize(part.pixels[start : start + batch_size]),
                part.labels[start : start + batch_size],
            )


def _to_tensors(
    pixels: np.ndarray, labels: np.ndarray, index: np.ndarray, device: torch.device
) -> DomainTensors:
    chosen = np.ascontiguousarray(pixels[index]).transpose(0, 3, 1, 2)
    return DomainTensors(
        pixels=torch.from_numpy(np.ascontiguousarray(chosen)).to(device),
        labels=torch.from_numpy(labels[index]).to(device),
    )


def build_run_data(
    dataset: MultiDomainDataset,
    test_domains: list[str],
    image_size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    holdout_fraction: float,
    trial_seed: int,
    device: torch.device,
    strict: bool = False,
    interpolation: str = "bilinear",
    on_progress: Callable[[int], None] | None = None,
) -> RunData:
    """Decode (or read from cache) every image and split each domain as DomainBed does."""
    sources, tests = resolve_domains(dataset, test_domains)
    train, holdout, test = {}, {}, {}
    errors: list[str] = []
    for domain in dataset.domains:
        decoded = decode_images(
            dataset.files[domain],
            (image_size, image_size),
            interpolation,
            strict=strict,
            on_progress=on_progress,
        )
        errors.extend(decoded.errors)
        labels = dataset.labels[domain]
        split = dataset.split(domain, holdout_fraction, trial_seed)
        keep_train = split.train[decoded.ok[split.train]]
        keep_holdout = split.holdout[decoded.ok[split.holdout]]
        if domain in tests:
            test[domain] = _to_tensors(decoded.pixels, labels, np.flatnonzero(decoded.ok), device)
        else:
            train[domain] = _to_tensors(decoded.pixels, labels, keep_train, device)
            holdout[domain] = _to_tensors(decoded.pixels, labels, keep_holdout, device)
    shape = (1, 3, 1, 1)
    return RunData(
        dataset_name=dataset.name,
        classes=dataset.classes,
        source_domains=sources,
        test_domains=tests,
        train=train,
        holdout=holdout,
        test=test,
        mean=torch.tensor(mean, device=device).view(shape),
        std=torch.tensor(std, device=device).view(shape),
        errors=errors,
    )
