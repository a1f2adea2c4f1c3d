"""Rich progress bars, with ETA, and the summary table of ``qtdog train``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}"


class RichReporter:
    """Receives the pipeline's events and draws them on stderr."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.decode_task: Any = None
        self.member_task: Any = None

    def __call__(self, event: str, payload: dict[str, Any]) -> None:
        if event == "data":
            self.decode_task = self.progress.add_task(
                "decode images", total=payload["total"], status=""
            )
        elif event == "decoded" and self.decode_task is not None:
            self.progress.advance(self.decode_task, payload["n"])
        elif event == "switch":
            self.console.print(
                f"LSQ on at step {payload['step']}: source val {_pct(payload['before']['val_acc'])} -> "
                f"{_pct(payload['after']['val_acc'])}, test {_pct(payload['before']['test_acc'])} -> "
                f"{_pct(payload['after']['test_acc'])}",
                highlight=False,
            )
        elif event == "warning":
            self.console.print(f"[yellow]warning:[/] {payload['message']}")
        elif event == "member_start":
            self.member_task = self.progress.add_task(
                f"member {payload['member'] + 1}/{payload['members']}",
                total=payload["steps"],
                status="",
            )
        elif event == "step" and self.member_task is not None:
            status = f"loss {payload['loss']:.3f}"
            if "val_acc" in payload:
                status += (
                    f" | val {_pct(payload['val_acc'])} | test {_pct(payload.get('test_acc'))}"
                )
            self.progress.update(self.member_task, completed=payload["step"], status=status)
            if "val_acc" in payload and not self.console.is_terminal:
                self.console.print(f"step {payload['step']}: {status}", highlight=False)
        elif event == "member_done" and self.member_task is not None:
            self.progress.update(
                self.member_task, status=f"best step {payload['best_step']}, converting done"
            )

    def close(self) -> None:
        self.progress.stop()

    def print_summary(self, summary: dict[str, Any]) -> None:
        table = Table(title="qtdog train: accuracy (%) at the best source-validation step")
        for column in (
            "model",
            "best step",
            "source val",
            "test (held out)",
            "torch int8",
            "ONNX int8",
            "int8 convs",
            "agree torch/ONNX",
        ):
            table.add_column(column, justify="right")
        for r in summary["members"]:
            converted = "onnx_int8" in r
            table.add_row(
                f"member {r['member']} (seed {r['seed']})",
                str(r["best_step"]),
                _pct(r["selected"]["val_acc"]),
                _pct(r["fake_quant"]["test_acc"] if converted else r["selected"].get("test_acc")),
                _pct(r["torch_int8"]["test_acc"]) if converted else "-",
                _pct(r["onnx_int8"]["test_acc"]) if converted else "-",
                "{}/{}".format(*r["onnx_int8_convs"]) if converted else "-",
                _pct(r["agreement_torch_int8_vs_onnx"]) if converted else "-",
            )
        if "ensemble" in summary:
            e = summary["ensemble"]
            table.add_row(
                "[bold]ensemble (ONNX int8)",
                "",
                _pct(e["val_acc"]),
                "",
                "",
                _pct(e["test_acc"]),
                "",
                "",
            )
        self.console.print(table)
        if "repository" in summary:
            self.console.print(
                f"model repository: [bold]{summary['repository']}[/]  ({summary['seconds']:.0f} s)"
            )
