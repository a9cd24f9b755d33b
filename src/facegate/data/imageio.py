"""The one decode path for untrusted images, used by ingest, evaluate, verify and serve alike.

Size and pixel-count limits are checked *before* any pixel is decoded (Pillow reads only the header in
``Image.open``), so a decompression bomb or a 20000x20000 PNG is refused cheaply. EXIF orientation is applied, and
every mode (grayscale, palette, alpha, 16-bit) comes out as contiguous RGB ``uint8`` of shape ``(H, W, 3)``.

Formats: ingest and evaluate accept what research sets ship (:data:`INGEST_FORMATS`: JPEG, PNG, GIF's first frame,
PGM/PPM, TIFF, BMP, WebP); the serving endpoints take only :data:`SERVE_FORMATS` (JPEG, PNG), so fewer decoders are
reachable from a kiosk. A JPEG larger than ``max_side`` is decoded at a reduced scale (libjpeg's DCT scaling, "draft
mode") and anything still larger is downscaled; a JPEG whose data cannot hold its declared size, or that ends in the
grey fill libjpeg substitutes for missing data, is refused as truncated.
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

__all__ = [
    "DEFAULT_LIMITS",
    "INGEST_FORMATS",
    "SERVE_FORMATS",
    "ImageLimits",
    "PixelBudget",
    "decode_image",
    "decoded_pixels",
    "encode_jpeg",
    "read_image",
]

#: What ingest and evaluate decode: formats cameras, phones and research sets ship (GIF: its first frame; PPM is
#: Pillow's name for PGM/PPM/PBM). Anything else (PSD, EPS, ICO, ...) is refused as ``unsupported_format``.
INGEST_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "PPM", "TIFF", "BMP", "WEBP"})
#: What the serving endpoints decode: a kiosk camera sends JPEG or PNG (MPO is a phone's multi-picture JPEG).
SERVE_FORMATS = frozenset({"JPEG", "MPO", "PNG"})


@dataclass(frozen=True)
class ImageLimits:
    """Limits applied before decoding.

    Attributes:
        max_bytes: Largest encoded size accepted.
        max_pixels: Largest width*height accepted (checked from the header, before decoding).
        min_side: Smallest width or height accepted; smaller images cannot hold a usable face.
        formats: Pillow format names accepted (others: ``unsupported_format``).
        max_side: When set, larger images come out downscaled to at most this side (JPEGs decoded at a reduced
            scale, which also cuts decode time and memory); ``None`` keeps full resolution (evaluation).
    """

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 16
    formats: frozenset[str] = INGEST_FORMATS
    max_side: int | None = None


DEFAULT_LIMITS = ImageLimits()


class PixelBudget:
    """Decoded pixels one request may still spend; :func:`decode_image` charges it before decoding.

    Args:
        pixels: The budget (decoded width*height summed over a request's images).
    """

    def __init__(self, pixels: int) -> None:
        self.total = pixels
        self.remaining = pixels

    def charge(self, pixels: int, name: str) -> None:
        """Spend ``pixels``.

        Raises:
            ImageError: ``too_many_pixels`` when the request's budget would be exceeded.
        """
        if pixels > self.remaining:
            raise ImageError(
                f"{name}: decoding it would exceed this request's {self.total}-pixel budget", code="too_many_pixels"
            )
        self.remaining -= pixels


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


def decode_image(
    data: bytes, *, limits: ImageLimits = DEFAULT_LIMITS, name: str = "<image>", budget: PixelBudget | None = None
) -> np.ndarray:
    """Decode encoded image bytes into RGB ``uint8``.

    Args:
        data: The encoded bytes (one of ``limits.formats``).
        limits: Size limits checked before decoding.
        name: How to call the image in error messages (a path or an upload name; never its content).
        budget: The request's decoded-pixel budget, charged with this image's decoded size before decoding.

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
            if fmt not in limits.formats:
                accepted = ", ".join(sorted(limits.formats))
                raise ImageError(
                    f"{name}: image format {fmt} is not accepted here (accepted: {accepted})", code="unsupported_format"
                )
            w, h = img.size
            if w * h > limits.max_pixels:
                raise ImageError(
                    f"{name}: {w}x{h} = {w * h} pixels exceeds the {limits.max_pixels}-pixel limit",
                    code="too_many_pixels",
                )
            if min(w, h) < limits.min_side:
                raise ImageError(f"{name}: {w}x{h} is smaller than {limits.min_side} pixels", code="too_small")
            if fmt in ("JPEG", "MPO"):
                _check_jpeg_data(img, len(data), name)
                # libjpeg decodes at 1/2, 1/4 or 1/8 scale directly: a 20-megapixel photo costs a fraction of the
                # time and memory, and detection (which runs at 640 pixels) never needed those pixels.
                _draft(img, limits.max_side)
            dw, dh = img.size
            if budget is not None:
                budget.charge(dw * dh, name)
            try:
                img.load()
                oriented = ImageOps.exif_transpose(img)
                if limits.max_side is not None and max(oriented.size) > limits.max_side:
                    oriented.thumbnail((limits.max_side, limits.max_side), Image.Resampling.BILINEAR)
                rgb = _to_rgb_uint8(oriented)
                if fmt in ("JPEG", "MPO") and _grey_filled(rgb):
                    raise ImageError(f"{name}: truncated JPEG (its last rows are libjpeg's fill for missing data)")
                return rgb
            except (Image.DecompressionBombError, OSError, ValueError, SyntaxError, EOFError) as exc:
                # Pillow says "image file is truncated" for a cut JPEG; keep its words, they help the user.
                raise ImageError(f"{name}: corrupt or truncated image ({exc})") from None


def decoded_pixels(data: bytes, *, limits: ImageLimits = DEFAULT_LIMITS) -> int:
    """How many pixels :func:`decode_image` would decode for ``data`` (JPEG draft mode included), header only.

    Lets a request's pixel budget be checked for all its images before any is decoded. Unreadable headers count
    0 here; :func:`decode_image` refuses them with the reason.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                if img.format in ("JPEG", "MPO"):
                    _draft(img, limits.max_side)
                return int(img.size[0] * img.size[1])
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError):
            return 0


def _draft(img: Image.Image, max_side: int | None) -> None:
    """Ask libjpeg for the least DCT scale (1/2, 1/4, 1/8) that brings the longest side within ``max_side``.

    The result lies between half of ``max_side`` and ``max_side`` when a scale can reach it (1/8 at most; anything
    still larger is downscaled after decoding).
    """
    w, h = img.size
    if max_side is None or max(w, h) <= max_side:
        return
    scale = next((s for s in (2, 4, 8) if max(w, h) / s <= max_side), 8)
    img.draft("RGB", (max(1, w // scale), max(1, h // scale)))


def _check_jpeg_data(img: Image.Image, size: int, name: str) -> None:
    """Refuse a JPEG whose file is too small to encode the blocks its header declares.

    Every 8x8 block of a baseline scan costs at least 2 bits (a DC code and an end-of-block code; 1 bit in a
    progressive DC scan), so a 79 KB file that claims 4000x5000 pixels cannot be whole: libjpeg would decode it
    with grey fill, at the full cost of 20 megapixels.
    """
    layers = getattr(img, "layer", None) or []
    if not layers:
        return
    hmax = max(int(lay[1]) for lay in layers)
    vmax = max(int(lay[2]) for lay in layers)
    w, h = img.size
    mcus = -(-w // (8 * hmax)) * -(-h // (8 * vmax))
    blocks = mcus * sum(int(lay[1]) * int(lay[2]) for lay in layers)
    bits = 1 if img.info.get("progressive") or img.info.get("progression") else 2
    if size * 8 < blocks * bits:
        raise ImageError(
            f"{name}: truncated JPEG ({size} bytes cannot encode the {w}x{h} pixels its header declares)",
            code="bad_image",
        )


def _grey_filled(rgb: np.ndarray) -> bool:
    """Whether the bottom rows are libjpeg's fill for missing data (exactly RGB 128) under non-uniform content.

    A JPEG cut short and closed with an end-of-image marker decodes without error: libjpeg substitutes zero
    coefficients, mid-grey, for every missing block. A real photo's bottom band is never exactly uniform 128 while
    the rest of the image is not; a wholly uniform image (a blank test card) is left alone.
    """
    h = rgb.shape[0]
    band = max(2, h // 64)
    if h < 2 * band:
        return False
    bottom = rgb[h - band :]
    if not bool((bottom == 128).all()):
        return False
    return not bool((rgb == 128).all())


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
