"""The Gradio demo over HTTP: /predict from gradio_client, batching, concurrency, bad uploads.

Runs the real app (qtdog_serve.app.build_app) on a free loopback port with a
small real model repository (the ``tiny_repo`` fixture of conftest.py) and the
committed example images.
"""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file

from qtdog_sdk import QTDoGEnsemble
from qtdog_serve.app import MAX_BATCH_SIZE, build_app

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
        max_file_size="10mb",
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
