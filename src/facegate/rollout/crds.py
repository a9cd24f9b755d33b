"""Validate custom Kubernetes objects against their CustomResourceDefinitions, offline.

``kubectl apply --dry-run=client`` needs an API server and ``kubernetes-validate`` only warns for CRD kinds, so
objects are checked with jsonschema against the ``openAPIV3Schema`` of the matching CRD version, as the API server
would. Two things make the check as strict as the server rather than looser:

- Unknown fields are errors. A structural CRD schema lists every field and the API server prunes (or, with strict
  field validation, refuses) the rest, so a misspelt ``canaryTraficPercent`` would silently vanish on the cluster.
  Objects with ``properties`` get ``additionalProperties: false`` unless the schema says
  ``x-kubernetes-preserve-unknown-fields`` or already defines ``additionalProperties``.
- ``metadata`` (``type: object`` in every CRD) is checked like the API server's ObjectMeta: a DNS-1123 name and
  namespace, and label keys/values in Kubernetes' syntax.

CEL rules (``x-kubernetes-validations``) are not evaluated.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from facegate.errors import FacegateError

__all__ = ["CrdValidationError", "find_crd", "object_schema", "validate"]

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
MAX_ERRORS = 20


class CrdValidationError(FacegateError):
    """An object does not validate against its CRD, or no CRD in the directory defines its kind."""

    code = "invalid_object"

    def __init__(self, message: str, *, errors: list[str] | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.errors = errors or []


def _load_yaml(path: Path) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the Argo CRDs are ~3 MB each: libyaml is 10x faster
    return yaml.load(path.read_text(), Loader=loader)  # noqa: S506 (a safe loader)


@functools.lru_cache(maxsize=64)
def _crd_header(path: Path, mtime: float) -> tuple[str, str]:
    """``(group, kind)`` of a CRD file, parsed from the text before its (large) version schemas."""
    import yaml

    text = path.read_text()
    head, sep, _ = text.partition("\n  versions:\n")
    doc = yaml.safe_load(head) if sep else _load_yaml(path)
    if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
        return "", ""
    spec = doc.get("spec") or {}
    return str(spec.get("group", "")), str((spec.get("names") or {}).get("kind", ""))


def find_crd(crd_dir: str | Path, api_version: str, kind: str) -> Path:
    """The CRD file in ``crd_dir`` or below it defining ``kind`` in the group of ``api_version`` (``group/version``).

    Searching below lets one folder of per-project CRD folders (``../shared/crds``) serve every kind.

    Raises:
        CrdValidationError: If no CRD there defines it (code ``unknown_kind``).
    """
    group = api_version.rpartition("/")[0]
    for path in sorted(Path(crd_dir).rglob("*.y*ml")):
        g, k = _crd_header(path, path.stat().st_mtime)
        if g == group and k == kind:
            return path
    raise CrdValidationError(f"no CRD for {kind} ({api_version}) in {crd_dir}", code="unknown_kind")


def _strict(node: Any) -> Any:
    """A copy of an OpenAPI v3 (Kubernetes structural) schema that jsonschema checks as the API server does."""
    if isinstance(node, list):
        return [_strict(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "description"}
    if node.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]  # OpenAPI's nullable is JSON Schema's null type
    out.pop("nullable", None)
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("x-kubernetes-int-or-string") and "type" not in node and "anyOf" not in node:
        out["type"] = ["integer", "string"]
    return out


@functools.lru_cache(maxsize=16)
def _schema(path: Path, mtime: float, version: str) -> dict[str, Any]:
    doc = _load_yaml(path)
    for v in doc["spec"]["versions"]:
        if v.get("name") == version:
            schema = (v.get("schema") or {}).get("openAPIV3Schema")
            if not isinstance(schema, dict):
                break
            return dict(_strict(schema))
    raise CrdValidationError(f"{path.name} has no schema for version {version}", code="unknown_version")


def object_schema(crd_dir: str | Path, api_version: str, kind: str) -> dict[str, Any]:
    """The strict JSON schema for ``kind`` at ``api_version`` from the CRDs in ``crd_dir`` (cached)."""
    path = find_crd(crd_dir, api_version, kind)
    return _schema(path, path.stat().st_mtime, api_version.rpartition("/")[2])


def _metadata_errors(meta: Any) -> list[str]:
    if not isinstance(meta, dict):
        return ["metadata: must be an object"]
    errors = []
    name = meta.get("name")
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        errors.append(f"metadata.name: {name!r} is not a DNS-1123 subdomain")
    ns = meta.get("namespace")
    if ns is not None and (not isinstance(ns, str) or len(ns) > 63 or not _DNS_LABEL.match(ns)):
        errors.append(f"metadata.namespace: {ns!r} is not a DNS-1123 label")
    for field in ("labels", "annotations"):
        items = meta.get(field) or {}
        if not isinstance(items, dict):
            errors.append(f"metadata.{field}: must be a map of strings")
            continue
        for key, value in items.items():
            prefix, _, key_name = str(key).rpartition("/")
            if (prefix and not _DNS_SUBDOMAIN.match(prefix)) or len(key_name) > 63 or not _LABEL_NAME.match(key_name):
                errors.append(f"metadata.{field}: invalid key {key!r}")
            if not isinstance(value, str):
                errors.append(f"metadata.{field}.{key}: value must be a string")
            elif field == "labels" and (len(value) > 63 or not _LABEL_VALUE.match(value)):
                errors.append(f"metadata.labels.{key}: invalid label value {value!r}")
    return errors


def validate(obj: dict[str, Any], crd_dir: str | Path) -> None:
    """Check a custom object against the CRD in ``crd_dir`` that defines its ``apiVersion`` and ``kind``.

    Args:
        obj: The object as a plain dict (``apiVersion``, ``kind``, ``metadata``, ``spec``, ...).
        crd_dir: A folder of CRD YAML files (e.g. ``../shared/crds/kserve``).

    Raises:
        CrdValidationError: Listing every problem (path and message, at most 20), or naming a kind no CRD there
            defines.
    """
    import jsonschema

    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        raise CrdValidationError("the object has no apiVersion and kind")
    schema = object_schema(crd_dir, api_version, kind)
    validator = jsonschema.Draft7Validator(schema)
    errors = _metadata_errors(obj.get("metadata"))
    for err in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join(str(p) for p in err.absolute_path) or "(root)"
        errors.append(f"{where}: {err.message[:300]}")
    if errors:
        name = (obj.get("metadata") or {}).get("name", "?")
        shown = errors[:MAX_ERRORS]
        more = f" (and {len(errors) - MAX_ERRORS} more)" if len(errors) > MAX_ERRORS else ""
        raise CrdValidationError(
            f"{kind} {name!r} does not validate against its CRD: " + "; ".join(shown) + more, errors=errors
        )
