"""``qtdog demo``: serve the Gradio demo.

The SDK's CLI registers :func:`demo_command` as its ``demo`` command;
``python -m qtdog_serve`` runs it on its own. Gradio is imported only inside
the command, so ``qtdog --help`` stays fast and works without the demo extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def demo_command(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Hub repo id or local model directory. Default: the model embedded in qtdog.",
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            help="Interface to listen on; 0.0.0.0 serves other machines (Docker, Spaces)."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 7860,
    examples: Annotated[
        Path | None,
        typer.Option(
            help="Folder of example images (<domain>_<class>.png/jpg). Default: ./examples or the checkout's.",
            file_okay=False,
            exists=True,
        ),
    ] = None,
) -> None:
    """Serve the interactive demo in the browser: an image in, classes and member votes out."""
    try:
        from qtdog_serve.app import launch
    except ImportError as exc:
        typer.echo(
            f"error: the demo needs the 'demo' extra ({exc}); pip install 'qtdog[demo]'", err=True
        )
        raise typer.Exit(2) from None
    from qtdog_sdk.errors import QTDoGError

    try:
        launch(model, host=host, port=port, examples_dir=examples)
    except QTDoGError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
