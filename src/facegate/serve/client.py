"""Building verifier requests and reading answers (Open Inference Protocol v2, JSON form), for Python clients.

Any v2 client works (Triton's ``tritonclient.http`` included); these two helpers are what a kiosk or a script needs
with a plain HTTP library.
"""

from __future__ import annotations

import base64
from typing import Any

__all__ = ["outputs", "verify_request"]


def verify_request(image: bytes, student_id: str) -> dict[str, Any]:
    """The JSON body of ``POST /v2/models/verifier/infer`` for one check-in photo (JPEG/PNG bytes)."""
    return {
        "inputs": [
            {"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(image).decode()]},
            {"name": "student_id", "shape": [1], "datatype": "BYTES", "data": [student_id]},
        ]
    }


def outputs(response: dict[str, Any]) -> dict[str, Any]:
    """``{name: first element}`` of a v2 response (``decision``, ``score``, ``threshold``, ...)."""
    return {o["name"]: o["data"][0] for o in response["outputs"]}
