"""The training backend end to end on a generated dataset: data, algorithms, resume, conversion, CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import tiny_config  # noqa: E402

from qtdog_sdk.errors import DatasetError, QTDoGError  # noqa: E402
from qtdog_train.data.datasets import load_dataset, resolve_domains  # noqa: E402


def test_dataset_layout_and_splits(shapes_root: Path) -> None:
    dataset = load_dataset(shapes_root)
    assert dataset.domains == ["cartoon", "photo", "sketch"]
    assert dataset.classes == ["circle", "square", "triangle"]
    assert len(dataset) == 3 * 3 * 12
    a = dataset.split("photo", 0.2, trial_seed=0)
    b = dataset.split("photo", 0.2, trial_seed=0)
    c = dataset.split("photo", 0.2, trial_seed=1)
    assert np.array_equal(a.holdout, b.holdout) and not np.array_equal(a.holdout, c.holdout)
    assert len(a.holdout) == round(36 * 0.2) and not set(a.train) & set(a.holdout)
    assert resolve_domains(dataset, ["sketch"]) == (["cartoon", "photo"], ["sketch"])
    with pytest.raises(DatasetError, match="unknown domain"):
        resolve_domains(dataset, ["paintings"])


def test_domain_missing_a_class_is_named(shapes_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "broken"
    shutil.copytree(shapes_root, root)
    shutil.rmtree(root / "cartoon" / "square")
    with pytest.raises(DatasetError, match=r"cartoon: missing class\(es\) square"):
        load_dataset(root)
    with pytest.raises(DatasetError, match="domain folder"):
        load_dataset(root, "PACS")


def test_corrupt_image_is_reported_and_skipped_or_fails_strict(
    shapes_root: Path, tmp_path: Path
) -> None:
    from qtdog_train.data.loader import build_run_data

    root = tmp_path / "corrupt"
    shutil.copytree(shapes_root, root)
    bad = root / "photo" / "circle" / "999.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    dataset = load_dataset(root)
    args = dict(
        test_domains=["sketch"],
        image_size=32,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        holdout_fraction=0.2,
        trial_seed=0,
        device=torch.device("cpu"),
    )
    data = build_run_data(dataset, **args)
    assert len(data.errors) == 1 and "999.png" in data.errors[0]
    kept = len(data.train["photo"]) + len(data.holdout["photo"])
    assert kept == 3 * 12  # the 37th file was skipped
    with pytest.raises(DatasetError, match=r"999\.png"):
        build_run_data(dataset, **args, strict=True)


def test_builders_of_one_cache_entry_at_once_all_succeed(shapes_root: Path, tmp_path: Path) -> None:
    """Parallel sweeps decode the same dataset into one cache at the same time: every
    builder must get its pixels and leave one complete entry behind."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from qtdog_train.data.cache import decode_images

    files = sorted(shapes_root.rglob("*.png"))
    builders = 6
    decoded_all = threading.Barrier(builders)  # all builders write the entry together

    def build(_: int) -> bytes:
        seen = 0

        def progress(n: int) -> None:
            nonlocal seen
            seen += n
            if seen == len(files):
                decoded_all.wait(timeout=60)

        images = decode_images(
            files, (24, 24), cache_dir=tmp_path / "cache", workers=1, on_progress=progress
        )
        return images.pixels.tobytes()

    with ThreadPoolExecutor(builders) as pool:
        results = list(pool.map(build, range(builders)))
    assert len(set(results)) == 1
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".json", ".npy"]


def test_augmentation_is_batched_and_in_range() -> None:
    from qtdog_train.data.augment import domainbed_augment

    generator = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 32, 32)
    y = domainbed_augment(x, generator)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert not torch.allclose(x, y)
    y2 = domainbed_augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(y, y2)


def test_mean_logits_averages_the_members() -> None:
    from qtdog_train.evaluation import mean_logits

    x = torch.randn(4, 3)
    ensemble = mean_logits([lambda t: 2 * t, lambda t: -t, lambda t: t + 3])
    assert torch.allclose(ensemble(x), (2 * x - x + x + 3) / 3)


