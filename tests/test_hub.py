"""Hub round trips with the real huggingface_hub client over loopback HTTP (tests/hub_server.py).

qtdog reads HF_ENDPOINT and HF_HUB_OFFLINE at call time, so setting them with
monkeypatch is enough in-process; CLI tests pass them to the subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hub_server import HubServer, unused_local_url

from qtdog_sdk import ModelNotFoundError, QTDoGEnsemble
from qtdog_sdk.ensemble import push_repository
from qtdog_sdk.format import CONFIG_NAME, read_config

QTDOG = shutil.which("qtdog") or str(Path(sys.executable).with_name("qtdog"))


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    server = HubServer().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hf-cache"


@pytest.fixture(scope="module")
def local_model(tiny_repo: Path) -> QTDoGEnsemble:
    return QTDoGEnsemble.from_pretrained(tiny_repo, backend="onnx")


def _v2_repo(tiny_repo: Path, tmp_path: Path) -> Path:
    """A copy of the tiny repository whose config differs (so a push makes a new commit)."""
    repo = Path(shutil.copytree(tiny_repo, tmp_path / "v2"))
    data = json.loads((repo / CONFIG_NAME).read_text())
    data.setdefault("training", {})["note"] = "second upload"
    (repo / CONFIG_NAME).write_text(json.dumps(data, indent=2))
    return repo


def test_push_then_load_by_repo_id(
    hub: HubServer, cache: Path, local_model: QTDoGEnsemble, shapes_images: list[Path]
) -> None:
    commit = local_model.push_to_hub("me/tiny-qtdog", token="test-token")
    assert len(commit) == 40
    assert "POST /api/validate-yaml" in hub.state.requests  # the card's metadata was accepted
    repo = hub.state.repos["me/tiny-qtdog"]
    files = repo.resolve("main").files
    assert {"config.json", "README.md"} | set(local_model.config.files()) <= set(files)
    assert b"library_name: qtdog" in files["README.md"] and b"me/tiny-qtdog" in files["README.md"]

    model = QTDoGEnsemble.from_pretrained("me/tiny-qtdog", cache_dir=cache)
    assert model.hub_repo_id == "me/tiny-qtdog" and model.hub_revision == commit
    assert model.repo_dir.name == commit and cache in model.repo_dir.parents
    images = [str(p) for p in shapes_images[:4]]
    np.testing.assert_allclose(
        model.predict_proba(images), local_model.predict_proba(images), atol=1e-6
    )

    # only what the ONNX backend needs was downloaded...
    present = {p.name for p in model.repo_dir.iterdir()}
    if local_model.config.ensemble_onnx:
        assert not any(name.endswith(".safetensors") for name in present)
    # ...and save_pretrained fetches the rest
    saved = model.save_pretrained(cache.parent / "saved")
    assert set(local_model.config.files()) <= {p.name for p in saved.iterdir()}


def test_load_by_revision(hub: HubServer, cache: Path, tiny_repo: Path, tmp_path: Path) -> None:
    first = push_repository(tiny_repo, read_config(tiny_repo), "me/versions")
    v2 = _v2_repo(tiny_repo, tmp_path)
    second = push_repository(v2, read_config(v2), "me/versions", commit_message="v2")
    assert first != second

    latest = QTDoGEnsemble.from_pretrained("me/versions", cache_dir=cache)
    assert latest.hub_revision == second and latest.config.training["note"] == "second upload"
    old = QTDoGEnsemble.from_pretrained("me/versions", revision=first, cache_dir=cache)
    assert old.hub_revision == first and "note" not in old.config.training


def test_offline_reuses_the_cache(
    hub: HubServer, cache: Path, local_model: QTDoGEnsemble, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = local_model.push_to_hub("me/offline")
    QTDoGEnsemble.from_pretrained("me/offline", cache_dir=cache)  # fills the cache
    hub.stop()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = QTDoGEnsemble.from_pretrained("me/offline", cache_dir=cache)
    assert model.repo_dir.name == commit
    assert model.predict(np.zeros((8, 8, 3), np.uint8)).ok

    # offline mode but a revision that was never downloaded: clear one-line error
    with pytest.raises(ModelNotFoundError, match="offline") as exc:
        QTDoGEnsemble.from_pretrained("me/never-downloaded", cache_dir=cache)
    assert "\n" not in str(exc.value)

    # server gone, offline flag not set: the client falls back to the cache too
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert QTDoGEnsemble.from_pretrained("me/offline", cache_dir=cache).repo_dir.name == commit


def test_unreachable_endpoint_without_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", unused_local_url())
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    started = time.monotonic()
    with pytest.raises(ModelNotFoundError) as exc:
        QTDoGEnsemble.from_pretrained("me/anything", cache_dir=cache)
    assert time.monotonic() - started < 30
    message = str(exc.value)
    assert "\n" not in message and "me/anything" in message and "cannot reach the Hub" in message


def test_unknown_repo_and_revision(hub: HubServer, cache: Path, tiny_repo: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no such model repository") as exc:
        QTDoGEnsemble.from_pretrained("me/does-not-exist", cache_dir=cache)
    assert "\n" not in str(exc.value)
    push_repository(tiny_repo, read_config(tiny_repo), "me/exists")
    with pytest.raises(ModelNotFoundError, match="revision 'v9' not found"):
        QTDoGEnsemble.from_pretrained("me/exists", revision="v9", cache_dir=cache)


def test_invalid_repo_id_is_not_a_path_either() -> None:
    with pytest.raises(ModelNotFoundError):
        QTDoGEnsemble.from_pretrained("no spaces allowed/in ids")


def test_cli_push_and_predict_by_repo_id(
    hub: HubServer, tiny_repo: Path, tmp_path: Path, shapes_images: list[Path]
) -> None:
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    env.pop("HF_HUB_OFFLINE", None)
    pushed = subprocess.run(
        [QTDOG, "push", str(tiny_repo), "me/cli-model", "--token", "t"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert pushed.returncode == 0, pushed.stderr
    assert "me/cli-model" in pushed.stderr
    out = subprocess.run(
        [QTDOG, "predict", str(shapes_images[0]), "--model", "me/cli-model", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert row["path"] == str(shapes_images[0]) and row["label"]
    hub.stop()
    offline = subprocess.run(
        [QTDOG, "info", "me/cli-model"],
        capture_output=True,
        text=True,
        env={**env, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert offline.returncode == 0, offline.stderr
    assert (
        "tf_efficientnet_lite0" in offline.stdout
        or read_config(tiny_repo).architecture in offline.stdout
    )
