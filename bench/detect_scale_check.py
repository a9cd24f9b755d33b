"""Does detecting at a reduced size change verification? Full-size detection against ``serve.detect_max_side``.

The server detects faces on the photo downscaled to ``serve.detect_max_side`` (320 by default: 320x240 for a 640x480
kiosk frame), maps the landmarks back and aligns the face from the full-resolution photo. This script runs every
photo of ``../shared/data/photos`` through both paths, as the kiosk would send it (a 640x480 letterboxed JPEG and a
640x480 camera crop) and as the file is (decoded as the server decodes it), with the served model (SFace exported
to OpenVINO FP32, or ``--model``), and compares:

- the outcome of each photo (a face, or the reason it was refused: no face, multiple faces, too small...);
- for each photo with a face, how far the five landmarks moved (pixels of the full image) and the cosine between
  the two paths' embeddings of it;
- every check-in against every enrolled person (templates from the ``train`` photos, each path enrolling with its
  own detection size, as a server does): the score under both paths and the accept/reject decision at the model's
  threshold.

Prints one JSON object. Usage: ``python bench/detect_scale_check.py [--side 320] [--model BUNDLE]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from _common import SHARED, machine, require
from serve_bench import camera_photo, check_in_photo, served_model

from facegate.bundles import load_embedder
from facegate.config import load_settings
from facegate.data.imageio import SERVE_FORMATS, decode_image
from facegate.errors import FaceError
from facegate.faces.pipeline import FaceAligner, FaceCrop, limits_from_settings
from facegate.models.base import l2_normalize
from facegate.serve.models import serve_aligner

#: Who is in the photos outside ``train/<person>/`` (``None``: two people, or not one of the enrolled).
IDENTITY = {
    "32bit.png": "obama",
    "obama-1080p.jpg": "obama",
    "obama-240p.jpg": "obama",
    "obama_partial_face.jpg": "obama",
    "obama_small.jpg": "obama",
    "test/obama1.jpg": "obama",
    "test/alex_lacamoire1.jpg": "alex_lacamoire",
    "test/johnsnow_test1.jpg": "kit_harington",
}


def who(check_in: str) -> str | None:
    """The person in a check-in (``photo:frame``), when it shows one enrolled person."""
    photo = check_in.split(":")[0]
    return photo.split("/")[1] if photo.startswith("train/") else IDENTITY.get(photo)


def aligners(side: int) -> tuple[FaceAligner, FaceAligner]:
    """The server's aligner with full-size detection (``detector.max_side``) and with detection at ``side``."""
    full = serve_aligner(load_settings(overrides={"serve.detect_max_side": 0}, env={}))
    reduced = serve_aligner(load_settings(overrides={"serve.detect_max_side": side}, env={}))
    return full, reduced


