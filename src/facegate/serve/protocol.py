"""Open Inference Protocol (v2) and v1 request handling on top of KServe's data plane.

KServe 0.21 decodes a v2 *binary* request (the binary tensor extension that Triton clients use for BYTES) by turning
every BYTES element into a UTF-8 string, so a JPEG sent as binary fails with a server error. ``StrictDataPlane``
keeps binary BYTES elements as raw bytes, and turns anything unparseable in a client's request (bad header, sizes
that overrun the body, malformed JSON) into a 400 instead of a 500. In JSON requests an image travels as base64
text (v2: a BYTES element; v1: ``{"b64": ...}``), the convention of both protocols' JSON forms.
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Any

import numpy as np
import orjson

from facegate.errors import FacegateError
from facegate.serve.kserve_compat import DataPlane, InferInput, InferRequest, InvalidInput, RequestedOutput

__all__ = ["BadRequestError", "StrictDataPlane", "bytes_values", "element_bytes", "parse_binary_request"]

INFERENCE_HEADER = "inference-header-content-length"
MAX_ELEMENTS = 1024


class BadRequestError(FacegateError):
    """The request is malformed: wrong inputs, datatypes, shapes or encodings."""

    code = "bad_request"


def _bytes_elements(raw: bytes, count: int, name: str) -> np.ndarray:
    """Deserialize the binary BYTES layout (4-byte little-endian length, then the bytes) into ``count`` elements."""
    out: list[bytes] = []
    pos = 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise InvalidInput(f"input {name!r}: truncated BYTES element length")
        (length,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + length > len(raw):
            raise InvalidInput(f"input {name!r}: BYTES element overruns its binary data")
        out.append(raw[pos : pos + length])
        pos += length
    if len(out) != count:
        raise InvalidInput(f"input {name!r}: shape says {count} elements, binary data holds {len(out)}")
    arr = np.empty(count, dtype=object)
    arr[:] = out
    return arr


def parse_binary_request(body: bytes, json_length: int, model_name: str) -> InferRequest:
    """Parse a v2 request that uses the binary tensor extension, keeping BYTES elements as raw bytes.

    Raises:
        InvalidInput: On any inconsistency between the JSON header, the shapes and the binary data.
    """
    if not 0 < json_length <= len(body):
        raise InvalidInput(f"{INFERENCE_HEADER} {json_length} does not fit a body of {len(body)} bytes")
    try:
        header = orjson.loads(body[:json_length])
    except orjson.JSONDecodeError:
        raise InvalidInput("the JSON part of the binary request is not valid JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InvalidInput("the request has no 'inputs' list")
    pos = json_length
    inputs = []
    for spec in header["inputs"]:
        if not isinstance(spec, dict):
            raise InvalidInput("each input must be an object")
        name, shape, datatype = spec.get("name"), spec.get("shape"), spec.get("datatype")
        params = spec.get("parameters") or {}
        if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(params, dict):
            raise InvalidInput("each input needs a string 'name' and 'datatype'")
        if not isinstance(shape, list) or not all(isinstance(d, int) and 0 <= d <= MAX_ELEMENTS for d in shape):
            raise InvalidInput(f"input {name!r}: shape must be a list of small non-negative integers")
        count = int(np.prod(shape)) if shape else 1
        if count > MAX_ELEMENTS:
            raise InvalidInput(f"input {name!r}: more than {MAX_ELEMENTS} elements")
        inp = InferInput(name=name, shape=shape, datatype=datatype, parameters=params)
        if "data" in spec:
            inp.data = spec["data"]
        else:
            size = params.get("binary_data_size")
            if not isinstance(size, int) or size < 0 or pos + size > len(body):
                raise InvalidInput(f"input {name!r}: missing or inconsistent binary_data_size")
            raw = body[pos : pos + size]
            pos += size
            if datatype == "BYTES":
                inp.data = _bytes_elements(raw, count, name)
            else:
                inp._raw_data = raw
        inputs.append(inp)
    if pos != len(body):
        raise InvalidInput(f"{len(body) - pos} bytes after the last input's binary data")
    outputs = header.get("outputs")
    requested = None
    if isinstance(outputs, list):
        requested = [
            RequestedOutput(name=str(o.get("name")), parameters=o.get("parameters"))
            for o in outputs
            if isinstance(o, dict)
        ]
    req_id = header.get("id")
    return InferRequest(
        model_name=model_name,
        infer_inputs=inputs,
        request_id=req_id if isinstance(req_id, str) else None,
        parameters=header.get("parameters") if isinstance(header.get("parameters"), dict) else None,
        request_outputs=requested,
        from_grpc=False,
    )


class StrictDataPlane(DataPlane):  # type: ignore[misc]
    """KServe's data plane, with raw-bytes binary decoding and client errors reported as 400."""

    def decode_inference_request(self, body: Any, headers: dict[str, str], model_name: str) -> InferRequest:
        """A v2 request (JSON model or binary body) as an ``InferRequest``; client errors raise ``InvalidInput``."""
        if isinstance(body, bytes):
            raw_length = (headers or {}).get(INFERENCE_HEADER)
            if raw_length is None:
                # A JSON request sent without a JSON content type (Triton's client does this): all header, no tail.
                return parse_binary_request(body, len(body), model_name)
            if not raw_length.strip().isdigit():
                raise InvalidInput(f"{INFERENCE_HEADER} must be a number")
            return parse_binary_request(body, int(raw_length), model_name)
        try:
            return InferRequest.from_inference_request(body, model_name)
        except InvalidInput:
            raise
        except Exception as exc:  # anything a client's JSON can provoke while parsing is the client's error
            raise InvalidInput(f"malformed inference request ({type(exc).__name__})") from None

    def metadata(self) -> dict[str, Any]:
        """Server metadata, advertising only the extensions this server implements.

        KServe advertises the model repository extension, whose routes facegate answers with 404 (an admin must not
        unload the verifier while readiness stays green); the binary tensor extension is served (see
        :func:`parse_binary_request`).
        """
        meta: dict[str, Any] = super().metadata()
        return {**meta, "extensions": ["binary_tensor_data"]}

    def decode(self, body: Any, headers: Any, *args: Any, **kwargs: Any) -> Any:
        """KServe's decode, with any parsing failure reported as ``InvalidInput`` (400)."""
        try:
            return super().decode(body, headers, *args, **kwargs)
        except InvalidInput:
            raise
        except Exception as exc:
            raise InvalidInput(f"malformed request ({type(exc).__name__})") from None


