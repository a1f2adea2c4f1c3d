"""The ``qtdog`` command line: a thin layer over the SDK.

Exit codes: 0 success; 1 some inputs failed (the others are still printed);
2 usage error or unusable model (one-line message on stderr, no traceback).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qtdog_sdk._version import __version__
from qtdog_sdk.errors import QTDoGError

__all__ = ["app", "main"]

app = typer.Typer(
    name="qtdog",
    help=(
        "QT-DoG: run, inspect, evaluate and publish int8 ensembles for domain generalization.\n\n"
        "Example: qtdog predict photos/ --model owner/qtdog-pacs --format json"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_err = Console(stderr=True, highlight=False, soft_wrap=True)

#: Above this many inputs, `predict` shows a progress bar on stderr.
PROGRESS_MIN_FILES = 16
_GLOB_CHARS = set("*?[")


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


class EvalFormat(str, Enum):
    table = "table"
    json = "json"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class BackendName(str, Enum):
    auto = "auto"
    onnx = "onnx"
    torch = "torch"


class UsageError(QTDoGError):
    """Bad command-line input detected by qtdog itself (exit 2)."""


def _fail(message: str, code: int = 2) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"qtdog {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            callback=_version_callback,
            is_eager=True,
            help="Show the version and exit.",
        ),
    ] = False,
) -> None:
    """QT-DoG: run, inspect, evaluate and publish int8 ensembles for domain generalization.

    Example: qtdog predict photos/ --model owner/qtdog-pacs --format json
    """


# --------------------------------------------------------------------- inputs
def expand_inputs(paths: list[str]) -> list[str]:
    """Files stay, directories expand recursively to their image files, globs
    expand (sorted). A path that matches nothing is kept so it is reported as
    a failed input."""
    from qtdog_sdk.images import IMAGE_EXTENSIONS

    out: list[str] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(
                str(p)
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in IMAGE_EXTENSIONS
                and not p.name.startswith(".")
            )
            if not found:
                _err.print(f"[yellow]warning:[/] {escape(raw)}: no image files in this directory")
            out.extend(found)
        elif not path.exists() and _GLOB_CHARS & set(raw):
            matches = sorted(
                m for m in glob.glob(os.path.expanduser(raw), recursive=True) if Path(m).is_file()
            )
            out.extend(matches if matches else [raw])
        else:
            out.append(str(path) if raw.startswith("~") else raw)
    return out


def _load_model(model: str | None, revision: str | None, device: str, backend: str) -> Any:
    from qtdog_sdk.ensemble import QTDoGEnsemble

    return QTDoGEnsemble.from_pretrained(model, revision=revision, device=device, backend=backend)


# -------------------------------------------------------------------- outputs
def _csv_rows(preds: list[Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "score", "agreement", "top_k", "error"])
    for p in preds:
        if p.error is not None:
            writer.writerow([p.path, "", "", "", "", p.error])
        else:
            top = ";".join(f"{ls.label}:{ls.score:.6f}" for ls in p.top_k)
            writer.writerow([p.path, p.label, f"{p.score:.6f}", f"{p.agreement:.4f}", top, ""])
    return buf.getvalue()


def _table(preds: list[Any], out: Console) -> None:
    table = Table(show_header=True, header_style="bold", show_lines=False)
    table.add_column("path", overflow="fold")
    table.add_column("label")
    table.add_column("score", justify="right")
    table.add_column("agreement", justify="right")
    table.add_column("top-k", overflow="fold")
    for p in preds:
        if p.error is not None:
            table.add_row(
                escape(str(p.path)), "[red]error[/]", "", "", f"[red]{escape(p.error)}[/]"
            )
        else:
            top = ", ".join(f"{escape(ls.label)} {ls.score:.3f}" for ls in p.top_k[1:])
            table.add_row(
                escape(str(p.path)),
                f"[bold]{escape(p.label)}[/]",
                f"{p.score:.3f}",
                f"{p.agreement:.2f}",
                top,
            )
    out.print(table)


def _progress_iter(items: Iterator[Any], total: int, enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield from items
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("predicting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=_err,
        transient=True,
    ) as progress:
        task = progress.add_task("predict", total=total)
        for item in items:
            yield item
            progress.advance(task)


# ------------------------------------------------------------------- commands
# Options shared by several commands, declared once.
RevisionOption = Annotated[str | None, typer.Option(help="Hub branch, tag or commit.")]
BatchSizeOption = Annotated[
    int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass.")
]
DeviceOption = Annotated[Device, typer.Option(help="Where to run.")]
BackendOption = Annotated[BackendName, typer.Option(help="Inference engine (auto = onnx).")]


@app.command(
    epilog="Examples:  qtdog predict cat.jpg  |  qtdog predict photos/ 'more/**/*.png' --model owner/name "
    "--format json --output preds.json"
)
def predict(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="Image files, directories (searched recursively) or quoted glob patterns.",
            show_default=False,
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Hub repo id or local model directory. Default: the packaged model.",
        ),
    ] = None,
    revision: RevisionOption = None,
    top_k: Annotated[
        int, typer.Option("--top-k", "-k", min=1, help="Classes listed per image.")
    ] = 5,
    batch_size: BatchSizeOption = 32,
    device: DeviceOption = Device.auto,
    backend: BackendOption = BackendName.auto,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="Output format.")
    ] = OutputFormat.table,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write results to this file instead of stdout.", dir_okay=False
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or summary on stderr.")
    ] = False,
) -> None:
    """Classify images with a QT-DoG ensemble.

    Prints per image the label, its probability (softmax of the members' mean
    logits), the top-k classes and the members' agreement. Exit code 1 when
    some inputs could not be read (the others are still reported).

    Example: qtdog predict photos/ --model owner/qtdog-pacs --format json
    """
    inputs = expand_inputs(paths)
    if not inputs:
        raise UsageError("no input images found")
    ens = _load_model(model, revision, device.value, backend.value)
    stream = ens.iter_predict(inputs, batch_size=batch_size, top_k=top_k)
    show_progress = not quiet and len(inputs) >= PROGRESS_MIN_FILES
    preds: list[Any] = []
    handle = None
    try:
        if output_format is OutputFormat.jsonl:
            handle = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
            for p in _progress_iter(stream, len(inputs), show_progress):
                preds.append(p)
                handle.write(json.dumps(p.to_dict()) + "\n")
                handle.flush()
        else:
            preds = list(_progress_iter(stream, len(inputs), show_progress))
            if output_format is OutputFormat.json:
                text = json.dumps([p.to_dict() for p in preds], indent=2) + "\n"
            elif output_format is OutputFormat.csv:
                text = _csv_rows(preds)
            else:
                text = None
            if text is not None:
                if output:
                    output.write_text(text, encoding="utf-8")
                else:
                    sys.stdout.write(text)
            elif output:
                with open(output, "w", encoding="utf-8") as fh:
                    _table(preds, Console(file=fh, width=160, no_color=True, highlight=False))
            else:
                _table(preds, Console(highlight=False))
    except OSError as exc:
        if output is not None:
            raise UsageError(f"{output}: cannot write ({exc.strerror or exc})") from None
        raise
    finally:
        if handle is not None and handle is not sys.stdout:
            handle.close()
    failed = [p for p in preds if p.error is not None]
    if failed:
        for p in failed:
            _err.print(f"[red]failed:[/] {escape(p.error)}")
    if not quiet and (output or failed):
        _err.print(
            f"{len(preds) - len(failed)} of {len(preds)} images predicted"
            + (f", written to {output}" if output else "")
        )
    if failed:
        raise typer.Exit(1)


@app.command(
    name="eval",
    epilog="Example:  qtdog eval owner/qtdog-pacs --data data/PACS --domain sketch --format json",
)
def eval_command(
    model: Annotated[
        str, typer.Argument(help="Hub repo id or local model directory.", show_default=False)
    ],
    data: Annotated[
        Path,
        typer.Option(
            "--data", help="Dataset root in DomainBed layout: ROOT/<domain>/<class>/<images>."
        ),
    ],
    domain: Annotated[
        list[str], typer.Option("--domain", "-d", help="Domain folder to evaluate (repeatable).")
    ],
    output_format: Annotated[
        EvalFormat, typer.Option("--format", "-f", help="Output format.")
    ] = EvalFormat.table,
    batch_size: BatchSizeOption = 32,
    device: DeviceOption = Device.auto,
    backend: BackendOption = BackendName.auto,
    revision: RevisionOption = None,
) -> None:
    """Measure accuracy on one or more domains of a DomainBed-layout dataset.

    Class folder names must be labels of the model. Reports accuracy,
    per-class accuracy and the confusion matrix.

    Example: qtdog eval owner/qtdog-pacs --data data/PACS --domain sketch
    """
    from qtdog_sdk.evaluate import evaluate_domain

    ens = _load_model(model, revision, device.value, backend.value)
    results = [evaluate_domain(ens, data, d, batch_size=batch_size) for d in domain]
    if output_format is EvalFormat.json:
        payload: Any = results[0] if len(results) == 1 else results
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    out = Console(highlight=False)
    for res in results:
        out.print(
            f"[bold]{escape(res['domain'])}[/]: accuracy [bold]{100 * res['accuracy']:.2f}%[/] "
            f"on {res['n']} images"
            + (f" ([red]{res['n_failed']} unreadable[/])" if res["n_failed"] else "")
        )
        table = Table(
            "true \\ predicted",
            *[escape(lbl) for lbl in res["labels"]],
            "accuracy",
            header_style="bold",
        )
        for label, row in zip(res["labels"], res["confusion_matrix"], strict=True):
            acc = res["per_class_accuracy"][label]
            table.add_row(
                escape(label), *map(str, row), "-" if acc is None else f"{100 * acc:.1f}%"
            )
        out.print(table)


def _fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


@app.command(
    epilog="Examples:  qtdog info  |  qtdog info owner/qtdog-pacs  |  qtdog info runs/pacs/model --json"
)
def info(
    model: Annotated[
        str | None,
        typer.Argument(help="Hub repo id or local model directory. Default: the packaged model."),
    ] = None,
    revision: RevisionOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print config.json plus file sizes as JSON.")
    ] = False,
) -> None:
    """Show what a model is: architecture, labels, members, quantization, size, provenance, metrics.

    Example: qtdog info owner/qtdog-pacs
    """
    from qtdog_sdk.ensemble import resolve_model

    resolved = resolve_model(model, revision=revision, backend="onnx")
    cfg = resolved.config
    sizes = {
        name: (resolved.path / name).stat().st_size
        for name in cfg.files()
        if (resolved.path / name).is_file()
    }
    if as_json:
        payload = {
            "source": resolved.source,
            "path": str(resolved.path),
            "config": cfg.to_dict(),
            "file_sizes": sizes,
        }
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
        return
    out = Console(highlight=False)
    pre, q = cfg.preprocessing, cfg.quantization
    out.print(f"[bold]model[/]         {escape(resolved.source)}  ({escape(str(resolved.path))})")
    out.print(f"[bold]format[/]        {cfg.format} v{cfg.format_version}")
    out.print(f"[bold]architecture[/]  {escape(cfg.architecture)}")
    out.print(f"[bold]labels[/]        ({cfg.num_classes}) {escape(', '.join(cfg.labels))}")
    out.print(
        f"[bold]input[/]         {pre.size[0]}x{pre.size[1]} RGB, {pre.resize}, {pre.interpolation}, "
        f"mean {[round(v, 4) for v in pre.mean]}, std {[round(v, 4) for v in pre.std]}"
    )
    out.print(
        f"[bold]quantization[/]  weights {q.weight_bits}-bit {q.weight_scheme} (stored {q.weight_storage}); "
        f"activations {q.activations}; {q.onnx_format}"
    )
    members = Table("member", "seed", "source-val acc", "onnx", "safetensors", header_style="bold")
    for m in cfg.members:
        members.add_row(
            escape(m.name),
            str(m.seed),
            "-" if m.val_acc is None else f"{100 * m.val_acc:.1f}%",
            "-"
            if m.onnx is None
            else _fmt_bytes(sizes[m.onnx])
            if m.onnx in sizes
            else "not downloaded",
            _fmt_bytes(sizes[m.weights]) if m.weights in sizes else "not downloaded",
        )
    out.print(members)
    if cfg.ensemble_onnx:
        size = sizes.get(cfg.ensemble_onnx)
        out.print(
            f"[bold]merged graph[/]  {cfg.ensemble_onnx} ({_fmt_bytes(size) if size else 'not downloaded'})"
        )
    out.print(
        f"[bold]size on disk[/]  {_fmt_bytes(sum(sizes.values()))} ({len(sizes)} of {len(cfg.files())} files present)"
    )
    if cfg.training:
        t = cfg.training
        keys = (
            "dataset",
            "source_domains",
            "test_domains",
            "algorithm",
            "steps",
            "bits",
            "image_size",
            "qtdog_version",
        )
        prov = ", ".join(f"{k}={t[k]}" for k in keys if t.get(k) not in (None, "", []))
        if prov:
            out.print(f"[bold]training[/]      {escape(prov)}")
        if t.get("command"):
            out.print(f"[bold]command[/]       {escape(str(t['command']))}")
    domains = cfg.metrics.get("domains") if isinstance(cfg.metrics.get("domains"), dict) else {}
    if domains:
        table = Table("domain", "role", "split", "accuracy", header_style="bold")
        for name, d in domains.items():
            if not isinstance(d, dict):
                continue
            acc = d.get("accuracy")
            table.add_row(
                escape(str(name)),
                "held out" if d.get("held_out") else "source",
                escape(str(d.get("split", "-"))),
                f"{100 * acc:.1f}%" if isinstance(acc, (int, float)) else "-",
            )
        out.print(table)


@app.command(epilog="Example:  qtdog push runs/pacs/model me/qtdog-pacs-sketch --private")
def push(
    directory: Annotated[
        Path,
        typer.Argument(
            help="Local model repository to upload.", file_okay=False, show_default=False
        ),
    ],
    repo_id: Annotated[
        str, typer.Argument(help="Hub repo id, e.g. me/qtdog-pacs.", show_default=False)
    ],
    private: Annotated[
        bool, typer.Option("--private", help="Create the Hub repository as private.")
    ] = False,
    token: Annotated[
        str | None, typer.Option(help="Hub token (default: HF_TOKEN or the saved login).")
    ] = None,
    message: Annotated[
        str, typer.Option("--message", help="Commit message.")
    ] = "Upload qtdog model",
) -> None:
    """Upload a model repository to the Hugging Face Hub (creates the repo if needed).

    Verifies every file's sha256 first and regenerates the model card.

    Example: qtdog push runs/pacs/model me/qtdog-pacs-sketch
    """
    from qtdog_sdk.ensemble import push_repository
    from qtdog_sdk.errors import ModelNotFoundError
    from qtdog_sdk.format import read_config

    if not directory.is_dir():
        raise ModelNotFoundError(f"{directory}: no such model directory")
    config = read_config(directory)
    commit = push_repository(
        directory, config, repo_id, private=private, token=token, commit_message=message
    )
    _err.print(
        f"pushed {escape(str(directory))} to {escape(repo_id)}"
        + (f" (commit {commit})" if commit else "")
    )


# ------------------------------------------------ commands of other packages
def _register_optional(name: str, module: str, attr: str, help_text: str, extra: str) -> None:
    try:
        command = getattr(__import__(module, fromlist=[attr]), attr)
    except ImportError:
        return
    except Exception as exc:  # a broken optional package must not break the core CLI
        reason = f"{type(exc).__name__}: {exc}"

        def broken() -> None:
            raise UsageError(
                f"'qtdog {name}' is unavailable ({reason}); reinstall with pip install 'qtdog[{extra}]'"
            )

        app.command(name, help=f"{help_text} (unavailable: failed to import)")(broken)
        return
    app.command(name, help=help_text)(command)


_register_optional(
    "train",
    "qtdog_train.cli",
    "train_command",
    "Train a QT-DoG ensemble and write a model repository. Example: qtdog train --data data/PACS --test-domain sketch",
    "train",
)
_register_optional(
    "demo",
    "qtdog_serve.cli",
    "demo_command",
    "Serve the interactive Gradio demo. Example: qtdog demo --model owner/qtdog-pacs",
    "demo",
)
_register_optional(
    "space",
    "qtdog_serve.cli",
    "space_command",
    "Write the demo as a self-contained Hugging Face Space folder. Example: qtdog space my-space --model runs/pacs/model",
    "demo",
)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: QTDoGError -> one red line on stderr, exit 2."""
    try:
        app(args=argv, prog_name="qtdog", standalone_mode=True)
    except QTDoGError as exc:
        _err.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(2)
    except KeyboardInterrupt:
        _err.print("[red]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
