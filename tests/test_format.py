"""The model repository format: config validation, file hashes, model card."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from qtdog_sdk import QTDoGEnsemble
from qtdog_sdk.card import CARD_TAGS, card_metadata, render_model_card
from qtdog_sdk.errors import ModelFormatError, ModelNotFoundError, UnsupportedFormatVersionError
from qtdog_sdk.format import (
    CONFIG_NAME,
    FORMAT_VERSION,
    Member,
    ModelConfig,
    config_from_dict,
    read_config,
    verify_files,
)


@pytest.fixture
def repo(tiny_repo: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the tiny model repository."""
    return Path(shutil.copytree(tiny_repo, tmp_path / "repo"))


def _config_dict(repo: Path) -> dict[str, Any]:
    return json.loads((repo / CONFIG_NAME).read_text())


def _write_config(repo: Path, data: dict[str, Any]) -> None:
    (repo / CONFIG_NAME).write_text(json.dumps(data))


def _flip_byte(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# --------------------------------------------------------- the real repo


def test_tiny_repo_is_valid_and_hashes_match(tiny_repo: Path) -> None:
    config = read_config(tiny_repo)
    assert config.format_version == FORMAT_VERSION
    assert len(config.members) == 2
    verify_files(tiny_repo, config)
    for member in config.members:
        assert (tiny_repo / member.onnx).is_file() and (tiny_repo / member.weights).is_file()


def test_round_trip_through_dict(tiny_repo: Path) -> None:
    config = read_config(tiny_repo)
    again = config_from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


# ------------------------------------------------------ malformed configs


def _mutations() -> list[tuple[str, Any, type[Exception], str]]:
    def set_(key: str, value: Any):
        def f(d: dict) -> None:
            d[key] = value

        return f

    def drop(key: str):
        return lambda d: d.pop(key)

    def member(key: str, value: Any):
        def f(d: dict) -> None:
            d["members"][0][key] = value

        return f

    def pre(key: str, value: Any):
        def f(d: dict) -> None:
            d["preprocessing"][key] = value

        return f

    return [
        (
            "future-version",
            set_("format_version", 99),
            UnsupportedFormatVersionError,
            "format_version 99",
        ),
        (
            "version-zero",
            set_("format_version", 0),
            UnsupportedFormatVersionError,
            "format_version 0",
        ),
        ("version-string", set_("format_version", "1"), ModelFormatError, "format_version"),
        ("wrong-format-name", set_("format", "timm"), ModelFormatError, "format"),
        ("no-architecture", drop("architecture"), ModelFormatError, "architecture"),
        ("labels-not-list", set_("labels", "cat,dog"), ModelFormatError, "labels"),
        ("labels-empty", set_("labels", []), ModelFormatError, "labels"),
        ("labels-duplicate", set_("labels", ["a", "a", "b"]), ModelFormatError, "duplicates"),
        ("no-members", set_("members", []), ModelFormatError, "members"),
        ("member-not-object", set_("members", ["member-0.onnx"]), ModelFormatError, "members[0]"),
        ("member-no-onnx", lambda d: d["members"][0].pop("onnx"), ModelFormatError, "onnx"),
        ("member-no-hash", member("sha256", {}), ModelFormatError, "sha256"),
        ("no-preprocessing", drop("preprocessing"), ModelFormatError, "preprocessing"),
        ("size-one-number", pre("size", 224), ModelFormatError, "preprocessing.size"),
        ("size-negative", pre("size", [32, -1]), ModelFormatError, "preprocessing.size"),
        ("mean-two-values", pre("mean", [0.5, 0.5]), ModelFormatError, "preprocessing.mean"),
        ("std-zero", pre("std", [0.5, 0.0, 0.5]), ModelFormatError, "preprocessing.std"),
        ("unknown-resize", pre("resize", "stretch"), ModelFormatError, "preprocessing.resize"),
        ("unknown-interpolation", pre("interpolation", "area"), ModelFormatError, "interpolation"),
        (
            "ensemble-without-hash",
            lambda d: d.update(ensemble_onnx="ensemble.onnx", ensemble_sha256=None),
            ModelFormatError,
            "ensemble_sha256",
        ),
    ]


@pytest.mark.parametrize(
    ("mutate", "error", "needle"), [m[1:] for m in _mutations()], ids=[m[0] for m in _mutations()]
)
def test_malformed_config_is_refused_with_one_line(
    repo: Path, mutate: Any, error: type[Exception], needle: str
) -> None:
    data = _config_dict(repo)
    mutate(data)
    _write_config(repo, data)
    with pytest.raises(error) as exc:
        QTDoGEnsemble.from_pretrained(repo)
    message = str(exc.value)
    assert needle in message and "\n" not in message
    assert CONFIG_NAME in message


def test_config_not_json(repo: Path) -> None:
    (repo / CONFIG_NAME).write_text("{ not json")
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        QTDoGEnsemble.from_pretrained(repo)


def test_config_is_a_list(repo: Path) -> None:
    (repo / CONFIG_NAME).write_text("[1, 2]")
    with pytest.raises(ModelFormatError, match="JSON object"):
        QTDoGEnsemble.from_pretrained(repo)


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="not a qtdog model repository"):
        QTDoGEnsemble.from_pretrained(tmp_path)


