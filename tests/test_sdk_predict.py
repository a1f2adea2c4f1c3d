"""Prediction through the public SDK on the real tiny model repository."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import qtdog_sdk
from qtdog_sdk import ImageLoadError, LabelScore, Prediction, QTDoGEnsemble
from qtdog_sdk.backends import Backend
from qtdog_sdk.errors import BackendUnavailableError, DatasetError
from qtdog_sdk.evaluate import evaluate_domain
from qtdog_sdk.format import read_config, verify_files
from qtdog_sdk.results import softmax


@pytest.fixture(scope="module")
def onnx_model(tiny_repo: Path) -> QTDoGEnsemble:
    return QTDoGEnsemble.from_pretrained(tiny_repo, backend="onnx", device="cpu")


@pytest.fixture(scope="module")
def images(shapes_images: list[Path]) -> list[str]:
    return [str(p) for p in shapes_images]


# ------------------------------------------------------------- the basics


def test_properties(onnx_model: QTDoGEnsemble, tiny_repo: Path) -> None:
    config = read_config(tiny_repo)
    assert onnx_model.labels == config.labels
    assert onnx_model.num_members == len(config.members) == 2
    assert onnx_model.config.architecture == config.architecture
    assert onnx_model.size_bytes == sum((tiny_repo / n).stat().st_size for n in config.files())
    assert onnx_model.backend_name == "onnx" and onnx_model.device == "cpu"
    assert isinstance(onnx_model.backend, Backend)
    assert "QTDoGEnsemble(" in repr(onnx_model)


def test_single_input_gives_single_prediction(onnx_model: QTDoGEnsemble, images: list[str]) -> None:
    pred = onnx_model.predict(images[0], top_k=2)
    assert isinstance(pred, Prediction) and pred.ok
    assert pred.path == images[0]
    assert pred.label in onnx_model.labels
    assert len(pred.top_k) == 2 and pred.top_k[0] == LabelScore(pred.label, pred.score)
    assert pred.top_k[0].score >= pred.top_k[1].score
    assert len(pred.member_labels) == 2
    assert pred.agreement == pytest.approx(sum(m == pred.label for m in pred.member_labels) / 2)
    d = pred.to_dict()
    assert list(d) == ["path", "label", "score", "top_k", "agreement", "member_labels"]
    assert d["top_k"][0] == {"label": pred.label, "score": pred.score}
    json.dumps(d)


def test_single_bad_input_raises(onnx_model: QTDoGEnsemble, tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="no such file"):
        onnx_model.predict(tmp_path / "nope.png")


def test_list_gives_list_in_order_and_top_k_is_clamped(
    onnx_model: QTDoGEnsemble, images: list[str]
) -> None:
    preds = onnx_model.predict(images, batch_size=4, top_k=50)
    assert isinstance(preds, list) and [p.path for p in preds] == images
    assert all(len(p.top_k) == len(onnx_model.labels) for p in preds)


def test_accepts_pil_and_numpy(onnx_model: QTDoGEnsemble, images: list[str]) -> None:
    img = Image.open(images[0])
    by_path = onnx_model.predict(images[0])
    by_pil = onnx_model.predict(img)
    by_array = onnx_model.predict(np.asarray(img.convert("RGB")))
    assert by_pil.score == pytest.approx(by_path.score, abs=1e-6)
    assert by_array.score == pytest.approx(by_path.score, abs=1e-6)
    batch = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in images[:3]])
    assert len(onnx_model.predict(batch)) == 3  # a 4-D array is a batch


def test_predictions_do_not_depend_on_batch_size(
    onnx_model: QTDoGEnsemble, images: list[str]
) -> None:
    a = onnx_model.predict_proba(images, batch_size=1)
    b = onnx_model.predict_proba(images, batch_size=7)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_good_and_bad_inputs_in_one_batch(
    onnx_model: QTDoGEnsemble, images: list[str], tmp_path: Path
) -> None:
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    inputs = [images[0], str(tmp_path / "missing.png"), images[1], str(text)]
    preds = onnx_model.predict(inputs, batch_size=4)
    assert [p.ok for p in preds] == [True, False, True, False]
    assert preds[1].to_dict() == {"path": inputs[1], "error": preds[1].error}
    assert "missing.png" in preds[1].error and "\n" not in preds[1].error
    alone = onnx_model.predict([images[0], images[1]])
    assert preds[0].score == pytest.approx(alone[0].score, abs=1e-6)
    assert preds[2].score == pytest.approx(alone[1].score, abs=1e-6)


def test_empty_input_list(onnx_model: QTDoGEnsemble) -> None:
    assert onnx_model.predict([]) == []
    assert onnx_model.predict_proba([]).shape == (0, len(onnx_model.labels))


# ---------------------------------------------------------- ensemble rule


def test_predict_proba_rows_sum_to_one(onnx_model: QTDoGEnsemble, images: list[str]) -> None:
    probs = onnx_model.predict_proba(images)
    assert probs.shape == (len(images), len(onnx_model.labels))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs >= 0).all()


def test_ensemble_rule_is_softmax_of_mean_logits(
    onnx_model: QTDoGEnsemble, images: list[str]
) -> None:
    logits = onnx_model.member_logits(images)
    assert logits.shape == (len(images), 2, len(onnx_model.labels))
    expected = softmax(logits.mean(axis=1))
    np.testing.assert_allclose(onnx_model.predict_proba(images), expected, atol=1e-6)
    # and not the mean of the members' softmaxes (differs unless members agree exactly)
    mean_of_probs = softmax(logits, axis=-1).mean(axis=1)
    assert not np.allclose(expected, mean_of_probs, atol=1e-7)
    preds = onnx_model.predict(images)
    for row, pred, member_rows in zip(expected, preds, logits, strict=True):
        assert pred.label == onnx_model.labels[int(row.argmax())]
        assert pred.score == pytest.approx(float(row.max()), abs=1e-6)
        assert pred.member_labels == [onnx_model.labels[int(i)] for i in member_rows.argmax(axis=1)]


def test_merged_graph_and_separate_members_agree(
    tiny_repo: Path, tmp_path: Path, images: list[str]
) -> None:
    config = read_config(tiny_repo)
    if not config.ensemble_onnx:
        pytest.skip("tiny repository has no merged graph")
    repo = Path(shutil.copytree(tiny_repo, tmp_path / "repo"))
    data = json.loads((repo / "config.json").read_text())
    data["ensemble_onnx"] = data["ensemble_sha256"] = None
    (repo / "config.json").write_text(json.dumps(data))
    merged = QTDoGEnsemble.from_pretrained(tiny_repo, backend="onnx")
    separate = QTDoGEnsemble.from_pretrained(repo, backend="onnx")
    assert len(separate.backend.sessions) == 2 and len(merged.backend.sessions) == 1
    np.testing.assert_allclose(
        merged.member_logits(images), separate.member_logits(images), atol=1e-4
    )


# -------------------------------------------------------------- streaming


def test_iter_predict_streams(onnx_model: QTDoGEnsemble, images: list[str]) -> None:
    pulled: list[str] = []

    def source() -> Iterator[str]:
        for path in images:
            pulled.append(path)
            yield path

    stream = onnx_model.iter_predict(source(), batch_size=2)
    assert pulled == []  # nothing loaded before the first result is asked for
    first = next(stream)
    assert first.path == images[0]
    assert len(pulled) == 2  # exactly one batch was read
    rest = list(stream)
    assert len(rest) == len(images) - 1 and len(pulled) == len(images)


def test_iter_predict_reports_failures_in_place(
    onnx_model: QTDoGEnsemble, images: list[str]
) -> None:
    inputs = ["/definitely/missing.png", images[0]]
    out = list(onnx_model.iter_predict(inputs, batch_size=8))
    assert [p.ok for p in out] == [False, True]


def test_predict_proba_raises_on_bad_input(onnx_model: QTDoGEnsemble, images: list[str]) -> None:
    with pytest.raises(ImageLoadError):
        onnx_model.predict_proba([images[0], "/definitely/missing.png"])


# --------------------------------------------------------------- backends


def test_onnx_backend_does_not_import_torch(tiny_repo: Path, images: list[str]) -> None:
    code = (
        "import sys, qtdog_sdk\n"
        "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules, 'import qtdog_sdk is not light'\n"
        f"m = qtdog_sdk.QTDoGEnsemble.from_pretrained({str(tiny_repo)!r}, backend='onnx')\n"
        f"p = m.predict({images[0]!r})\n"
        "assert p.label in m.labels\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'timm' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_onnx_and_torch_backends_agree(
    tiny_repo: Path, onnx_model: QTDoGEnsemble, images: list[str]
) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    torch_model = QTDoGEnsemble.from_pretrained(tiny_repo, backend="torch", device="cpu")
    assert torch_model.backend_name == "torch" and torch_model.device == "cpu"
    p_onnx = onnx_model.predict_proba(images)
    p_torch = torch_model.predict_proba(images)
    # int8 activations (ONNX) vs float activations on the same int weights (torch): close, not equal
    assert np.abs(p_onnx - p_torch).mean() < 0.03
    assert np.abs(p_onnx - p_torch).max() < 0.15
    confident = np.sort(p_torch, axis=1)[:, -1] - np.sort(p_torch, axis=1)[:, -2] > 0.1
    assert (p_onnx.argmax(1) == p_torch.argmax(1))[confident].all()


def test_torch_backend_dequantizes_int8_weights(tiny_repo: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    config = read_config(tiny_repo)
    tensors = load_file(str(tiny_repo / config.members[0].weights))
    int8_keys = [k for k in tensors if k.endswith(".weight_int8")]
    assert int8_keys, "tiny repository stores no int8 conv weights"
    model = QTDoGEnsemble.from_pretrained(tiny_repo, backend="torch", device="cpu")
    state = model.backend.models[0].state_dict()
    key = int8_keys[0]
    base = key[: -len("_int8")]
    scale = tensors[base + "_scale"]
    expected = tensors[key].float() * scale.view(-1, *([1] * (tensors[key].ndim - 1)))
    torch.testing.assert_close(state[base], expected)


def test_unknown_backend_and_device(tiny_repo: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="unknown backend"):
        QTDoGEnsemble.from_pretrained(tiny_repo, backend="tensorrt")
    with pytest.raises(BackendUnavailableError, match="unknown device"):
        QTDoGEnsemble.from_pretrained(tiny_repo, device="tpu")


def test_cuda_requested_without_gpu(tiny_repo: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA for onnxruntime")
    with pytest.raises(BackendUnavailableError, match="cuda"):
        QTDoGEnsemble.from_pretrained(tiny_repo, backend="onnx", device="cuda")


def test_torch_backend_missing_torch_is_explained(tiny_repo: Path, tmp_path: Path) -> None:
    """Simulate a core install (no torch): the error names the extra to install."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'timm'):\n"
        "            raise ImportError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    code = (
        "from qtdog_sdk import QTDoGEnsemble, BackendUnavailableError\n"
        "try:\n"
        f"    QTDoGEnsemble.from_pretrained({str(tiny_repo)!r}, backend='torch')\n"
        "except BackendUnavailableError as e:\n"
        "    print(e)\n"
    )
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'qtdog[torch]'" in out.stdout


