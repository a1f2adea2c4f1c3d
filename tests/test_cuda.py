"""The CUDA paths: training with data and augmentation on the GPU, and SDK prediction there.

Skipped where torch sees no CUDA GPU (CI, this project's CPU machines); run on a
lent GPU by ``bench/gpu/run.sh``, which records the outcome with the card's name.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import REPO_ROOT, tiny_config  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


def test_run_data_and_augmentation_live_on_the_gpu(shapes_root: Path) -> None:
    from qtdog_train.pipeline import load_run_data

    cfg = tiny_config(shapes_root, "unused", device="cuda")
    data = load_run_data(cfg, torch.device("cuda"))
    assert all(part.pixels.is_cuda for part in data.train.values())
    generator = torch.Generator(device="cuda")
    generator.manual_seed(0)
    x, y = data.sample_batch(4, generator)
    assert x.is_cuda and y.is_cuda
    assert x.shape == (4 * len(data.source_domains), 3, 32, 32)
    assert torch.isfinite(x).all()


def test_qtdog_trains_on_cuda_converts_and_loads(shapes_root: Path, tmp_path: Path) -> None:
    """Eager CUDA training through the LSQ switch, then the CPU-only int8 conversion."""
    from qtdog_sdk import QTDoGEnsemble
    from qtdog_train.pipeline import run

    cfg = tiny_config(shapes_root, tmp_path / "run", device="cuda", compile="off", members=1)
    summary = run(cfg)
    assert summary["config"]["device"] == "cuda"
    member = summary["members"][0]
    assert member["switch"] is not None and member["best_step"] > cfg.q_start
    log = [
        json.loads(x)
        for x in (tmp_path / "run" / "member-0" / "log.jsonl").read_text().splitlines()
    ]
    assert any(r.get("quantized") for r in log)
    model = QTDoGEnsemble.from_pretrained(summary["repository"], backend="onnx", device="cpu")
    preds = model.predict(sorted(shapes_root.glob("sketch/*/000.png")))
    assert [p.error for p in preds] == [None] * len(preds)


def test_trainer_compiled_on_cuda_through_the_switch(shapes_root: Path, tmp_path: Path) -> None:
    """--compile on: the compiled forward before the switch, and again after LSQ is attached."""
    from qtdog_train.pipeline import run

    cfg = tiny_config(
        shapes_root, tmp_path / "run", device="cuda", compile="on", members=1, export=False
    )
    summary = run(cfg)
    member = summary["members"][0]
    assert member["switch"] is not None and member["best_step"] > cfg.q_start
    log = [
        json.loads(x)
        for x in (tmp_path / "run" / "member-0" / "log.jsonl").read_text().splitlines()
    ]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses and all(np.isfinite(losses))


def test_torch_backend_on_cuda_agrees_with_onnx_on_cpu() -> None:
    """The packaged default model: bf16 on the GPU vs the int8 ONNX graph on the CPU."""
    from qtdog_sdk import QTDoGEnsemble

    images = sorted((REPO_ROOT / "examples").glob("*.*g"))
    assert images, "the committed example images are missing"
    gpu = QTDoGEnsemble.from_pretrained(backend="torch", device="cuda")
    cpu = QTDoGEnsemble.from_pretrained(backend="onnx", device="cpu")
    assert gpu.device == "cuda"
    p_gpu = gpu.predict_proba(images, batch_size=4)
    p_cpu = cpu.predict_proba(images, batch_size=4)
    assert p_gpu.shape == p_cpu.shape == (len(images), len(gpu.labels))
    np.testing.assert_allclose(p_gpu.sum(axis=1), 1.0, atol=1e-4)
    agreement = float((p_gpu.argmax(1) == p_cpu.argmax(1)).mean())
    assert agreement >= 0.8, f"top-1 agreement GPU torch vs CPU ONNX: {agreement:.2f}"