def test_unknown_extra_fields_are_ignored(repo: Path) -> None:
    """Minor additions by newer writers (same format_version) must not break old readers."""
    data = _config_dict(repo)
    data["something_new"] = {"x": 1}
    data["members"][0]["future_field"] = True
    _write_config(repo, data)
    assert QTDoGEnsemble.from_pretrained(repo).num_members == 2


def test_file_name_escaping_repository_is_refused(repo: Path) -> None:
    data = _config_dict(repo)
    data.pop("ensemble_onnx", None)
    data.pop("ensemble_sha256", None)
    old = data["members"][0]["onnx"]
    data["members"][0]["onnx"] = "../evil.onnx"
    data["members"][0]["sha256"]["../evil.onnx"] = data["members"][0]["sha256"].pop(old)
    _write_config(repo, data)
    with pytest.raises(ModelFormatError, match="escapes"):
        QTDoGEnsemble.from_pretrained(repo, backend="onnx")


# --------------------------------------------------- payload files, hashes


def test_tampered_member_onnx_is_detected(repo: Path) -> None:
    config = read_config(repo)
    target = config.ensemble_onnx or config.members[0].onnx
    _flip_byte(repo / target)
    with pytest.raises(ModelFormatError, match="sha256 mismatch") as exc:
        QTDoGEnsemble.from_pretrained(repo, backend="onnx")
    assert target in str(exc.value)


def test_tampered_member_file_when_not_merged(repo: Path) -> None:
    data = _config_dict(repo)
    if data.get("ensemble_onnx"):
        (repo / data["ensemble_onnx"]).unlink()
    data["ensemble_onnx"] = data["ensemble_sha256"] = None
    _write_config(repo, data)
    _flip_byte(repo / data["members"][1]["onnx"])
    with pytest.raises(ModelFormatError, match=r"member-1\.onnx: sha256 mismatch"):
        QTDoGEnsemble.from_pretrained(repo, backend="onnx")


def test_tampered_safetensors_is_detected_by_torch_backend(repo: Path) -> None:
    config = read_config(repo)
    _flip_byte(repo / config.members[0].weights)
    with pytest.raises(ModelFormatError, match="sha256 mismatch"):
        QTDoGEnsemble.from_pretrained(
            repo, backend="torch"
        )  # hash check runs before torch is needed


def test_missing_member_file(repo: Path) -> None:
    config = read_config(repo)
    (repo / config.members[1].weights).unlink()
    with pytest.raises(ModelFormatError, match="missing") as exc:
        QTDoGEnsemble.from_pretrained(repo, backend="torch")
    assert config.members[1].weights in str(exc.value)
    with pytest.raises(ModelFormatError, match="missing"):
        verify_files(repo, config)


def test_missing_merged_graph(repo: Path) -> None:
    config = read_config(repo)
    if not config.ensemble_onnx:
        pytest.skip("tiny repository has no merged graph")
    (repo / config.ensemble_onnx).unlink()
    with pytest.raises(ModelFormatError, match="missing"):
        QTDoGEnsemble.from_pretrained(repo, backend="onnx")


