"""A tiny multi-domain image dataset, generated: shapes (classes) drawn in styles (domains).

Used by the tests and smoke runs, so the whole pipeline can be exercised in
seconds without any downloaded data. Written in DomainBed layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")
STYLES = {
    "photo": {"background": (200, 220, 240), "fill": (200, 40, 40), "noise": 12},
    "cartoon": {"background": (255, 255, 255), "fill": (20, 120, 220), "noise": 0},
    "sketch": {"background": (255, 255, 255), "fill": None, "noise": 4},
}


def _draw(shape: str, style: dict, size: int, rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGB", (size, size), style["background"])
    draw = ImageDraw.Draw(image)
    r = rng.uniform(0.25, 0.4) * size
    cx, cy = rng.uniform(r, size - r, size=2)
    box = (cx - r, cy - r, cx + r, cy + r)
    kwargs = {"fill": style["fill"], "outline": (0, 0, 0), "width": 2}
    if shape == "circle":
        draw.ellipse(box, **kwargs)
    elif shape == "square":
        draw.rectangle(box, **kwargs)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], **kwargs)
    pixels = np.asarray(image, dtype=np.int16)
    if style["noise"]:
        pixels = pixels + rng.normal(0, style["noise"], pixels.shape).astype(np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_shapes_dataset(
    root: str | Path, per_class: int = 12, size: int = 48, seed: int = 0
) -> Path:
    """Write ``root/<domain>/<class>/<i>.png`` for 3 domains x 3 classes; returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for domain, style in STYLES.items():
        for shape in CLASSES:
            folder = root / domain / shape
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                _draw(shape, style, size, rng).save(folder / f"{i:03d}.png")
    return root
