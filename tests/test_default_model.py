"""The embedded default model: shipped in the package, loads offline, and the README's first command works."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from qtdog_sdk import QTDoGEnsemble
from qtdog_sdk.ensemble import DEFAULT_MODEL_DIR
from qtdog_sdk.format import read_config, verify_files

ROOT = Path(__file__).resolve().parents[1]
PACS_CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]


def test_default_model_is_a_valid_pacs_eoq_repository() -> None:
    config = read_config(DEFAULT_MODEL_DIR)
    verify_files(DEFAULT_MODEL_DIR, config)
    assert config.labels == PACS_CLASSES
    assert config.training["dataset"] == "PACS" and config.training["test_domains"] == ["sketch"]
    assert "sketch" not in config.training["source_domains"]
    assert len(config.members) >= 2 and config.ensemble_onnx
    assert config.quantization.weight_bits == 7
    measured = config.metrics["qtdog_eval"]
    assert (
        measured["command"].startswith("qtdog eval")
        and 0 < measured["results"]["sketch"]["accuracy"] <= 1
    )
    size = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir())
    assert size < 50e6, f"the embedded model must stay small, it is {size / 1e6:.1f} MB"
    card = (DEFAULT_MODEL_DIR / "README.md").read_text()
    assert "qtdog train" in card and "qtdog eval" in card


def test_default_model_predicts_the_examples_offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = QTDoGEnsemble.from_pretrained()
    examples = sorted((ROOT / "examples").glob("*.*g"))
    results = model.predict(examples, top_k=3)
    assert len(results) == len(examples) >= 8
    for result in results:
        assert result.error is None and result.label in PACS_CLASSES
        assert len(result.top_k) == 3 and len(result.member_labels) == model.num_members


def _readme_first_command() -> str:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1]
    return re.findall(r"```bash\n(.+?)\n```", quick, flags=re.S)[0]


def test_readme_first_command_predicts_with_the_embedded_model() -> None:
    """The predict half of the README's first command, run as written (the install half is CI's)."""
    command = _readme_first_command()
    predict = command.split("&&")[-1].strip()
    assert predict.startswith("qtdog predict examples/")
    args = predict.split()[1:]
    done = subprocess.run(
        [shutil.which("qtdog"), *args, "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert result["label"] in PACS_CLASSES and result["path"].endswith(args[-1].split("/")[-1])
