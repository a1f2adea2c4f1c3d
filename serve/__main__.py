"""``python -m qtdog_serve [--model REPO_OR_DIR] [--host] [--port]``: the demo alone."""

from __future__ import annotations

import typer

from qtdog_serve.cli import demo_command


def main() -> None:
    typer.run(demo_command)


if __name__ == "__main__":
    main()