def outcome(aligner: FaceAligner, image: np.ndarray) -> FaceCrop | str:
    """The aligned crop, or the reason the photo was refused."""
    try:
        return aligner.prepare(image, "always")
    except FaceError as exc:
        return exc.code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=320, help="the reduced detection size (serve.detect_max_side)")
    ap.add_argument("--model", default=None, help="bundle (default: SFace exported to OpenVINO FP32)")
    args = ap.parse_args()
    photos = require(SHARED / "data" / "photos")
    full, reduced = aligners(args.side)
    settings = load_settings(env={})
    # Decoded as the server decodes (larger photos in JPEG draft mode to serve.max_decode_side).
    limits = replace(limits_from_settings(settings), formats=SERVE_FORMATS, max_side=settings.serve.max_decode_side)
    with tempfile.TemporaryDirectory() as tmp:
        emb = load_embedder(served_model(args.model, Path(tmp)))
        threshold = float(settings.verify.threshold or emb.default_threshold)

        def frames(path: Path) -> dict[str, bytes]:
            return {
                "kiosk_letterbox": check_in_photo(path),
                "kiosk_camera": camera_photo(path),
                "file": path.read_bytes(),
            }

        files = sorted(p for p in photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        rows: list[dict[str, Any]] = []
        faces: dict[str, dict[str, np.ndarray]] = {"full": {}, "reduced": {}}
        for path in files:
            for kind, data in frames(path).items():
                image = decode_image(data, limits=limits)
                a, b = outcome(full, image), outcome(reduced, image)
                row: dict[str, Any] = {
                    "photo": str(path.relative_to(photos)),
                    "frame": kind,
                    "full": a if isinstance(a, str) else "face",
                    "reduced": b if isinstance(b, str) else "face",
                }
                if isinstance(a, FaceCrop) and isinstance(b, FaceCrop):
                    assert a.detection is not None
                    assert b.detection is not None
                    moved = np.linalg.norm(a.detection.landmarks - b.detection.landmarks, axis=1)
                    ea, eb = emb.embed(np.stack([a.face, b.face]))
                    row["landmarks_moved_px_max"] = round(float(moved.max()), 2)
                    row["face_px"] = round(a.detection.size, 1)
                    row["cosine_full_vs_reduced"] = round(float(np.dot(ea, eb)), 4)
                    key = f"{row['photo']}:{kind}"
                    faces["full"][key], faces["reduced"][key] = ea, eb
                rows.append(row)
        # Templates from the train photos (each path enrolls with its own detection), check-ins from the rest.
        people = sorted({k.split("/")[1] for k in faces["full"] if k.startswith("train/") and ":file" in k})
        templates = {
            path: {
                person: l2_normalize(
                    np.mean(
                        [v for k, v in faces[path].items() if k.startswith(f"train/{person}/") and ":file" in k],
                        axis=0,
                        keepdims=True,
                    )
                )[0]
                for person in people
            }
            for path in ("full", "reduced")
        }
        checks = [
            k for k in faces["full"] if not (k.startswith("train/") and k.endswith(":file")) and k in faces["reduced"]
        ]
        pairs: list[dict[str, Any]] = []
        for key in checks:
            for person in people:
                sa = float(np.dot(faces["full"][key], templates["full"][person]))
                sb = float(np.dot(faces["reduced"][key], templates["reduced"][person]))
                pairs.append(
                    {
                        "check_in": key,
                        "person": person,
                        "score_full": round(sa, 4),
                        "score_reduced": round(sb, 4),
                        "same_decision": (sa >= threshold) == (sb >= threshold),
                    }
                )
    same_outcome = sum(r["full"] == r["reduced"] for r in rows)
    cos = [r["cosine_full_vs_reduced"] for r in rows if "cosine_full_vs_reduced" in r]
    moved = [r["landmarks_moved_px_max"] for r in rows if "landmarks_moved_px_max" in r]
    known = [p for p in pairs if who(p["check_in"]) is not None]
    genuine = [[p[f"score_{k}"] for p in known if who(p["check_in"]) == p["person"]] for k in ("full", "reduced")]
    impostor = [[p[f"score_{k}"] for p in known if who(p["check_in"]) != p["person"]] for k in ("full", "reduced")]
    deltas = [abs(p["score_full"] - p["score_reduced"]) for p in pairs]
    result = {
        "machine": machine(),
        "side": args.side,
        "threshold": round(threshold, 4),
        "summary": {
            "photos_x_frames": len(rows),
            "same_outcome": same_outcome,
            "different_outcomes": [r for r in rows if r["full"] != r["reduced"]],
            "faces_compared": len(cos),
            "cosine_full_vs_reduced_min": min(cos),
            "cosine_full_vs_reduced_median": round(float(np.median(cos)), 4),
            "landmarks_moved_px_max": max(moved),
            "landmarks_moved_px_median": round(float(np.median(moved)), 2),
            "check_in_x_person_pairs": len(pairs),
            "same_decision": sum(p["same_decision"] for p in pairs),
            "accepts_full": sum(p["score_full"] >= threshold for p in pairs),
            "accepts_reduced": sum(p["score_reduced"] >= threshold for p in pairs),
            "genuine_scores_mean_full_reduced": [round(float(np.mean(g)), 4) for g in genuine],
            "genuine_scores_min_full_reduced": [round(min(g), 4) for g in genuine],
            "impostor_scores_max_full_reduced": [round(max(i), 4) for i in impostor],
            "score_abs_difference_max": round(max(deltas), 4),
            "score_abs_difference_median": round(float(np.median(deltas)), 4),
            "closest_to_threshold": sorted(pairs, key=lambda p: abs(p["score_full"] - threshold))[:3],
        },
        "photos": rows,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
