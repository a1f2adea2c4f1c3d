"""The Gradio demo over HTTP: /predict from gradio_client, batching, concurrency, bad uploads.

Runs the real app (qtdog_serve.app.build_app) on a free loopback port with a
small real model repository (the ``tiny_repo`` fixture of conftest.py) and the
committed example images.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file

from qtdog_sdk import LabelScore, Prediction, QTDoGEnsemble
from qtdog_serve import modelinfo
from qtdog_serve.app import MAX_BATCH_SIZE, MAX_FILE_SIZE, build_app, example_groups

pytestmark = [
    # gradio's queue uses pandas options that pandas 3 deprecates; not ours to fix.
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:Warning"),
]

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
IMAGES = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".png", ".jpg"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BatchSpy:
    """Wraps a model and records the size of every predict() call."""

    def __init__(self, model: QTDoGEnsemble) -> None:
        self._model = model
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def predict(self, images, *args, **kwargs):
        with self._lock:
            self.batch_sizes.append(len(images))
        return self._model.predict(images, *args, **kwargs)


@pytest.fixture(scope="module")
def model(tiny_repo: Path) -> BatchSpy:
    return BatchSpy(QTDoGEnsemble.from_pretrained(tiny_repo))


@pytest.fixture(scope="module")
def client(model: BatchSpy):
    demo = build_app(model, examples_dir=EXAMPLES)
    _, url, _ = demo.launch(
        server_name="127.0.0.1",
        server_port=free_port(),
        prevent_thread_lock=True,
        quiet=True,
        max_file_size=MAX_FILE_SIZE,
    )
    try:
        yield Client(url, verbose=False)
    finally:
        demo.close()


def predict(client: Client, path: Path):
    return client.predict(handle_file(str(path)), api_name="/predict")


def check_answer(answer, model: BatchSpy) -> str:
    """Validate one /predict answer; return the predicted label."""
    label, details, result = answer
    labels = set(model.labels)
    assert label["label"] in labels
    confidences = label["confidences"]
    assert len(confidences) == min(5, len(model.labels))
    assert {c["label"] for c in confidences} <= labels
    scores = [c["confidence"] for c in confidences]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores) and sum(scores) <= 1.0 + 1e-4
    assert result["error"] is None
    assert result["label"] == label["label"]
    assert len(result["member_votes"]) == model.num_members
    assert set(result["member_votes"].values()) <= labels
    assert 0.0 <= result["agreement"] <= 1.0
    assert result["label"] in details
    return label["label"]


def test_predict_endpoint_is_public(client: Client):
    api = client.view_api(print_info=False, return_format="dict")
    assert "/predict" in api["named_endpoints"]


def test_predict_example_images(client: Client, model: BatchSpy):
    for path in IMAGES[:3]:
        check_answer(predict(client, path), model)


def test_twenty_concurrent_requests_all_answered_in_batches(client: Client, model: BatchSpy):
    expected = {p: check_answer(predict(client, p), model) for p in IMAGES}
    requests = [IMAGES[i % len(IMAGES)] for i in range(20)]
    model.batch_sizes.clear()
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda p: predict(client, p), requests))
    assert len(answers) == 20
    # Each answer belongs to its own request: batching must not mix them up.
    assert [check_answer(a, model) for a in answers] == [expected[p] for p in requests]
    assert sum(model.batch_sizes) == 20
    assert max(model.batch_sizes) <= MAX_BATCH_SIZE
    assert max(model.batch_sizes) > 1, f"requests were never batched: {model.batch_sizes}"


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("notes.txt", b"this is not an image\n"),
        ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64),
        ("truncated.jpg", (EXAMPLES / "photo_horse.jpg").read_bytes()[:600]),
    ],
)
def test_bad_upload_gives_readable_error_and_server_keeps_serving(
    client: Client, model: BatchSpy, tmp_path: Path, name: str, payload: bytes
):
    bad = tmp_path / name
    bad.write_bytes(payload)
    label, details, result = predict(client, bad)
    assert not label or not label.get("label")
    assert result["error"], result
    assert "\n" not in result["error"].strip()
    assert "Could not classify this image" in details
    assert "/tmp/gradio" not in details  # no server paths leak into the page
    check_answer(predict(client, IMAGES[0]), model)


def test_bad_upload_in_a_batch_does_not_fail_the_others(
    client: Client, model: BatchSpy, tmp_path: Path
):
    bad = tmp_path / "junk.jpg"
    bad.write_bytes(b"junk" * 100)
    requests = [bad if i % 3 == 0 else IMAGES[i % len(IMAGES)] for i in range(9)]
    with ThreadPoolExecutor(max_workers=9) as pool:
        answers = list(pool.map(lambda p: predict(client, p), requests))
    for path, answer in zip(requests, answers, strict=True):
        if path == bad:
            assert answer[2]["error"]
        else:
            check_answer(answer, model)


# ------------------------------------------------------------ model panel, votes
def test_model_panel_says_what_the_model_is(model: BatchSpy):
    text = modelinfo.describe_model(model)
    training = model.config.training
    for domain in training["source_domains"] + training["test_domains"]:
        assert domain in text
    assert "Accuracy on the unseen domain" in text
    assert f"{model.config.quantization.weight_bits}-bit" in text
    assert f"| Ensemble members | {model.num_members} |" in text
    stats = modelinfo.ensemble_weight_stats(model)
    assert stats and len(stats) == model.num_members
    # int8 conv weights: well under the float32 size, but not below a quarter of it
    ratio = stats[0].float32_bytes / stats[0].stored_bytes
    assert 2.0 < ratio <= 4.0, ratio
    assert f"{ratio:.1f}x smaller" in text


def test_weights_are_counted_from_the_hub_when_not_downloaded(
    model: BatchSpy, tmp_path, monkeypatch
):
    headers = {}

    def fake_hub_header(repo_id, filename, revision):
        headers[filename] = (repo_id, revision)
        return modelinfo.safetensors_header(Path(model.repo_dir) / filename)

    class HubModel:  # what from_pretrained gives for a Hub id with the onnx backend
        config = model.config
        repo_dir = tmp_path  # no safetensors here
        hub_repo_id, hub_revision = "owner/name", "abc123"

    monkeypatch.setattr(modelinfo, "_hub_safetensors_header", fake_hub_header)
    hub_stats = modelinfo.ensemble_weight_stats(HubModel())
    assert hub_stats == modelinfo.ensemble_weight_stats(model)
    assert set(headers) == {m.weights for m in model.config.members}
    HubModel.hub_repo_id = None
    assert modelinfo.ensemble_weight_stats(HubModel()) is None


def test_disagreeing_members_trigger_the_outside_warning():
    def pred(votes):
        return Prediction(
            path="x.png",
            label="a",
            score=0.5,
            top_k=[LabelScore("a", 0.5), LabelScore("b", 0.3)],
            member_labels=votes,
            agreement=votes.count("a") / len(votes),
        )

    names = ["m0", "m1", "m2", "m3", "m4"]
    split = modelinfo.render_prediction(pred(["a", "a", "b", "c", "d"]), names)
    assert split.result["uncertain"] and "outside what the model knows" in split.details
    assert split.result["member_votes"] == dict(zip(names, ["a", "a", "b", "c", "d"], strict=True))
    agreed = modelinfo.render_prediction(pred(["a", "a", "a", "b", "a"]), names)
    assert not agreed.result["uncertain"] and "outside" not in agreed.details
    assert "4 of 5 members agree" in agreed.details


# -------------------------------------------------------------------- the CLI
def test_python_m_qtdog_serve_serves_the_demo(tiny_repo: Path):
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "qtdog_serve", "--model", str(tiny_repo), "--port", str(port)],
        cwd=EXAMPLES.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                client = Client(url, verbose=False)
                break
            except Exception:
                assert time.monotonic() < deadline, "the demo did not come up in 90 s"
                time.sleep(0.5)
        label, _, _ = client.predict(handle_file(str(IMAGES[0])), api_name="/predict")
        assert label["label"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_demo_command_reports_a_missing_model_in_one_line(tmp_path: Path):
    missing = tmp_path / "no-such-model"
    result = subprocess.run(
        [sys.executable, "-m", "qtdog_serve", "--model", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and str(missing) in result.stderr
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------- examples/
PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")


def test_examples_are_small_credited_pacs_images():
    assert 8 <= len(IMAGES) <= 12
    for path in IMAGES:
        domain, _, cls = path.stem.rpartition("_")
        assert domain in PACS_DOMAINS and cls in PACS_CLASSES, path.name
        assert path.stat().st_size < 40_000, path.name
    assert (EXAMPLES / "sketch_dog.png").is_file()  # the README's first command
    assert len({p.stem.split("_")[-1] for p in IMAGES if p.stem.startswith("sketch_")}) >= 4
    credit = (EXAMPLES / "README.md").read_text()
    assert "Deeper, Broader and Artier Domain Generalization" in credit and "ICCV 2017" in credit


def test_gallery_puts_the_unseen_domain_first():
    groups = example_groups(EXAMPLES, ["sketch"], ["photo", "art_painting", "cartoon"])
    assert [title for title, _ in groups] == [
        "Never seen in training: sketch",
        "Seen in training: photo, art_painting, cartoon",
    ]
    assert all(Path(p).name.startswith("sketch_") for p in groups[0][1])
    assert sum(len(paths) for _, paths in groups) == len(IMAGES)
