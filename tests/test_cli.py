"""The installed ``qtdog`` executable, run as a subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qtdog_sdk import __version__
from qtdog_sdk.ensemble import DEFAULT_MODEL_DIR
from qtdog_sdk.format import CONFIG_NAME, read_config

QTDOG = shutil.which("qtdog") or str(Path(sys.executable).with_name("qtdog"))


def qtdog(
    *args: str, cwd: Path | None = None, timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [QTDOG, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )


def assert_clean_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    return result.stderr.strip()


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory: pytest.TempPathFactory, shapes_images: list[Path]) -> Path:
    """Three good images (one in a subfolder) and three bad ones."""
    root = tmp_path_factory.mktemp("mixed")
    (root / "sub").mkdir()
    shutil.copy(shapes_images[0], root / "good-0.png")
    shutil.copy(shapes_images[1], root / "good-1.png")
    shutil.copy(shapes_images[2], root / "sub" / "good-2.png")
    (root / "text.jpg").write_text("not an image")
    data = shapes_images[3].read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "empty.jpeg").write_bytes(b"")
    (root / "notes.txt").write_text("ignored: not an image extension")
    return root


@pytest.fixture
def repo(tiny_repo: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_repo, tmp_path / "repo"))


# ------------------------------------------------------------- basics


def test_version() -> None:
    result = qtdog("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"qtdog {__version__}"


@pytest.mark.parametrize("command", [[], ["predict"], ["eval"], ["info"], ["push"], ["space"]])
def test_help_has_examples(command: list[str]) -> None:
    result = qtdog(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Example" in result.stdout
    assert "Usage" in result.stdout


def test_no_arguments_shows_help() -> None:
    result = qtdog()
    assert result.returncode in (0, 2)
    assert "predict" in result.stdout + result.stderr


# ------------------------------------------------------------- predict


def test_predict_mixed_directory_json(tiny_repo: Path, mixed_dir: Path) -> None:
    result = qtdog(
        "predict", str(mixed_dir), "--model", str(tiny_repo), "--format", "json", "--top-k", "2"
    )
    assert result.returncode == 1, result.stderr
    rows = json.loads(result.stdout)
    by_name = {Path(r["path"]).name: r for r in rows}
    assert set(by_name) == {
        "good-0.png",
        "good-1.png",
        "good-2.png",
        "text.jpg",
        "truncated.png",
        "empty.jpeg",
    }
    labels = read_config(tiny_repo).labels
    for name in ("good-0.png", "good-1.png", "good-2.png"):
        row = by_name[name]
        assert set(row) == {"path", "label", "score", "top_k", "agreement", "member_labels"}
        assert row["label"] in labels and 0 < row["score"] <= 1
        assert row["top_k"][0]["label"] == row["label"] and len(row["top_k"]) == 2
        assert 0 <= row["agreement"] <= 1
    for name in ("text.jpg", "truncated.png", "empty.jpeg"):
        assert set(by_name[name]) == {"path", "error"}
        assert name in by_name[name]["error"]
    assert "Traceback" not in result.stderr
    assert result.stderr.count("failed:") == 3


def test_predict_all_good_exits_zero_jsonl(tiny_repo: Path, shapes_images: list[Path]) -> None:
    paths = [str(p) for p in shapes_images[:3]]
    result = qtdog(
        "predict", *paths, "--model", str(tiny_repo), "--format", "jsonl", "--batch-size", "2"
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in rows] == paths


def test_predict_csv_to_file(tiny_repo: Path, mixed_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds.csv"
    result = qtdog("predict", str(mixed_dir), "-m", str(tiny_repo), "-f", "csv", "-o", str(out))
    assert result.returncode == 1
    assert result.stdout == ""
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 6
    assert sum(1 for r in rows if r["error"]) == 3 and sum(1 for r in rows if r["label"]) == 3
    assert "3 of 6 images predicted" in result.stderr


def test_predict_table(tiny_repo: Path, shapes_images: list[Path]) -> None:
    result = qtdog("predict", str(shapes_images[0]), "--model", str(tiny_repo))
    assert result.returncode == 0, result.stderr
    assert "label" in result.stdout and shapes_images[0].name in result.stdout


def test_predict_glob_is_expanded(tiny_repo: Path, mixed_dir: Path) -> None:
    result = qtdog(
        "predict", str(mixed_dir / "**" / "good-*.png"), "--model", str(tiny_repo), "-f", "json"
    )
    assert result.returncode == 0, result.stderr
    assert sorted(Path(r["path"]).name for r in json.loads(result.stdout)) == [
        "good-0.png",
        "good-1.png",
        "good-2.png",
    ]


def test_predict_missing_file_exits_one(
    tiny_repo: Path, shapes_images: list[Path], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.png"
    result = qtdog(
        "predict", str(shapes_images[0]), str(missing), "--model", str(tiny_repo), "-f", "json"
    )
    assert result.returncode == 1
    rows = json.loads(result.stdout)
    assert rows[1] == {"path": str(missing), "error": f"{missing}: no such file"}


def test_predict_progress_with_many_files(tiny_repo: Path, shapes_images: list[Path]) -> None:
    paths = [str(p) for p in shapes_images] * 3
    result = qtdog("predict", *paths, "--model", str(tiny_repo), "-f", "jsonl")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(paths)


# -------------------------------------------------- usage / model errors


def test_missing_model_directory(tmp_path: Path, shapes_images: list[Path]) -> None:
    result = qtdog("predict", str(shapes_images[0]), "--model", str(tmp_path / "no" / "model"))
    message = assert_clean_error(result)
    assert message.startswith("error:") and "\n" not in message


def test_future_format_version(repo: Path, shapes_images: list[Path]) -> None:
    data = json.loads((repo / CONFIG_NAME).read_text())
    data["format_version"] = 99
    (repo / CONFIG_NAME).write_text(json.dumps(data))
    message = assert_clean_error(qtdog("predict", str(shapes_images[0]), "--model", str(repo)))
    assert "format_version 99" in message and "upgrade qtdog" in message and "\n" not in message


def test_tampered_model(repo: Path, shapes_images: list[Path]) -> None:
    config = read_config(repo)
    target = repo / (config.ensemble_onnx or config.members[0].onnx)
    target.write_bytes(target.read_bytes()[:-10] + b"0123456789")
    message = assert_clean_error(qtdog("predict", str(shapes_images[0]), "--model", str(repo)))
    assert "sha256 mismatch" in message and "\n" not in message


def test_usage_errors_exit_two(tiny_repo: Path, shapes_images: list[Path], tmp_path: Path) -> None:
    assert qtdog("predict").returncode == 2  # no PATH
    assert qtdog("predict", str(shapes_images[0]), "--top-k", "0").returncode == 2
    assert qtdog("predict", str(shapes_images[0]), "--format", "xml").returncode == 2
    assert qtdog("predict", str(shapes_images[0]), "--backend", "tensorrt").returncode == 2
    assert qtdog("frobnicate").returncode == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    message = assert_clean_error(qtdog("predict", str(empty), "--model", str(tiny_repo)))
    assert "no input images" in message


def test_default_model(shapes_images: list[Path]) -> None:
    result = qtdog("predict", str(shapes_images[0]), "-f", "json")
    if (DEFAULT_MODEL_DIR / CONFIG_NAME).is_file():
        assert result.returncode == 0, result.stderr
    else:
        message = assert_clean_error(result)
        assert "no default model" in message


def test_unwritable_output(tiny_repo: Path, shapes_images: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "no-such-dir" / "out.json"
    message = assert_clean_error(
        qtdog("predict", str(shapes_images[0]), "-m", str(tiny_repo), "-f", "json", "-o", str(out))
    )
    assert "cannot write" in message


# ------------------------------------------------------------ eval, info, push


def test_eval_json(tiny_repo: Path, shapes_root: Path) -> None:
    domain = sorted(p.name for p in shapes_root.iterdir() if p.is_dir())[0]
    result = qtdog(
        "eval", str(tiny_repo), "--data", str(shapes_root), "--domain", domain, "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    res = json.loads(result.stdout)
    assert res["domain"] == domain and 0 <= res["accuracy"] <= 1
    assert res["labels"] == read_config(tiny_repo).labels
    assert sum(map(sum, res["confusion_matrix"])) == res["n"] > 0


def test_eval_table(tiny_repo: Path, shapes_root: Path) -> None:
    domain = sorted(p.name for p in shapes_root.iterdir() if p.is_dir())[-1]
    result = qtdog("eval", str(tiny_repo), "--data", str(shapes_root), "--domain", domain)
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout


def test_eval_class_mismatch(tiny_repo: Path, tmp_path: Path, shapes_images: list[Path]) -> None:
    (tmp_path / "art" / "unicorn").mkdir(parents=True)
    shutil.copy(shapes_images[0], tmp_path / "art" / "unicorn" / "x.png")
    message = assert_clean_error(
        qtdog("eval", str(tiny_repo), "--data", str(tmp_path), "--domain", "art")
    )
    assert "unicorn" in message


def test_info(tiny_repo: Path) -> None:
    config = read_config(tiny_repo)
    result = qtdog("info", str(tiny_repo))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert config.architecture in out
    for label in config.labels:
        assert label in out
    for member in config.members:
        assert member.name in out
    assert "size on disk" in out and "quantization" in out
    as_json = json.loads(qtdog("info", str(tiny_repo), "--json").stdout)
    assert as_json["config"]["labels"] == config.labels
    assert set(as_json["file_sizes"]) == set(config.files())


def test_push_missing_directory(tmp_path: Path) -> None:
    result = qtdog("push", str(tmp_path / "nope"), "me/model")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
