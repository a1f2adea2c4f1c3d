"""The Gradio demo: upload, paste or photograph an image, see what the int8 ensemble says.

    from qtdog_sdk import QTDoGEnsemble
    from qtdog_serve.app import build_app

    demo = build_app(QTDoGEnsemble.from_pretrained())
    demo.launch()

or ``qtdog demo`` / ``python -m qtdog_serve``. The prediction endpoint is
``/predict`` (batched, queued), usable from ``gradio_client``::

    from gradio_client import Client, handle_file
    label, details, result = Client("http://127.0.0.1:7860/").predict(
        handle_file("examples/sketch_dog.png"), api_name="/predict"
    )
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from qtdog_serve.examples import example_groups, find_examples_dir
from qtdog_serve.modelinfo import (
    DEFAULT_AGREEMENT_THRESHOLD,
    Rendered,
    describe_model,
    render_error,
    render_prediction,
    unseen_domains,
)

MAX_BATCH_SIZE = 16
MAX_FILE_SIZE = "10mb"


class _Unreadable(Exception):
    pass


def _image_source(payload: Any) -> tuple[Any, str]:
    """What the SDK should load for one raw ``gr.Image`` payload, and the name to show.

    The predict event runs with ``preprocess=False``: Gradio's own image
    preprocessing raises on an undecodable upload, and in a batched event that
    fails every request of the batch, other users' included. The SDK loads the
    file instead (EXIF, transparency, corrupt files) and reports a bad one for
    that image alone. Gradio has already checked that ``path`` is an upload.
    """
    path = payload.get("path")
    name = payload.get("orig_name") or (Path(path).name if path else "upload")
    if path:
        return path, name
    url = payload.get("url") or ""
    if url.startswith("data:") and "," in url:
        try:
            return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))), name
        except (ValueError, OSError):
            pass
    raise _Unreadable(f"{name}: could not be read as an image")


def make_predict_fn(model: Any, threshold: float = DEFAULT_AGREEMENT_THRESHOLD, top_k: int = 5):
    """The batched prediction function: raw image payloads in, three output lists out."""
    from qtdog_sdk.errors import QTDoGError

    member_names = [m.name for m in model.config.members]
    top_k = min(top_k, len(model.labels))

    def show(pred: Any, src: Any, name: str) -> Rendered:
        if pred.error:
            # The SDK names the file it failed on: show the user's file name, not the server's path.
            return render_error(
                pred.error.replace(src, name) if isinstance(src, str) else pred.error
            )
        return render_prediction(pred, member_names, threshold)

    def predict(payloads: list[Any]) -> tuple[list, list, list]:
        rendered: list[Rendered] = [Rendered(label=None, details="", result=None)] * len(payloads)
        todo: list[tuple[int, Any, str]] = []
        for i, payload in enumerate(payloads):
            if payload is None:
                continue
            try:
                todo.append((i, *_image_source(payload)))
            except _Unreadable as exc:
                rendered[i] = render_error(str(exc))
        if todo:
            try:
                preds = model.predict(
                    [src for _, src, _ in todo], batch_size=MAX_BATCH_SIZE, top_k=top_k
                )
                for (i, src, name), pred in zip(todo, preds, strict=True):
                    rendered[i] = show(pred, src, name)
            except QTDoGError as exc:
                # Unreadable images come back one by one (pred.error); this is the model failing.
                for i, _, _ in todo:
                    rendered[i] = render_error(str(exc))
        return (
            [r.label for r in rendered],
            [r.details for r in rendered],
            [r.result for r in rendered],
        )

    return predict


def build_app(
    model: Any,
    *,
    examples_dir: str | Path | None = None,
    agreement_threshold: float = DEFAULT_AGREEMENT_THRESHOLD,
    top_k: int = 5,
) -> gr.Blocks:
    """Build the demo (queue configured) for a loaded ``QTDoGEnsemble``."""
    predict = make_predict_fn(model, agreement_threshold, top_k)
    unseen = unseen_domains(model)
    sources = [str(d) for d in (model.config.training or {}).get("source_domains") or []]
    groups = example_groups(find_examples_dir(examples_dir), unseen, sources)
    intro = "Upload, paste or photograph an image, or click an example."
    if sources and unseen:
        intro = (
            f"An int8 ensemble of {model.num_members} members, trained on "
            f"**{', '.join(sources)}** images, classifies **{', '.join(unseen)}** images, "
            f"a domain it never saw. {intro}"
        )

    with gr.Blocks(title="QT-DoG demo", analytics_enabled=False) as demo:
        gr.Markdown(f"# QT-DoG: quantized ensembles for unseen domains\n\n{intro}")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(
                    type="filepath",
                    sources=["upload", "clipboard", "webcam"],
                    label="Image",
                    height=320,
                    elem_id="input-image",
                )
                button = gr.Button("Classify", variant="primary", elem_id="classify")
                for title, paths in groups:
                    gr.Examples(
                        examples=[[p] for p in paths],
                        inputs=[image],
                        label=title,
                        examples_per_page=12,
                    )
            with gr.Column(scale=1):
                label = gr.Label(
                    num_top_classes=min(top_k, len(model.labels)),
                    label="Prediction",
                    elem_id="prediction",
                )
                details = gr.Markdown(elem_id="details")
                with gr.Accordion("Result as JSON", open=False):
                    result = gr.JSON(label="Result", elem_id="result")
        with gr.Accordion("About this model", open=True):
            gr.Markdown(describe_model(model), elem_id="model-info")

        gr.on(
            triggers=[image.change, button.click],
            fn=predict,
            inputs=[image],
            outputs=[label, details, result],
            api_name="predict",
            api_description="Classify one image: top-k probabilities, member votes (markdown) and a JSON summary.",
            preprocess=False,  # the SDK loads the files: see _image_source
            batch=True,
            max_batch_size=MAX_BATCH_SIZE,
            concurrency_limit=1,  # one batch at a time: a batch already uses every core
            trigger_mode="always_last",
        )
    demo.queue(max_size=256, default_concurrency_limit=2)
    return demo


def load_model(model: str | Path | None = None) -> Any:
    """Load a model repository (Hub id or directory; None: the embedded default)."""
    from qtdog_sdk import QTDoGEnsemble

    return QTDoGEnsemble.from_pretrained(model)


def launch(
    model: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    examples_dir: str | Path | None = None,
    **kwargs: Any,
) -> gr.Blocks:
    """Load ``model`` and serve the demo on ``host:port``; extra kwargs go to ``Blocks.launch``.

    Blocks until the server stops unless ``prevent_thread_lock=True`` is passed.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_app(load_model(model), examples_dir=examples_dir)
    kwargs.setdefault("max_file_size", MAX_FILE_SIZE)
    demo.launch(server_name=host, server_port=port, **kwargs)
    return demo
