"""The text files of a Space written by ``qtdog space``: app.py, README.md, .gitattributes.

Pure functions of what the Space serves; ``qtdog_serve.space`` decides that and
writes them.
"""

from __future__ import annotations

import json
import re

from qtdog_sdk._version import __version__

TITLE = "QT-DoG demo"
SHORT_DESCRIPTION = "An int8 ensemble classifies images from domains it never saw"

# Binary files go to the Hub through Git LFS/Xet; a `git push` of the Space needs these rules.
_BINARY_PATTERNS = ("*.onnx", "*.safetensors", "*.png", "*.jpg", "*.jpeg", "*.webp", "*.gif")

_APP = '''"""Hugging Face Space entry point, written by `qtdog space` (qtdog {version}).

Spaces run `python app.py` from this folder with GRADIO_SERVER_NAME=0.0.0.0,
which `demo.launch()` reads (GRADIO_SERVER_PORT too). qtdog_sdk/ and
qtdog_serve/ beside this file are a copy of qtdog's source: Python puts this
file's folder first on sys.path, so they are what runs, and requirements.txt
needs no qtdog release. The Space variable QTDOG_MODEL (a Hub repo id) serves
another model.
"""

import os
from pathlib import Path

from qtdog_serve.app import MAX_FILE_SIZE, build_app, load_model

HERE = Path(__file__).resolve().parent
# A folder of this Space, a Hub repo id, or None: the model embedded in qtdog_sdk.
MODEL = {model}


def model_source() -> str | None:
    chosen = os.environ.get("QTDOG_MODEL") or MODEL
    if chosen and (HERE / chosen).is_dir():
        return str(HERE / chosen)
    return chosen


demo = build_app(load_model(model_source()), examples_dir=HERE / "examples")

if __name__ == "__main__":
    demo.launch(max_file_size=MAX_FILE_SIZE)
'''


_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9 ._-]*")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def _yaml_scalar(value: str | bool) -> str:
    """A YAML scalar: plain when it cannot be read as anything but this string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if _PLAIN.fullmatch(value) and value.lower() not in _YAML_WORDS and not value.endswith(" "):
        return value
    return json.dumps(value, ensure_ascii=False)


def app_source(model: str | None) -> str:
    """app.py loading ``model`` (a folder of the Space, a Hub repo id, or None)."""
    return _APP.format(version=__version__, model=json.dumps(model) if model else "None")


def _model_sentence(model: str | None, from_hub: bool) -> str:
    if model is None:
        return (
            "The model is the one embedded in qtdog (`qtdog_sdk/assets/default_model`): "
            "trained on PACS photos, art paintings and cartoons, with sketches held out."
        )
    if from_hub:
        return f"The model is [{model}](https://huggingface.co/{model}), downloaded from the Hub when the Space starts."
    return f"The model is the qtdog model repository in `{model}/` (its card: `{model}/README.md`)."


def readme_text(model: str | None, *, from_hub: bool, sdk_version: str, python_version: str) -> str:
    """README.md: the Spaces front matter, then what the Space is and how to run it.

    ``model`` as for :func:`app_source`; ``from_hub`` says it is a Hub repo id.
    """
    front = {
        "title": TITLE,
        "emoji": "✏️",
        "colorFrom": "indigo",
        "colorTo": "gray",
        "sdk": "gradio",
        "sdk_version": sdk_version,
        "app_file": "app.py",
        "python_version": python_version,
        "pinned": False,
        "license": "apache-2.0",
        "short_description": SHORT_DESCRIPTION,
    }
    lines = [f"{key}: {_yaml_scalar(value)}" for key, value in front.items()]
    if model and from_hub:
        lines.append(f"models:\n  - {json.dumps(model)}")
    return f"""---
{chr(10).join(lines)}
---

# {TITLE}

Upload, paste or photograph an image and see what an int8 QT-DoG ensemble
(quantization-aware training for domain generalization) says about it: the
top classes, each member's vote, and a warning when the members disagree,
a sign that the image lies outside what the model knows.
{_model_sentence(model, from_hub)}

Written by `qtdog space` (qtdog {__version__}); regenerate it rather than edit it.

- `app.py`: the demo, exactly as `qtdog demo` serves it.
- `qtdog_sdk/`, `qtdog_serve/`: a copy of qtdog's source (inference with
  onnxruntime, no torch), so that no qtdog release is needed.
- `requirements.txt`: their dependencies; Gradio comes from `sdk_version` above.
- `examples/`: example images (PACS, credited in `examples/README.md`).

Run it locally:

```bash
pip install -r requirements.txt && python app.py
```
"""


def gitattributes() -> str:
    """Git LFS rules for the Space's binary files."""
    return "".join(
        f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in _BINARY_PATTERNS
    )
