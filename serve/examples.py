"""The demo's example images: where they are and how the gallery groups them.

Kept apart from ``qtdog_serve.app`` so that code which only handles the files
(``qtdog space`` copies them into a Space) does not import Gradio.
"""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
EXAMPLES_ENV = "QTDOG_EXAMPLES_DIR"


def find_examples_dir(explicit: str | Path | None = None) -> Path | None:
    """Where the example images are: argument, $QTDOG_EXAMPLES_DIR, ./examples, or the checkout's."""
    candidates = [explicit, os.environ.get(EXAMPLES_ENV), Path.cwd() / "examples"]
    candidates.append(Path(__file__).resolve().parent.parent / "examples")
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def example_groups(
    examples_dir: Path | None, unseen: list[str], seen: list[str]
) -> list[tuple[str, list[str]]]:
    """Example images grouped for the gallery: unseen domain(s), training domains, the rest.

    Files are named ``<domain>_<class>.<ext>`` (e.g. ``sketch_dog.png``).
    """
    if examples_dir is None:
        return []
    files = sorted(p for p in examples_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    def domain_of(path: Path) -> str | None:
        return next((d for d in (*unseen, *seen) if path.stem.startswith(f"{d}_")), None)

    new = [str(p) for p in files if domain_of(p) in unseen]
    old = [str(p) for p in files if domain_of(p) in seen]
    rest = [str(p) for p in files if domain_of(p) is None]
    groups = [
        (f"Never seen in training: {', '.join(unseen)}", new),
        (f"Seen in training: {', '.join(seen)}", old),
        ("Other examples" if new or old else "Examples", rest),
    ]
    return [(title, paths) for title, paths in groups if paths]