# ---------------------------------------------------------- save / public


def test_save_pretrained_round_trip(
    onnx_model: QTDoGEnsemble, tmp_path: Path, images: list[str]
) -> None:
    out = onnx_model.save_pretrained(tmp_path / "saved", repo_id="me/tiny")
    config = read_config(out)
    verify_files(out, config)
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: qtdog") and "me/tiny" in card
    again = QTDoGEnsemble.from_pretrained(out)
    np.testing.assert_allclose(
        again.predict_proba(images[:3]), onnx_model.predict_proba(images[:3]), atol=1e-6
    )


def test_public_api_exports() -> None:
    for name in (
        "QTDoGEnsemble",
        "Prediction",
        "LabelScore",
        "QTDoGError",
        "ImageLoadError",
        "__version__",
    ):
        assert hasattr(qtdog_sdk, name), name
    assert qtdog_sdk.__version__ == qtdog_sdk._version.__version__


# ------------------------------------------------------------- evaluation


def test_evaluate_domain(onnx_model: QTDoGEnsemble, shapes_root: Path) -> None:
    domain = sorted(p.name for p in shapes_root.iterdir() if p.is_dir())[0]
    res = evaluate_domain(onnx_model, shapes_root, domain, batch_size=16)
    labels = onnx_model.labels
    n_files = sum(1 for p in (shapes_root / domain).rglob("*") if p.is_file())
    assert res["n"] == n_files and res["labels"] == labels and res["n_failed"] == 0
    cm = np.array(res["confusion_matrix"])
    assert cm.shape == (len(labels), len(labels)) and cm.sum() == n_files
    assert res["accuracy"] == pytest.approx(np.trace(cm) / n_files)
    for i, label in enumerate(labels):
        assert res["per_class_accuracy"][label] == pytest.approx(cm[i, i] / cm[i].sum())


def test_evaluate_domain_class_mismatch(
    onnx_model: QTDoGEnsemble, tmp_path: Path, images: list[str]
) -> None:
    (tmp_path / "sketch" / "zebra").mkdir(parents=True)
    shutil.copy(images[0], tmp_path / "sketch" / "zebra" / "a.png")
    with pytest.raises(DatasetError, match="zebra"):
        evaluate_domain(onnx_model, tmp_path, "sketch")
    with pytest.raises(DatasetError, match="no such domain"):
        evaluate_domain(onnx_model, tmp_path, "photo")
