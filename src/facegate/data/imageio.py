"""The one decode path for untrusted images, used by ingest, evaluate, verify and serve alike.

Size and pixel-count limits are checked *before* any pixel is decoded (Pillow reads only the header in
``Image.open``), so a decompression bomb or a 20000x20000 PNG is refused cheaply. EXIF orientation is applied, and
every mode (grayscale, palette, alpha, 16-bit) comes out as contiguous RGB ``uint8`` of shape ``(H, W, 3)``.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facegate.errors import ImageError

__all__ = ["DEFAULT_LIMITS", "ImageLimits", "decode_image", "encode_jpeg", "read_image"]


@dataclass(frozen=True)
class ImageLimits:
    """Limits applied before decoding.

    Attributes:
        max_bytes: Largest encoded size accepted.
        max_pixels: Largest width*height accepted (checked from the header, before decoding).
        min_side: Smallest width or height accepted; smaller images cannot hold a usable face.
    """

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 16


DEFAULT_LIMITS = ImageLimits()

# Formats a camera, a phone or a dataset plausibly produces. Anything else (PSD, EPS, ICO, ...) is refused: fewer
# decoders reachable from untrusted input means less attack surface.
_ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "BMP", "WEBP", "TIFF", "PPM", "MPO"})


def read_image(path: str | os.PathLike[str], *, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Read and decode an image file safely.

    Args:
        path: The image file.
        limits: Size limits checked before decoding.

    Returns:
        RGB ``uint8`` array of shape ``(H, W, 3)``.

    Raises:
        ImageError: If the file is missing, too large, not an image, corrupt or truncated. The message names the file.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise ImageError(f"{p}: file not found", code="missing_image") from None
    except OSError as exc:
        raise ImageError(f"{p}: cannot stat file ({exc.strerror})") from None
    if size > limits.max_bytes:
        raise ImageError(f"{p}: {size} bytes exceeds the {limits.max_bytes}-byte limit", code="too_large")
    try:
        # Bounded read: st_size lies for FIFOs and devices (/dev/zero would otherwise be read forever).
        with p.open("rb") as fh:
            data = fh.read(limits.max_bytes + 1)
    except OSError as exc:
        raise ImageError(f"{p}: cannot read file ({exc.strerror})") from None
    return decode_image(data, limits=limits, name=str(p))


def decode_image(data: bytes, *, limits: ImageLimits = DEFAULT_LIMITS, name: str = "<image>") -> np.ndarray:
    """Decode encoded image bytes into RGB ``uint8``.

    Args:
        data: The encoded bytes (JPEG, PNG, BMP, WebP, TIFF, PPM).
        limits: Size limits checked before decoding.
        name: How to call the image in error messages (a path or an upload name; never its content).

    Returns:
        RGB ``uint8`` array of shape ``(H, W, 3)``, C-contiguous.

    Raises:
        ImageError: With ``code`` one of ``empty``, ``too_large``, ``not_an_image``, ``unsupported_format``,
            ``too_many_pixels``, ``too_small`` or ``bad_image`` (corrupt or truncated).
    """
    if len(data) == 0:
        raise ImageError(f"{name}: empty file (0 bytes)", code="empty")
    if len(data) > limits.max_bytes:
        raise ImageError(f"{name}: {len(data)} bytes exceeds the {limits.max_bytes}-byte limit", code="too_large")
    with warnings.catch_warnings():
        # Our own pixel limit is stricter than Pillow's bomb warning; keep the warning out of user output.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageError(f"{name}: not a recognised image format", code="not_an_image") from None
        except Image.DecompressionBombError as exc:
            # Pillow refuses headers over twice its own limit before we see the size; keep its figures.
            raise ImageError(
                f"{name}: exceeds the {limits.max_pixels}-pixel limit ({exc})", code="too_many_pixels"
            ) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageError(f"{name}: unreadable image header ({type(exc).__name__})") from None
        with img:
            fmt = img.format or "?"
            if fmt not in _ALLOWED_FORMATS:
                raise ImageError(f"{name}: image format {fmt} is not accepted", code="unsupported_format")
            w, h = img.size
            if w * h > limits.max_pixels:
                raise ImageError(
                    f"{name}: {w}x{h} = {w * h} pixels exceeds the {limits.max_pixels}-pixel limit",
                    code="too_many_pixels",
                )
            if min(w, h) < limits.min_side:
                raise ImageError(f"{name}: {w}x{h} is smaller than {limits.min_side} pixels", code="too_small")
            try:
                img.load()
                oriented = ImageOps.exif_transpose(img)
                return _to_rgb_uint8(oriented)
            except (Image.DecompressionBombError, OSError, ValueError, SyntaxError, EOFError) as exc:
                # Pillow says "image file is truncated" for a cut JPEG; keep its words, they help the user.
                raise ImageError(f"{name}: corrupt or truncated image ({exc})") from None


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Normalise any Pillow mode to contiguous RGB uint8."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA"):
        # Composite on white: transparent pixels carry arbitrary colour that would otherwise leak into the face.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    rgb = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    """Encode an RGB uint8 image as JPEG bytes.

    Args:
        rgb: ``(H, W, 3)`` uint8 array in RGB order.
        quality: JPEG quality 1-100.

    Returns:
        The JPEG bytes.
    """
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
