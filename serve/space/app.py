"""Hugging Face Space entry point: the qtdog demo, exactly as ``qtdog demo`` serves it.

Spaces run ``python app.py`` from the Space's root, with GRADIO_SERVER_NAME set
to 0.0.0.0; ``demo.launch()`` picks that up. The model is the one packaged
with qtdog unless the Space sets the variable QTDOG_MODEL to a Hub repo id
(e.g. ``owner/qtdog-pacs-sketch``). Example images come from ./examples
beside this file (copy the repository's examples/ there).
"""

from __future__ import annotations

import os
from pathlib import Path

from qtdog_serve.app import MAX_FILE_SIZE, build_app, load_model

HERE = Path(__file__).resolve().parent

demo = build_app(load_model(os.environ.get("QTDOG_MODEL") or None), examples_dir=HERE / "examples")

if __name__ == "__main__":
    demo.launch(max_file_size=MAX_FILE_SIZE)