def element_bytes(value: object, name: str, *, base64_text: bool) -> bytes:
    """One BYTES element as bytes: raw bytes as they are, text base64-decoded (images) or UTF-8 encoded (ids).

    Raises:
        BadRequestError: If the element is neither bytes nor text, or its base64 is invalid.
    """
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise BadRequestError(f"input {name!r}: elements must be strings", code="bad_input")
    if not base64_text:
        return value.encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError(f"input {name!r}: JSON image data must be base64", code="bad_base64") from None


def bytes_values(inp: InferInput, *, base64_text: bool) -> list[bytes]:
    """The elements of a BYTES input as bytes.

    Args:
        inp: The input.
        base64_text: Whether text elements (from JSON) are base64 (images) rather than UTF-8 (ids).

    Raises:
        BadRequestError: If the datatype is not BYTES or an element cannot be read.
    """
    if inp.datatype != "BYTES":
        raise BadRequestError(f"input {inp.name!r} must be BYTES, got {inp.datatype}", code="bad_datatype")
    data = inp.data
    values = list(data.ravel()) if isinstance(data, np.ndarray) else data
    if not isinstance(values, list):
        raise BadRequestError(f"input {inp.name!r}: data must be a list", code="bad_input")
    shape = list(inp.shape or [])
    if any(not isinstance(d, int) or d < 0 for d in shape) or int(np.prod(shape)) != len(values):
        raise BadRequestError(
            f"input {inp.name!r}: shape {shape} does not match {len(values)} elements", code="bad_shape"
        )
    return [element_bytes(v, inp.name, base64_text=base64_text) for v in values]
