"""Shared fixtures: a generated multi-domain dataset and a real model repository built from it.

``tiny_repo`` runs the real training pipeline (2 QT-DoG members, a few steps
at 32 px, LSQ switched on mid-run), the real int8 conversion and ONNX export,
so every SDK, CLI and demo test exercises a repository the product itself
produced. Built once per test session (about half a minute on 2 cores).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before torch is imported anywhere in the test session (see train/__init__.py for why).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO_ROOT = Path(__file__).resolve().parents[1]
PACS_ROOT = REPO_ROOT.parent / "shared" / "data" / "PACS"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep decoded-image caches and Hub caches of the tests out of the user's home."""
    base = tmp_path_factory.mktemp("cache")
    os.environ["QTDOG_CACHE"] = str(base / "qtdog")
    os.environ.setdefault("HF_HOME", str(base / "hf"))


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 domains (photo, cartoon, sketch) x 3 classes (circle, square, triangle), 12 images each."""
    from qtdog_train.data.synthetic import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), per_class=12, size=48)


BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench_module(filename: str):
    """Import a script from bench/ (not a package) as a module. bench/ is on sys.path only
    while it loads, for its own sibling imports (``from speed import ...``)."""
    import importlib.util
    import sys

    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(
            f"bench_{Path(filename).stem}", BENCH / filename
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def cpu_session(model: Path | bytes):
    """An onnxruntime session on the CPU provider for an ONNX file or serialized model, warnings off."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_logits(path: Path, images):
    """Run an ONNX file on a CPU tensor batch with onnxruntime's CPU provider; its first output."""
    session = cpu_session(path)
    return session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]


def tiny_config(data: Path, out: Path, **overrides):
    from qtdog_train.config import TrainConfig

    settings = {
        "data": str(data),
        "out": str(out),
        "test_domains": ["sketch"],
        "algorithm": "qtdog",
        "steps": 12,
        "q_start": 6,
        "eval_every": 6,
        "checkpoint_every": 6,
        "batch_size": 4,
        "image_size": 32,
        "members": 2,
        "pretrained": "none",
        "calibration_images": 16,
        "device": "cpu",
    }
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="session")
def tiny_run(shapes_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Summary of a real 2-member QT-DoG run on the shapes dataset."""
    pytest.importorskip("torch")
    from qtdog_train.pipeline import run

    out = tmp_path_factory.mktemp("tiny-run")
    return run(tiny_config(shapes_root, out))


@pytest.fixture(scope="session")
def tiny_repo(tiny_run: dict) -> Path:
    """Path to the model repository written by ``tiny_run`` (treat as read-only; copy to modify)."""
    return Path(tiny_run["repository"])


@pytest.fixture(scope="session")
def shapes_images(shapes_root: Path) -> list[Path]:
    """A few real image files from every domain of the shapes dataset."""
    return sorted(shapes_root.glob("*/*/00[0-1].png"))
