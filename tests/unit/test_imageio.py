import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from facegate.data.imageio import SERVE_FORMATS, ImageLimits, PixelBudget, decode_image, read_image
from facegate.errors import ImageError

pytestmark = pytest.mark.unit


def _encode(arr, fmt="PNG", **kw):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def huge_png(width: int, height: int) -> bytes:
    """A valid greyscale PNG of the given size, streamed so it never needs width*height bytes of memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    parts = [comp.compress(row) for _ in range(height)]
    idat = b"".join(parts) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_rgb_roundtrip():
    arr = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    out = decode_image(_encode(arr))
    assert out.dtype == np.uint8 and out.shape == (40, 50, 3)
    np.testing.assert_array_equal(out, arr)


def test_modes_normalised_to_rgb():
    grey = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16
    out16 = decode_image(_encode(grey))  # 16-bit greyscale PNG
    assert out16.shape == (64, 64, 3) and out16.dtype == np.uint8
    assert out16.max() > 200 and out16.min() < 10
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 255  # red but fully transparent: must composite to white, not leak red
    assert (decode_image(_encode(rgba)) == 255).all()
    pal = Image.fromarray(np.zeros((20, 20, 3), np.uint8)).convert("P")
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    assert decode_image(buf.getvalue()).shape == (20, 20, 3)


def test_exif_orientation_applied():
    arr = np.zeros((30, 60, 3), np.uint8)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    assert decode_image(buf.getvalue()).shape == (60, 30, 3)


def test_truncated_jpeg(tmp_path):
    data = _encode(np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8), "JPEG")
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cut.jpg: corrupt or truncated"):
        read_image(p)


def test_zero_byte_and_text_file(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.jpg: empty") as e:
        read_image(empty)
    assert e.value.code == "empty"
    text = tmp_path / "notes.jpg"
    text.write_text("hello, not an image")
    with pytest.raises(ImageError, match="not a recognised image format") as e:
        read_image(text)
    assert e.value.code == "not_an_image"


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found") as e:
        read_image(tmp_path / "nope.jpg")
    assert e.value.code == "missing_image"


def test_20000_square_png_refused_before_decoding(tmp_path):
    p = tmp_path / "huge.png"
    p.write_bytes(huge_png(20000, 20000))
    t0 = time.perf_counter()
    with pytest.raises(ImageError, match="huge.png: .*pixel") as e:
        read_image(p)
    assert e.value.code == "too_many_pixels"
    # Decoding 400 MP would take seconds and 1.2 GB; a header check takes milliseconds. Generous bound, not a bench.
    assert time.perf_counter() - t0 < 2.0


def test_byte_limit_checked_before_reading(tmp_path):
    p = tmp_path / "big.jpg"
    p.write_bytes(b"\xff" * 2048)
    with pytest.raises(ImageError) as e:
        read_image(p, limits=ImageLimits(max_bytes=1024))
    assert e.value.code == "too_large"


def test_unaccepted_format_and_tiny_image():
    with pytest.raises(ImageError) as e:
        decode_image(_encode(np.zeros((32, 32, 3), np.uint8), "ICO"))
    assert e.value.code == "unsupported_format"
    with pytest.raises(ImageError) as e:
        decode_image(_encode(np.zeros((4, 4, 3), np.uint8)))
    assert e.value.code == "too_small"


def test_pixel_limit_below_pillows_own_names_the_size():
    with pytest.raises(ImageError, match="7000x7000 = 49000000 pixels") as e:
        decode_image(huge_png(7000, 7000))
    assert e.value.code == "too_many_pixels"


def _gradient(h: int = 48, w: int = 40) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 5 % 256, y * 5 % 256, (x + y) * 3 % 256], axis=2).astype(np.uint8)


def _research_format(fmt: str) -> tuple[bytes, bool]:
    """``(encoded, lossless)`` for one of the formats research sets ship."""
    arr = _gradient()
    if fmt == "GIF":  # two frames: only the first may come out
        buf = io.BytesIO()
        first, second = Image.fromarray(arr), Image.fromarray(255 - arr)
        first.save(buf, format="GIF", save_all=True, append_images=[second])
        return buf.getvalue(), False
    if fmt == "PGM":
        return _encode(arr[:, :, 0], "PPM"), True
    if fmt == "WEBP":
        return _encode(arr, "WEBP", lossless=True), True
    return _encode(arr, fmt), True


@pytest.mark.parametrize("fmt", ["GIF", "PGM", "PPM", "TIFF", "BMP", "WEBP"])
def test_ingest_accepts_research_formats_and_the_kiosk_refuses_them(fmt):
    data, lossless = _research_format(fmt)
    out = decode_image(data)
    assert out.shape == (48, 40, 3) and out.dtype == np.uint8
    arr = _gradient()
    if fmt == "PGM":
        assert (out == arr[:, :, :1]).all()
    elif lossless:
        assert (out == arr).all()
    else:  # GIF: palette-quantised, and the first frame, not the inverted second one
        assert np.abs(out.astype(int) - arr).mean() < np.abs(out.astype(int) - (255 - arr)).mean()
    with pytest.raises(ImageError) as e:
        decode_image(data, limits=ImageLimits(formats=SERVE_FORMATS))
    assert e.value.code == "unsupported_format"
    assert "JPEG" in e.value.message


def test_serve_limits_keep_jpeg_and_png():
    strict = ImageLimits(formats=SERVE_FORMATS)
    for fmt in ("JPEG", "PNG"):
        assert decode_image(_encode(_gradient(), fmt), limits=strict).shape == (48, 40, 3)


def _noise_jpeg(w: int, h: int, quality: int = 90) -> bytes:
    rng = np.random.default_rng(0)
    small = Image.fromarray((rng.random((h // 10, w // 10, 3)) * 255).astype(np.uint8)).resize((w, h))
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def test_truncated_jpeg_is_refused_not_grey_filled():
    """A JPEG cut short and closed with an end-of-image marker decodes "fine" in libjpeg, with grey fill."""
    whole = _noise_jpeg(2000, 2500)
    tiny = whole[:20_000] + b"\xff\xd9"  # far too small for 5 megapixels
    half = whole[: len(whole) // 2] + b"\xff\xd9"  # plausible size, grey bottom half
    for data in (tiny, half):
        with pytest.raises(ImageError, match="truncated") as e:
            decode_image(data)
        assert e.value.code == "bad_image"
    assert decode_image(whole).shape == (2500, 2000, 3)
    grey = Image.new("RGB", (64, 48), (128, 128, 128))  # a uniform card is not mistaken for fill
    buf = io.BytesIO()
    grey.save(buf, format="JPEG")
    assert decode_image(buf.getvalue()).shape == (48, 64, 3)


def test_large_jpeg_decoded_downscaled_and_pixel_budget():
    big = _noise_jpeg(4000, 3000)
    out = decode_image(big, limits=ImageLimits(max_side=1000))
    assert max(out.shape[:2]) <= 1000 and out.shape[1] > out.shape[0]
    budget = PixelBudget(2_000_000)
    decode_image(big, limits=ImageLimits(max_side=1000), budget=budget)  # ~0.75 MP after draft mode
    assert budget.remaining < 2_000_000
    decode_image(big, limits=ImageLimits(max_side=1000), budget=budget)
    with pytest.raises(ImageError) as e:  # the third would overspend: refused before decoding
        decode_image(big, limits=ImageLimits(max_side=1000), budget=budget)
    assert e.value.code == "too_many_pixels"
    png = _encode(_gradient(1200, 1600))  # not a JPEG: decoded whole, then downscaled
    assert max(decode_image(png, limits=ImageLimits(max_side=800)).shape[:2]) == 800
