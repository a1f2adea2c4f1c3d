"""Image loading and preprocessing, shared by inference and training.

This module needs only Pillow and NumPy (never torch), so the ONNX inference
path stays light. Training reuses :func:`resize_rgb` so that both sides resize
pixels with exactly the same code.

Example::

    >>> from qtdog_sdk.images import load_image, preprocess
    >>> from qtdog_sdk.format import Preprocessing
    >>> img = load_image("photo.jpg")                                  # doctest: +SKIP
    >>> batch = preprocess([img], Preprocessing(size=(224, 224)))      # doctest: +SKIP
    >>> batch.shape, batch.dtype                                       # doctest: +SKIP
    ((1, 3, 224, 224), dtype('float32'))
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from qtdog_sdk.errors import ImageLoadError
from qtdog_sdk.format import Preprocessing

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageInput",
    "describe_source",
    "load_image",
    "preprocess",
    "resize_rgb",
]

#: File extensions treated as images when a directory is expanded.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)

#: Anything :func:`load_image` accepts.
ImageInput = str | os.PathLike | Image.Image | np.ndarray

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

_WHITE = (255, 255, 255)


def describe_source(src: Any) -> str:
    """A short name for an input, used in messages and results."""
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    if isinstance(src, Image.Image):
        name = getattr(src, "filename", "") or ""
        return name or f"<PIL image {src.mode} {src.width}x{src.height}>"
    if isinstance(src, np.ndarray):
        return f"<array {src.dtype} {'x'.join(map(str, src.shape))}>"
    return f"<{type(src).__name__}>"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _check_pixels(width: int, height: int, name: str) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise ImageLoadError(
            f"{name}: image too large ({width}x{height} = {width * height} pixels, limit {limit}); "
            "refusing a possible decompression bomb"
        )


def _open_file(path: Path, name: str) -> Image.Image:
    if not path.exists():
        raise ImageLoadError(f"{name}: no such file")
    if path.is_dir():
        raise ImageLoadError(f"{name}: is a directory, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            _check_pixels(img.width, img.height, name)
            img.load()  # decode now: truncated and corrupt files fail here
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(
            f"{name}: refusing a possible decompression bomb ({_one_line(exc)})"
        ) from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{name}: not an image file (unknown or unsupported format)") from None
    except PermissionError:
        raise ImageLoadError(f"{name}: permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise ImageLoadError(f"{name}: corrupt or truncated image ({_one_line(exc)})") from None
    return img


def _from_array(arr: np.ndarray, name: str) -> Image.Image:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageLoadError(
            f"{name}: expected an HxW, HxWx1, HxWx3 or HxWx4 array, got shape {tuple(arr.shape)}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageLoadError(f"{name}: empty array")
    _check_pixels(arr.shape[1], arr.shape[0], name)
    if arr.dtype == np.uint8:
        data = arr
    elif arr.dtype == bool:
        data = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ImageLoadError(f"{name}: array has NaN or infinite values")
        # float images: [0, 1] by convention; larger values are taken as 0..255
        scale = 255.0 if float(arr.max(initial=0.0)) <= 1.0 else 1.0
        data = np.clip(np.rint(arr.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    elif arr.dtype == np.uint16:
        data = np.rint(arr.astype(np.float64) / 257.0).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        data = np.clip(arr, 0, 255).astype(np.uint8)
    else:
        raise ImageLoadError(f"{name}: unsupported array dtype {arr.dtype}")
    return Image.fromarray(np.ascontiguousarray(data))  # L, RGB or RGBA from the shape


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_depth_to_8bit(img: Image.Image) -> Image.Image:
    """Modes I;16*, I and F: scale the 16-bit range (or [0, 1] floats) to 8 bits."""
    arr = np.asarray(img)
    if img.mode == "F":
        arr = arr.astype(np.float64)
        if float(np.nanmax(arr, initial=0.0)) <= 1.0:
            arr = arr * 255.0
        else:
            arr = arr / 257.0 if float(np.nanmax(arr)) > 255.0 else arr
    else:
        arr = arr.astype(np.float64)
        if img.mode.startswith("I;16") or float(arr.max(initial=0)) > 255:
            arr = arr / 257.0
    out = np.clip(np.rint(np.nan_to_num(arr)), 0, 255).astype(np.uint8)
    return Image.fromarray(out)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (alpha composited on white)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        if "transparency" in img.info:
            return _composite_on_white(img)
        return img.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _composite_on_white(img)
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _high_depth_to_8bit(img).convert("RGB")
    if mode == "1":
        return img.convert("L").convert("RGB")
    if mode == "L" and "transparency" in img.info:
        return _composite_on_white(img)
    return img.convert("RGB")


def load_image(src: ImageInput) -> Image.Image:
    """Load one image as an 8-bit RGB :class:`PIL.Image.Image`.

    Accepts a file path, a Pillow image or a NumPy array (``HxW`` grayscale,
    ``HxWx3`` RGB, ``HxWx4`` RGBA; ``uint8`` or floats in ``[0, 1]``; ``uint16``
    is scaled to 8 bits). EXIF orientation is applied; transparency is
    composited on white; 16-bit images are scaled to 8 bits; CMYK, palette,
    1-bit and grayscale images are converted.

    Raises :class:`~qtdog_sdk.errors.ImageLoadError` (one line naming the input)
    for missing, unreadable, truncated, corrupt or oversized images.

    Example::

        >>> load_image("cat.png").mode                       # doctest: +SKIP
        'RGB'
    """
    name = describe_source(src)
    if isinstance(src, (str, os.PathLike)):
        img = _open_file(Path(src), name)
    elif isinstance(src, Image.Image):
        _check_pixels(src.width, src.height, name)
        img = src
        try:
            img.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageLoadError(f"{name}: corrupt or truncated image ({_one_line(exc)})") from None
    elif isinstance(src, np.ndarray):
        img = _from_array(src, name)
    else:
        raise ImageLoadError(
            f"{name}: not an image (expected a path, a PIL image or a NumPy array)"
        )
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        if img.getexif().get(0x0112, 1) != 1:  # EXIF orientation tag says "rotate/flip me"
            img = ImageOps.exif_transpose(img) or img
        return to_rgb(img)
    except ImageLoadError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise ImageLoadError(f"{name}: cannot convert image to RGB ({_one_line(exc)})") from None


def resize_rgb(
    img: Image.Image, size: tuple[int, int], interpolation: str = "bilinear"
) -> Image.Image:
    """Resize an image to exactly ``size`` = (height, width) with Pillow.

    The single resize path of qtdog: inference (:func:`preprocess`) and the
    training data pipeline both call it, so train and test pixels match.
    Pillow's resize antialiases when shrinking, like torchvision on PIL input.
    """
    try:
        resample = _RESAMPLE[interpolation]
    except KeyError:
        raise ValueError(
            f"unknown interpolation {interpolation!r} (expected one of {sorted(_RESAMPLE)})"
        ) from None
    height, width = int(size[0]), int(size[1])
    if img.size == (width, height):
        return img
    return img.resize((width, height), resample=resample)


def _shorter_center_crop(
    img: Image.Image, size: tuple[int, int], interpolation: str
) -> Image.Image:
    height, width = size
    scale = max(height / img.height, width / img.width)
    new_h = max(height, round(img.height * scale))
    new_w = max(width, round(img.width * scale))
    resized = resize_rgb(img, (new_h, new_w), interpolation)
    top = (new_h - height) // 2
    left = (new_w - width) // 2
    return resized.crop((left, top, left + width, top + height))


def preprocess(images: Sequence[Image.Image], pre: Preprocessing) -> np.ndarray:
    """Turn RGB images into the model input: float32 ``[N, 3, H, W]``.

    Resizes (``pre.resize``: ``"squash"`` to exactly ``pre.size`` or
    ``"shorter_center_crop"``), scales to ``[0, 1]`` and normalizes with
    ``(x - mean) / std`` per channel.
    """
    height, width = pre.size
    out = np.empty((len(images), 3, height, width), dtype=np.float32)
    mean = np.asarray(pre.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(pre.std, dtype=np.float32).reshape(3, 1, 1)
    for i, img in enumerate(images):
        if img.mode != "RGB":
            img = to_rgb(img)
        if pre.resize == "squash":
            img = resize_rgb(img, (height, width), pre.interpolation)
        elif pre.resize == "shorter_center_crop":
            img = _shorter_center_crop(img, (height, width), pre.interpolation)
        else:
            raise ValueError(f"unknown resize mode {pre.resize!r}")
        arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        out[i] = (arr - mean) / std
    return out