def test_truncated_onnx_with_matching_hash_fails_cleanly(repo: Path) -> None:
    """A broken graph whose hash was (re)recorded still fails with a one-line ModelFormatError."""
    from qtdog_sdk.format import write_config

    config = read_config(repo)
    target = config.ensemble_onnx or config.members[0].onnx
    data = (repo / target).read_bytes()
    (repo / target).write_bytes(data[: len(data) // 3])
    write_config(repo, config)
    with pytest.raises(ModelFormatError, match="onnxruntime cannot load") as exc:
        QTDoGEnsemble.from_pretrained(repo, backend="onnx")
    assert "\n" not in str(exc.value)


def test_model_path_that_is_a_file(tiny_repo: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="is a file"):
        QTDoGEnsemble.from_pretrained(tiny_repo / CONFIG_NAME)


def test_missing_local_directory_is_not_sent_to_the_hub(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no such model directory"):
        QTDoGEnsemble.from_pretrained(tmp_path / "missing" / "model")
    with pytest.raises(ModelNotFoundError, match="no such model directory"):
        QTDoGEnsemble.from_pretrained("./not/here")


def test_default_model_missing_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import qtdog_sdk.ensemble as ensemble

    monkeypatch.setattr(ensemble, "DEFAULT_MODEL_DIR", tmp_path / "default_model")
    with pytest.raises(ModelNotFoundError, match="no default model"):
        QTDoGEnsemble.from_pretrained()


# ----------------------------------------------------------- model card


def _config_with_metrics() -> ModelConfig:
    return ModelConfig(
        architecture="tf_efficientnet_lite0",
        labels=["dog", "elephant", "giraffe"],
        members=[
            Member(
                name="member-0",
                onnx="member-0.onnx",
                weights="member-0.safetensors",
                seed=3,
                val_acc=0.9,
            )
        ],
        training={
            "command": "qtdog train --data data/PACS --test-domain sketch",
            "dataset": "PACS",
        },
        metrics={
            "dataset": {"name": "PACS", "hub_id": "flwrlabs/pacs"},
            "domains": {
                "sketch": {"accuracy": 0.8123, "split": "test", "held_out": True, "n": 3929},
                "photo": {"accuracy": 0.97, "split": "val", "held_out": False},
            },
        },
    )


def _front_matter(text: str) -> dict[str, Any]:
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    assert body.strip()
    return yaml.safe_load(front)


def test_card_front_matter() -> None:
    config = _config_with_metrics()
    meta = _front_matter(render_model_card(config, repo_id="me/qtdog-pacs"))
    assert meta["library_name"] == "qtdog"
    assert meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == "image-classification"
    assert meta["tags"] == CARD_TAGS
    assert meta["datasets"] == ["flwrlabs/pacs"]
    (entry,) = meta["model-index"]
    assert entry["name"] == "qtdog-pacs"
    results = {r["dataset"]["config"]: r for r in entry["results"]}
    assert set(results) == {"sketch", "photo"}
    sketch = results["sketch"]
    assert sketch["task"]["type"] == "image-classification"
    assert sketch["dataset"]["split"] == "test"
    assert sketch["metrics"][0] == {
        "type": "accuracy",
        "value": 0.8123,
        "name": "Accuracy (held-out domain sketch)",
    }


def test_card_body_has_usage_training_command_and_members() -> None:
    text = render_model_card(_config_with_metrics(), repo_id="me/qtdog-pacs")
    assert "qtdog train --data data/PACS --test-domain sketch" in text
    assert 'QTDoGEnsemble.from_pretrained("me/qtdog-pacs")' in text
    assert "| sketch | held out (unseen) | test | 81.2% | 3929 |" in text
    assert "| member-0 | 3 | 90.0% |" in text
    assert "arxiv.org/abs/2410.06020" in text


def test_card_without_metrics_has_no_model_index() -> None:
    config = _config_with_metrics()
    config.metrics = {}
    config.training = {}
    meta = card_metadata(config)
    assert "model-index" not in meta and "datasets" not in meta
    assert _front_matter(render_model_card(config))["library_name"] == "qtdog"


def test_card_of_the_tiny_repo_parses(tiny_repo: Path) -> None:
    config = read_config(tiny_repo)
    meta = _front_matter(render_model_card(copy.deepcopy(config)))
    assert meta["tags"] == CARD_TAGS
    for entry in meta.get("model-index", []):
        for result in entry["results"]:
            assert isinstance(result["metrics"][0]["value"], float)


def test_member_onnx_may_be_omitted_only_with_a_merged_graph(tiny_repo, tmp_path):
    """A compact repository (no per-member ONNX, ensemble.onnx holds them) loads and predicts;
    a member without ONNX and without a merged graph is refused with a line naming the field."""
    from qtdog_train.package import compact_repository

    compact = tmp_path / "compact"
    config = compact_repository(tiny_repo, compact)
    assert all(m.onnx is None for m in config.members)
    assert not list(compact.glob("member-*.onnx")) and (compact / "ensemble.onnx").is_file()
    full = QTDoGEnsemble.from_pretrained(tiny_repo)
    small = QTDoGEnsemble.from_pretrained(compact)
    import numpy as np

    images = [np.full((40, 40, 3), v, dtype=np.uint8) for v in (30, 128, 220)]
    assert np.allclose(full.predict_proba(images), small.predict_proba(images), atol=1e-6)
    data = json.loads((compact / "config.json").read_text())
    data.pop("ensemble_onnx")
    data.pop("ensemble_sha256")
    (compact / "config.json").write_text(json.dumps(data))
    with pytest.raises(ModelFormatError, match=r"members\[0\]: field 'onnx' is required"):
        read_config(compact)