def test_calibration_batches_plain_and_augmented(shapes_root: Path, tmp_path: Path) -> None:
    from qtdog_train.pipeline import calibration_batches, load_run_data

    data = load_run_data(tiny_config(shapes_root, tmp_path), torch.device("cpu"))
    plain = calibration_batches(data, 20, batch=8, seed=3)
    again = calibration_batches(data, 20, batch=8, seed=3)
    augmented = calibration_batches(data, 20, batch=8, seed=3, augment=True)
    assert [b.shape[0] for b in plain] == [8, 8, 4]  # 10 per source domain
    assert all(torch.equal(a, b) for a, b in zip(plain, again, strict=True))
    assert [b.shape for b in augmented] == [b.shape for b in plain]
    assert not any(torch.allclose(a, b) for a, b in zip(plain, augmented, strict=True))
    # augmented images stay valid images: inside the normalized range of [0, 1] pixels
    lo = float(((0 - data.mean) / data.std).min())
    hi = float(((1 - data.mean) / data.std).max())
    assert all(lo - 1e-5 <= float(b.min()) and float(b.max()) <= hi + 1e-5 for b in augmented)


def test_tiny_qtdog_run_converts_every_conv_to_int8(tiny_run: dict) -> None:
    assert len(tiny_run["members"]) == 2
    for report in tiny_run["members"]:
        assert report["switch"]["step"] == 6
        assert report["best_step"] > 6  # QT-DoG selects only among quantized checkpoints
        int8, total = report["onnx_int8_convs"]
        assert int8 == total == 49
        assert report["torch_int8_convs"] == [49, 49]
        for key in ("fake_quant", "torch_int8", "onnx_int8"):
            assert set(report[key]["test"]) == {"sketch"}
        assert report["agreement_torch_int8_vs_onnx"] >= 0.99
    repo = Path(tiny_run["repository"])
    config = json.loads((repo / "config.json").read_text())
    assert config["labels"] == ["circle", "square", "triangle"]
    assert config["training"]["source_domains"] == ["cartoon", "photo"]
    assert config["metrics"]["domains"]["sketch"]["held_out"] is True
    assert (repo / "ensemble.onnx").is_file() and (repo / "README.md").is_file()


def test_onnx_keeps_exactly_the_learned_integers(tiny_repo: Path) -> None:
    """The int8 weights in the ONNX graph are the integers learned in training
    (BatchNorm folding may only flip a channel's sign)."""
    import onnx
    from onnx import numpy_helper
    from safetensors.numpy import load_file

    learned = {
        k: v
        for k, v in load_file(str(tiny_repo / "member-0.safetensors")).items()
        if k.endswith("weight_int8")
    }
    assert len(learned) == 49
    graph = onnx.load(str(tiny_repo / "member-0.onnx")).graph
    onnx_ints = [
        numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8
    ]
    onnx_by_shape: dict[tuple, list[np.ndarray]] = {}
    for array in onnx_ints:
        onnx_by_shape.setdefault(array.shape, []).append(np.abs(array.astype(np.int16)))
    for name, levels in learned.items():
        candidates = onnx_by_shape.get(levels.shape, [])
        assert any(np.array_equal(np.abs(levels.astype(np.int16)), c) for c in candidates), name
    assert max(int(np.abs(a).max()) for a in onnx_ints) <= 64  # 7-bit levels inside int8


