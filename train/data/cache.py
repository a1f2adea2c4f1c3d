"""Decode every image once, at the training resolution, into a uint8 array.

Training reads pixels from this array (in memory, or memory-mapped from the
on-disk cache) instead of decoding JPEGs at every step. Decoding uses the
SDK's own loading and resize path, so training and inference see the same
pixels. Corrupt images are reported by path and skipped, or fail the run
with ``strict=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qtdog_sdk.errors import DatasetError, ImageLoadError
from qtdog_sdk.images import load_image, resize_rgb


@dataclass
class DecodedImages:
    """Pixels ``[N, H, W, 3]`` uint8 and which inputs decoded (``ok[i]``)."""

    pixels: np.ndarray
    ok: np.ndarray
    errors: list[str]


def default_cache_dir() -> Path:
    base = os.environ.get("QTDOG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "qtdog"
    )
    return Path(base) / "decoded"


def _cache_key(files: Sequence[Path], size: tuple[int, int], interpolation: str) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([list(size), interpolation, 1]).encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def _decode_one(path: Path, size: tuple[int, int], interpolation: str) -> np.ndarray:
    image = resize_rgb(load_image(path), size, interpolation)
    return np.asarray(image, dtype=np.uint8)


def decode_images(
    files: Sequence[Path],
    size: tuple[int, int],
    interpolation: str = "bilinear",
    strict: bool = False,
    cache_dir: Path | None = None,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> DecodedImages:
    """Decode and resize ``files`` to ``size`` (height, width), using the on-disk cache.

    ``cache_dir=None`` uses :func:`default_cache_dir`; pass a path to relocate it.
    """
    cache_dir = cache_dir or default_cache_dir()
    key = _cache_key(files, size, interpolation)
    pixels_path = cache_dir / f"{key}.npy"
    meta_path = cache_dir / f"{key}.json"
    if pixels_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if on_progress:
            on_progress(len(files))
        errors = meta["errors"]
        if strict and errors:
            raise DatasetError(errors[0])
        return DecodedImages(
            np.load(pixels_path, mmap_mode="r"), np.asarray(meta["ok"], dtype=bool), errors
        )

    height, width = size
    pixels = np.zeros((len(files), height, width, 3), dtype=np.uint8)
    ok = np.zeros(len(files), dtype=bool)
    errors: list[str] = []

    def work(index: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            return index, _decode_one(files[index], size, interpolation), None
        except ImageLoadError as exc:
            return index, None, str(exc)

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for index, array, error in pool.map(work, range(len(files)), chunksize=16):
            if array is None:
                if strict:
                    raise DatasetError(f"{error} (--strict)")
                errors.append(str(error))
            else:
                pixels[index] = array
                ok[index] = True
            if on_progress:
                on_progress(1)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Several processes may build the same entry at once (parallel sweeps): each writes
    # its own temporary files and renames them into place; the metadata goes last because
    # a reader takes the entry only when both files exist.
    unique = uuid.uuid4().hex
    tmp_pixels = cache_dir / f"{key}.{unique}.tmp.npy"
    np.save(tmp_pixels, pixels)
    os.replace(tmp_pixels, pixels_path)
    tmp_meta = cache_dir / f"{key}.{unique}.tmp.json"
    tmp_meta.write_text(json.dumps({"ok": ok.tolist(), "errors": errors}))
    os.replace(tmp_meta, meta_path)
    return DecodedImages(pixels, ok, errors)
