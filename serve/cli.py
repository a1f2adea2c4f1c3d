"""``qtdog demo`` serves the Gradio demo; ``qtdog space`` writes it as a Hugging Face Space.

The SDK's CLI registers :func:`demo_command` and :func:`space_command` as its
``demo`` and ``space`` commands; ``python -m qtdog_serve`` runs the demo alone.
Gradio is imported only inside the commands, so ``qtdog --help`` stays fast and
works without the demo extra.
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


def space_command(
    directory: Annotated[
        Path,
        typer.Argument(
            help="Folder to write the Space into (created if needed).",
            file_okay=False,
            show_default=False,
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Local model directory (copied into the Space as model/) or Hub repo id "
            "(downloaded by the Space when it starts). Default: the model embedded in qtdog.",
        ),
    ] = None,
    examples: Annotated[
        Path | None,
        typer.Option(
            help="Folder of example images to copy. Default: ./examples or the checkout's.",
            file_okay=False,
            exists=True,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace the files and folders an earlier qtdog space wrote there."
        ),
    ] = False,
    push: Annotated[
        str | None,
        typer.Option(
            "--push",
            metavar="OWNER/SPACE",
            help="Then upload the folder to this Hugging Face Space (created if needed).",
        ),
    ] = None,
    private: Annotated[
        bool, typer.Option("--private", help="With --push: create the Space as private.")
    ] = False,
    token: Annotated[
        str | None,
        typer.Option(help="With --push: Hub token (default: HF_TOKEN or the saved login)."),
    ] = None,
) -> None:
    """Write the demo as a self-contained Hugging Face Space folder (and optionally push it).

    The folder holds app.py, README.md (Spaces front matter), requirements.txt
    (no torch, no qtdog release needed), a copy of the qtdog_sdk and
    qtdog_serve source, examples/ and, with --model DIR, the model.
    """
    from qtdog_sdk.errors import QTDoGError
    from qtdog_serve.space import build_space, check_space_id, push_space

    try:
        if push:
            check_space_id(push)  # before writing anything
        build = build_space(directory, model, examples_dir=examples, force=force)
        size = sum(p.stat().st_size for p in build.folder.rglob("*") if p.is_file())
        typer.echo(
            f"wrote a Space to {build.folder} ({size / 1e6:.1f} MB, gradio {build.sdk_version}, "
            f"model: {build.model or 'embedded default'}); try it: cd {build.folder} && "
            "pip install -r requirements.txt && python app.py",
            err=True,
        )
        if push:
            commit = push_space(build.folder, push, private=private, token=token)
            typer.echo(
                f"pushed {build.folder} to the Space {push}"
                + (f" (commit {commit})" if commit else ""),
                err=True,
            )
    except QTDoGError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
