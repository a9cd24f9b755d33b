"""Building verifier requests and reading answers (Open Inference Protocol v2, JSON form), for Python clients.

Any v2 client works (Triton's ``tritonclient.http`` included); these two helpers are what a kiosk or a script needs
with a plain HTTP library.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

__all__ = ["outputs", "verify_request", "verify_request_binary"]


def verify_request(image: bytes, student_id: str) -> dict[str, Any]:
    """The JSON body of ``POST /v2/models/verifier/infer`` for one check-in photo (JPEG/PNG bytes)."""
    return {
        "inputs": [
            {"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(image).decode()]},
            {"name": "student_id", "shape": [1], "datatype": "BYTES", "data": [student_id]},
        ]
    }


def verify_request_binary(image: bytes, student_id: str) -> tuple[bytes, dict[str, str]]:
    """The body and headers of the same request with the binary tensor extension (no base64, no JSON escaping).

    Returns:
        ``(body, headers)``: send both as they are (``Inference-Header-Content-Length`` says where the JSON ends).
    """
    elements = {"image": image, "student_id": student_id.encode("utf-8")}
    tails = {name: struct.pack("<I", len(value)) + value for name, value in elements.items()}
    header = json.dumps(
        {
            "inputs": [
                {"name": n, "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(t)}}
                for n, t in tails.items()
            ]
        }
    ).encode()
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    return header + b"".join(tails.values()), headers


def outputs(response: dict[str, Any]) -> dict[str, Any]:
    """``{name: first element}`` of a v2 response (``decision``, ``score``, ``threshold``, ...)."""
    return {o["name"]: o["data"][0] for o in response["outputs"]}
