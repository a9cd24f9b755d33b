"""SFace with its int8 weights dequantised once, instead of on every forward pass.

OpenCV Zoo's ``int8bq`` SFace stores its weights block-quantised and dequantises them with ``DequantizeLinear``
nodes *inside* the graph, so OpenCV recomputes every weight tensor (6.4 M values for the last layer alone) on each
``forward``. Folding those constant nodes into float initializers gives the same network, bit for bit (the folded
weights are exactly what the nodes computed), about five times faster per face here.

Folding needs the ``onnx`` package (the ``export`` extra, present in both facegate images). Without it, or when the
cache cannot be written, :func:`folded_sface` returns ``None`` and SFace runs the packaged file as before. The
folded graph is cached under ``FACEGATE_CACHE_DIR`` (default ``~/.cache/facegate``), named after the packaged
file's SHA-256, so a process pays the fold (a few seconds) only the first time on a machine.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

__all__ = ["cache_dir", "folded_sface"]

log = logging.getLogger(__name__)
CACHE_ENV = "FACEGATE_CACHE_DIR"


def cache_dir() -> Path:
    """Where facegate keeps derived, re-creatable files (``FACEGATE_CACHE_DIR``, default ``~/.cache/facegate``)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "facegate")


def folded_sface(src: Path, sha256: str) -> Path | None:
    """The folded copy of the SFace ONNX ``src`` (whose verified digest is ``sha256``), built on first use.

    Returns:
        The folded ONNX file, or ``None`` where it cannot be built here (no ``onnx`` package, unwritable cache).
    """
    target = cache_dir() / f"sface-{sha256[:16]}-folded.onnx"
    if target.is_file():
        return target
    try:
        from facegate.export.convert import _clean_onnx_inputs  # the exporter's own SFace fix-up

        target.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename: two processes folding at once must not read a half-written file.
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.part")
        os.close(fd)
        try:
            _clean_onnx_inputs(src, Path(tmp))
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except ImportError:
        log.info("onnx is not installed: SFace runs unfolded (slower); install facegate[export] to fold it")
        return None
    except OSError as exc:
        log.warning("cannot cache the folded SFace in %s (%s): SFace runs unfolded", target.parent, exc.strerror)
        return None
    return target
