"""DomainBed-layout datasets: ``ROOT/<domain>/<class>/<image>``.

Known benchmarks are listed by name with their domains (as data, not code);
any other folder in the same layout works too, with its domains discovered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qtdog_sdk.errors import DatasetError
from qtdog_sdk.images import IMAGE_EXTENSIONS

KNOWN_DATASETS: dict[str, tuple[str, ...]] = {
    "PACS": ("art_painting", "cartoon", "photo", "sketch"),
    "VLCS": ("Caltech101", "LabelMe", "SUN09", "VOC2007"),
    "OfficeHome": ("Art", "Clipart", "Product", "Real World"),
    "TerraIncognita": ("location_100", "location_38", "location_43", "location_46"),
    "DomainNet": ("clipart", "infograph", "painting", "quickdraw", "real", "sketch"),
}


@dataclass(frozen=True)
class DomainSplit:
    """Indices into one domain's file list: the training part and the held-out part."""

    train: np.ndarray
    holdout: np.ndarray


@dataclass
class MultiDomainDataset:
    """File lists and labels of every domain of a DomainBed-layout dataset."""

    name: str
    root: Path
    domains: list[str]
    classes: list[str]
    files: dict[str, list[Path]]
    labels: dict[str, np.ndarray]

    def __len__(self) -> int:
        return sum(len(v) for v in self.files.values())

    def split(self, domain: str, holdout_fraction: float, trial_seed: int) -> DomainSplit:
        """Random split of one domain, reproducible from the trial seed (DomainBed style)."""
        n = len(self.files[domain])
        rng = np.random.default_rng([trial_seed, self.domains.index(domain)])
        order = rng.permutation(n)
        n_holdout = round(n * holdout_fraction)
        return DomainSplit(train=np.sort(order[n_holdout:]), holdout=np.sort(order[:n_holdout]))


def _list_dirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_dataset(root: str | Path, name: str | None = None) -> MultiDomainDataset:
    """Index a DomainBed-layout folder.

    ``name`` selects a known benchmark (its domain list must be present under
    ``root``, or under ``root/<name>``); without it, every sub-folder is a domain.
    Every domain must hold the same class folders; a mismatch is an error naming
    the domain and the class.
    """
    root = Path(root).expanduser()
    if name is not None and name in KNOWN_DATASETS and (root / name).is_dir():
        root = root / name
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    if name is not None and name in KNOWN_DATASETS:
        domains = list(KNOWN_DATASETS[name])
        missing = [d for d in domains if not (root / d).is_dir()]
        if missing:
            raise DatasetError(f"{root}: {name} domain folder(s) missing: {', '.join(missing)}")
    else:
        domains = _list_dirs(root)
        if len(domains) < 2:
            raise DatasetError(
                f"{root}: expected at least two domain folders, found {len(domains)}"
            )
    per_domain = {domain: _list_dirs(root / domain) for domain in domains}
    reference = sorted(set().union(*per_domain.values()))
    if not reference:
        raise DatasetError(f"{root}: no class folders in any domain")
    files: dict[str, list[Path]] = {}
    labels: dict[str, np.ndarray] = {}
    for domain in domains:
        missing = [c for c in reference if c not in per_domain[domain]]
        if missing:
            raise DatasetError(
                f"{root / domain}: missing class(es) {', '.join(missing)} (classes must agree across domains)"
            )
        classes = reference
        domain_files: list[Path] = []
        domain_labels: list[int] = []
        for label, cls in enumerate(classes):
            images = sorted(
                p
                for p in (root / domain / cls).rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not images:
                raise DatasetError(f"{root / domain / cls}: class folder has no images")
            domain_files.extend(images)
            domain_labels.extend([label] * len(images))
        files[domain] = domain_files
        labels[domain] = np.asarray(domain_labels, dtype=np.int64)
    return MultiDomainDataset(
        name=name or root.name,
        root=root,
        domains=domains,
        classes=reference,
        files=files,
        labels=labels,
    )


def resolve_domains(
    dataset: MultiDomainDataset, test_domains: list[str]
) -> tuple[list[str], list[str]]:
    """Split the dataset's domains into (source, test), checking every name."""
    unknown = [d for d in test_domains if d not in dataset.domains]
    if unknown:
        raise DatasetError(
            f"--test-domain: unknown domain(s) {', '.join(unknown)}; {dataset.name} has {', '.join(dataset.domains)}"
        )
    sources = [d for d in dataset.domains if d not in test_domains]
    if not sources:
        raise DatasetError(
            "--test-domain: every domain is held out; keep at least one source domain"
        )
    return sources, list(test_domains)
