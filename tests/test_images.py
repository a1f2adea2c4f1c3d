"""Image loading and preprocessing (qtdog_sdk.images): every kind of input, good and bad."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qtdog_sdk.errors import ImageLoadError
from qtdog_sdk.format import Preprocessing
from qtdog_sdk.images import load_image, preprocess, resize_rgb

# ----------------------------------------------------------------- helpers


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def write_png_bomb(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A few-hundred-byte PNG whose header claims 10^10 pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    row = b"\x00" + b"\x00" * 64
    data = (
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(row))
    )
    path.write_bytes(data + _png_chunk(b"IEND", b""))
    return path


def assert_one_line_naming(exc: pytest.ExceptionInfo, path: Path | str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message


# ------------------------------------------------------------- bad inputs


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageLoadError, match="no such file") as exc:
        load_image(path)
    assert_one_line_naming(exc, path)


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageLoadError, match="not an image") as exc:
        load_image(path)
    assert_one_line_naming(exc, path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError) as exc:
        load_image(path)
    assert_one_line_naming(exc, path)


def test_truncated_jpeg(tmp_path: Path) -> None:
    full = tmp_path / "full.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full, quality=95)
    data = full.read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=r"truncated|corrupt") as exc:
        load_image(path)
    assert_one_line_naming(exc, path)


def test_corrupt_jpeg_body(tmp_path: Path) -> None:
    full = tmp_path / "full.jpg"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(full)
    data = bytearray(full.read_bytes())
    path = tmp_path / "corrupt.jpg"
    path.write_bytes(bytes(data[:20]) + b"\xff" * 40 + bytes(data[60:90]))
    with pytest.raises(ImageLoadError) as exc:
        load_image(path)
    assert_one_line_naming(exc, path)


def test_decompression_bomb_file(tmp_path: Path) -> None:
    path = write_png_bomb(tmp_path / "bomb.png")
    assert path.stat().st_size < 1000
    with pytest.raises(ImageLoadError, match="decompression bomb") as exc:
        load_image(path)
    assert_one_line_naming(exc, path)


def test_pixel_limit_applies_to_moderate_sizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between MAX_IMAGE_PIXELS and 2x, Pillow only warns; qtdog refuses."""
    path = tmp_path / "big.png"
    Image.new("RGB", (60, 60)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60 * 60 - 1)
    with pytest.raises(ImageLoadError, match=r"too large|bomb"):
        load_image(path)
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(np.zeros((60, 60, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((2, 3, 4, 4), np.uint8),
        np.zeros((0, 5, 3), np.uint8),
    ],
    ids=["two-channels", "4d", "empty"],
)
def test_bad_arrays(array: np.ndarray) -> None:
    with pytest.raises(ImageLoadError):
        load_image(array)


def test_nan_array() -> None:
    arr = np.full((4, 4, 3), np.nan, dtype=np.float32)
    with pytest.raises(ImageLoadError, match="NaN"):
        load_image(arr)


def test_unsupported_object() -> None:
    with pytest.raises(ImageLoadError, match="not an image"):
        load_image(12345)  # type: ignore[arg-type]


# ------------------------------------------------------------ good inputs


def test_sixteen_bit_png_scaled_to_8_bit(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    values = np.array([[0, 257 * 100], [257 * 200, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    img = load_image(path)
    assert img.mode == "RGB"
    arr = np.asarray(img)
    np.testing.assert_array_equal(arr[..., 0], [[0, 100], [200, 255]])
    assert (arr[..., 0] == arr[..., 2]).all()


def test_int32_image_mode_i() -> None:
    img = Image.fromarray(np.array([[0, 1000], [40000, 65535]], dtype=np.int32))
    assert img.mode == "I"
    arr = np.asarray(load_image(img))
    assert arr.dtype == np.uint8 and arr[1, 1, 0] == 255 and arr[0, 1, 0] == round(1000 / 257)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=100)  # pure red in CMYK
    img = load_image(path)
    assert img.mode == "RGB"
    r, g, b = np.asarray(img)[8, 8].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_palette_png_with_transparency_is_composited_on_white(tmp_path: Path) -> None:
    path = tmp_path / "pal.png"
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    img.paste(1, (0, 0, 4, 8))  # left half red, right half index 0 (black, transparent)
    img.save(path, transparency=0)
    out = np.asarray(load_image(path))
    assert out.shape == (8, 8, 3)
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(out[0, 7], [255, 255, 255])


def test_palette_png_without_transparency(tmp_path: Path) -> None:
    path = tmp_path / "pal.png"
    Image.new("RGB", (8, 8), (0, 0, 255)).convert("P").save(path)
    np.testing.assert_array_equal(np.asarray(load_image(path))[0, 0], [0, 0, 255])


def test_rgba_composited_on_white(tmp_path: Path) -> None:
    path = tmp_path / "rgba.png"
    arr = np.zeros((4, 4, 4), dtype=np.uint8)
    arr[..., 0] = 255  # red
    arr[:, :2, 3] = 255  # left half opaque
    arr[:, 2:, 3] = 0  # right half transparent
    Image.fromarray(arr).save(path)
    out = np.asarray(load_image(path))
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(out[0, 3], [255, 255, 255])


def test_la_mode_composited(tmp_path: Path) -> None:
    img = Image.new("LA", (4, 4), (0, 0))  # black, fully transparent
    np.testing.assert_array_equal(np.asarray(load_image(img))[0, 0], [255, 255, 255])


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grayscale_and_bilevel(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"gray-{mode}.png"
    Image.new(mode, (5, 3), 255 if mode == "L" else 1).save(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (5, 3)
    np.testing.assert_array_equal(np.asarray(img)[0, 0], [255, 255, 255])


def test_exif_rotated_jpeg_is_upright_and_preprocessed_upright(tmp_path: Path) -> None:
    arr = np.zeros((20, 40, 3), dtype=np.uint8)  # landscape: left red, right blue
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: display rotated 90 degrees clockwise
    Image.fromarray(arr).save(path, exif=exif.tobytes(), quality=100)

    raw = np.asarray(Image.open(path).convert("RGB"))
    assert raw.shape == (20, 40, 3)  # stored landscape
    img = load_image(path)
    assert img.size == (20, 40)  # (width, height): shown portrait
    expected = np.rot90(raw, k=-1)  # what a viewer shows
    np.testing.assert_array_equal(np.asarray(img), expected)

    pre = Preprocessing(size=(40, 20), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    batch = preprocess([img], pre)
    want = preprocess([Image.fromarray(np.ascontiguousarray(expected))], pre)
    np.testing.assert_array_equal(batch, want)
    # top of the upright image is red (the stored left half), bottom is blue
    assert batch[0, 0, 2, 10] > 0.9 and batch[0, 2, 2, 10] < 0.1
    assert batch[0, 2, 37, 10] > 0.9 and batch[0, 0, 37, 10] < 0.1


def test_animated_gif_uses_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (6, 6), c) for c in [(255, 0, 0), (0, 255, 0)]]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert tuple(np.asarray(load_image(path))[0, 0]) == (255, 0, 0)


def test_numpy_inputs() -> None:
    u8 = np.full((3, 4, 3), 128, dtype=np.uint8)
    assert np.asarray(load_image(u8))[0, 0].tolist() == [128, 128, 128]
    f = np.full((3, 4, 3), 0.5, dtype=np.float32)
    assert np.asarray(load_image(f))[0, 0].tolist() == [128, 128, 128]
    gray = np.zeros((3, 4), dtype=np.uint8)
    assert load_image(gray).mode == "RGB" and load_image(gray).size == (4, 3)
    rgba = np.zeros((3, 4, 4), dtype=np.uint8)
    assert np.asarray(load_image(rgba))[0, 0].tolist() == [255, 255, 255]
    assert load_image(np.zeros((3, 4, 1), dtype=np.uint8)).mode == "RGB"
    assert np.asarray(load_image(np.full((2, 2), 65535, np.uint16)))[0, 0, 0] == 255


def test_pil_rgb_input_returned_as_is() -> None:
    img = Image.new("RGB", (3, 3), (1, 2, 3))
    assert load_image(img) is img


# ------------------------------------------------------------- preprocess


def test_preprocess_squash_and_normalize() -> None:
    img = Image.new("RGB", (50, 30), (255, 0, 51))
    pre = Preprocessing(size=(16, 24), mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5))
    out = preprocess([img, img], pre)
    assert out.shape == (2, 3, 16, 24) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, 5, 5], [1.0, -2.0, (0.2 - 0.5) / 0.5], atol=1e-6)


def test_preprocess_shorter_center_crop_keeps_the_centre() -> None:
    arr = np.zeros((40, 80, 3), dtype=np.uint8)
    arr[:, :16] = 255  # left edge white, cut off by the centre crop (which keeps columns 20..60)
    arr[:, 64:] = 255  # right edge white
    img = Image.fromarray(arr)
    crop = Preprocessing(size=(20, 20), resize="shorter_center_crop", mean=(0, 0, 0), std=(1, 1, 1))
    squash = Preprocessing(size=(20, 20), resize="squash", mean=(0, 0, 0), std=(1, 1, 1))
    assert preprocess([img], crop).max() == 0.0
    assert preprocess([img], squash).max() == 1.0


def test_preprocess_center_crop_non_square_target() -> None:
    img = Image.new("RGB", (30, 90), (0, 255, 0))  # tall
    pre = Preprocessing(size=(20, 40), resize="shorter_center_crop", mean=(0, 0, 0), std=(1, 1, 1))
    assert preprocess([img], pre).shape == (1, 3, 20, 40)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos"])
def test_resize_rgb_size_is_height_width(interpolation: str) -> None:
    img = Image.new("RGB", (100, 50))
    out = resize_rgb(img, (10, 30), interpolation)
    assert out.size == (30, 10)  # PIL size is (width, height)


def test_resize_rgb_matches_pil_and_rejects_unknown() -> None:
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8))
    ours = np.asarray(resize_rgb(img, (16, 16), "bicubic"))
    ref = np.asarray(img.resize((16, 16), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(ours, ref)
    with pytest.raises(ValueError, match="interpolation"):
        resize_rgb(img, (8, 8), "area")


def test_preprocess_converts_non_rgb() -> None:
    pre = Preprocessing(size=(4, 4), mean=(0, 0, 0), std=(1, 1, 1))
    out = preprocess([Image.new("L", (8, 8), 255)], pre)
    assert out.shape == (1, 3, 4, 4) and float(out.min()) == 1.0


def test_images_module_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, qtdog_sdk.images; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