def test_resume_after_interruption_matches_uninterrupted_run(
    shapes_root: Path, tmp_path: Path
) -> None:
    from qtdog_train.pipeline import run

    def interrupt_at_8(event: str, payload: dict) -> None:
        if event == "step" and payload["step"] == 8:
            raise KeyboardInterrupt

    cfg = tiny_config(shapes_root, tmp_path / "interrupted", members=1, export=False)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, report=interrupt_at_8)
    with pytest.raises(QTDoGError, match="--resume"):
        run(cfg)
    resumed = run(cfg, resume=True)
    straight = run(tiny_config(shapes_root, tmp_path / "straight", members=1, export=False))
    log = [
        json.loads(x)
        for x in (tmp_path / "interrupted" / "member-0" / "log.jsonl").read_text().splitlines()
    ]
    assert [r.get("step") for r in log if "val_acc" in r] == [6, 12]
    assert resumed["members"][0]["selected"] == straight["members"][0]["selected"]
    a = torch.load(tmp_path / "interrupted" / "member-0" / "checkpoint.pt", weights_only=True)[
        "model"
    ]
    b = torch.load(tmp_path / "straight" / "member-0" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_resume_reuses_a_conversion_only_under_the_same_settings(
    shapes_root: Path, tmp_path: Path
) -> None:
    from qtdog_train.pipeline import run

    cfg = tiny_config(shapes_root, tmp_path / "run", members=1, merge_members=False)
    first = run(cfg)
    onnx = tmp_path / "run" / "model" / "member-0.onnx"
    assert first["members"][0]["conversion"]["activation_observer"] == "minmax"  # the default
    stamp = onnx.stat().st_mtime_ns
    again = run(cfg, resume=True)
    assert onnx.stat().st_mtime_ns == stamp  # same settings: nothing converted again
    assert again["members"][0] == first["members"][0]
    other = run(replace(cfg, activation_observer="histogram"), resume=True)
    assert other["members"][0]["conversion"]["activation_observer"] == "histogram"
    assert onnx.stat().st_mtime_ns != stamp  # converted again with the new observer
    report = json.loads((tmp_path / "run" / "member-0" / "report.json").read_text())
    assert report["conversion"]["activation_observer"] == "histogram"


def test_erm_run_and_config_errors(shapes_root: Path, tmp_path: Path) -> None:
    from qtdog_train.pipeline import run

    cfg = tiny_config(
        shapes_root, tmp_path / "erm", algorithm="erm", bits=8, members=1, calibration="augmented"
    )
    summary = run(cfg)
    assert summary["config"]["calibration"] == "augmented"
    report_file = tmp_path / "erm" / "member-0" / "report.json"
    stamp = report_file.stat().st_mtime_ns
    again = run(cfg, resume=True)  # a finished member is neither retrained nor reconverted
    assert report_file.stat().st_mtime_ns == stamp and again["ensemble"] == summary["ensemble"]
    report = summary["members"][0]
    assert report["switch"] is None
    # a float model is converted with post-training per-channel integers, every conv in int8
    assert report["onnx_int8_convs"] == [49, 49]
    assert set(report["fake_quant"]["test"]) == {"sketch"}
    with pytest.raises(QTDoGError, match="--q-start"):
        run(tiny_config(shapes_root, tmp_path / "bad", q_start=50))
    with pytest.raises(QTDoGError, match="--algorithm"):
        run(tiny_config(shapes_root, tmp_path / "bad2", algorithm="sgd"))
    with pytest.raises(QTDoGError, match="--calibration must be one of plain, augmented"):
        run(tiny_config(shapes_root, tmp_path / "bad3", calibration="random"))
    with pytest.raises(QTDoGError, match="--s-param must be one of log, linear, got 'exp'"):
        run(tiny_config(shapes_root, tmp_path / "bad4", s_param="exp"))


def test_qtdog_train_cli_end_to_end(shapes_root: Path, tmp_path: Path) -> None:
    """`qtdog train` as a user runs it; the repository it writes loads in the SDK and predicts."""
    qtdog = shutil.which("qtdog")
    assert qtdog, "the qtdog console script must be installed"
    out = tmp_path / "cli-run"
    cmd = [
        qtdog,
        "train",
        "--data",
        str(shapes_root),
        "--test-domain",
        "sketch",
        "--algorithm",
        "qtdog",
        "--steps",
        "4",
        "--q-start",
        "2",
        "--eval-every",
        "2",
        "--batch-size",
        "4",
        "--image-size",
        "32",
        "--members",
        "1",
        "--pretrained",
        "none",
        "--calibration-images",
        "8",
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "LSQ on at step 2" in done.stderr and "model repository:" in done.stderr
    from qtdog_sdk import QTDoGEnsemble

    model = QTDoGEnsemble.from_pretrained(out / "model")
    result = model.predict(sorted(shapes_root.glob("sketch/circle/*.png"))[:3])
    assert len(result) == 3 and all(r.label in model.labels for r in result)
    bad = subprocess.run(
        [qtdog, "train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "nowhere" in bad.stderr


def test_compile_policy_compiles_only_where_it_pays(shapes_root: Path) -> None:
    """auto: never on the CPU, on CUDA only the quantized phase with enough steps left."""
    from qtdog_train.trainer import AUTO_COMPILE_MIN_STEPS, build_model, compiled_forward

    cfg = tiny_config(shapes_root, "unused")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # compile is lazy: no GPU needed
    float_model = build_model(cfg, 3, quantized=False, device=cpu)
    lsq_model = build_model(cfg, 3, quantized=True, device=cpu)
    many = AUTO_COMPILE_MIN_STEPS

    def compiles(model, device, steps, mode="auto") -> bool:
        cfg.compile = mode
        return compiled_forward(cfg, model, device, steps) is not model

    assert not compiles(lsq_model, cpu, 10 * many)
    assert not compiles(float_model, cuda, 10 * many)
    assert not compiles(lsq_model, cuda, many - 1)
    assert compiles(lsq_model, cuda, many)
    assert compiles(float_model, cpu, 1, mode="on")
    assert not compiles(lsq_model, cuda, 10 * many, mode="off")


def test_bad_activation_observer_is_a_one_line_error(shapes_root: Path) -> None:
    cfg = tiny_config(shapes_root, "unused", activation_observer="percentile")
    with pytest.raises(QTDoGError, match="--activation-observer must be one of minmax, histogram"):
        cfg.validate()


def test_no_depthwise_run_keeps_depthwise_float_until_conversion(
    shapes_root: Path, tmp_path: Path
) -> None:
    """``--quantized-layers no-depthwise``: LSQ trains on 33 of Lite0's 49 convs; the 16
    depthwise ones get post-training integers at conversion, so every conv still runs in int8."""
    from qtdog_train.pipeline import run
    from qtdog_train.quant.lsq import conv_modules, is_depthwise, lsq_quantizer
    from qtdog_train.trainer import load_selected_model

    out = tmp_path / "nodw"
    summary = run(tiny_config(shapes_root, out, members=1, quantized_layers="no-depthwise"))
    report = summary["members"][0]
    assert report["switch"]["step"] == 6 and report["best_step"] > 6
    assert report["onnx_int8_convs"] == [49, 49]
    assert report["torch_int8_convs"] == [49, 49]
    assert report["agreement_torch_int8_vs_onnx"] >= 0.99
    cfg, model = load_selected_model(out)
    assert cfg.quantized_layers == "no-depthwise"
    float_convs = [name for name, conv in conv_modules(model) if lsq_quantizer(conv) is None]
    assert len(float_convs) == 16
    assert all(is_depthwise(conv) for name, conv in conv_modules(model) if name in float_convs)
    with pytest.raises(QTDoGError, match="--quantized-layers must be one of all, no-depthwise"):
        tiny_config(shapes_root, "unused", quantized_layers="pointwise").validate()


def test_a_resnet_backbone_trains_converts_and_loads(shapes_root: Path, tmp_path: Path) -> None:
    """The paper's backbone family (plain ReLU, max pool, residual add -> ReLU), not only Lite0:
    every conv runs in int8 in both runtimes and both SDK backends agree on the result."""
    from qtdog_sdk import QTDoGEnsemble
    from qtdog_train.pipeline import run

    summary = run(tiny_config(shapes_root, tmp_path / "run", backbone="resnet18", members=1))
    report = summary["members"][0]
    assert report["onnx_int8_convs"] == [20, 20]
    assert report["torch_int8_convs"] == [20, 20]
    assert report["agreement_torch_int8_vs_onnx"] >= 0.99
    images = sorted((shapes_root / "sketch").glob("*/*.png"))[::4]
    results = {}
    for backend in ("onnx", "torch"):
        model = QTDoGEnsemble.from_pretrained(summary["repository"], backend=backend)
        assert model.config.architecture == "resnet18"
        results[backend] = model.predict_proba(images)
    assert results["onnx"].shape == (len(images), 3)
    same = (results["onnx"].argmax(1) == results["torch"].argmax(1)).mean()
    assert same >= 0.9
