"""Validate rendered Kubernetes objects offline, strict about unknown fields.

Built-in kinds go through kubernetes-validate, CRD kinds through the openAPIV3Schema of the CRDs in a directory
(../shared/crds).

kubernetes-validate only warns (and exits 0) for kinds it has no schema for, and the API server silently prunes
unknown fields of a CRD object, so a misspelt `canaryTraficPercent` would deploy as "no canary". Here an object
fails when a field is unknown (like `kubectl apply --validate=strict`), when its CRD group is one we validate but
the kind/version is not in the CRDs, or when its kind has no schema anywhere and is not in SCHEMALESS.

    python tools/validate/k8s_validate.py --crds ../shared/crds rendered.yaml [more.yaml ...]   (or - for stdin)
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

# CRD groups whose objects must validate against ../shared/crds (KServe, Argo, Kubeflow Trainer, KubeRay,
# Prometheus operator); an object of one of these groups with no matching CRD version is an error.
CRD_GROUPS = {"serving.kserve.io", "argoproj.io", "trainer.kubeflow.org", "ray.io", "monitoring.coreos.com"}
# Kinds with no schema available offline, accepted with the reason why.
# None today: a kind nothing installs (e.g. kubeflow.org/v1 Profile next to standalone KFP) must fail, not pass.
SCHEMALESS: dict[tuple[str, str], str] = {}


def strict(schema: Any) -> Any:
    """Copy of an openAPIV3Schema where objects with declared properties reject undeclared ones."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not schema.get("x-kubernetes-preserve-unknown-fields")
        # metadata is validated by the API server, not by the CRD's (usually empty) schema.
        and set(out["properties"]) != {"name", "namespace", "labels", "annotations"}
    ):
        out["additionalProperties"] = False
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
    return out


def load_crds(directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict schema, for every served version of every CRD under directory."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(directory.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                if version.get("served", True):
                    schema = strict(version["schema"]["openAPIV3Schema"])
                    schema.setdefault("properties", {}).update(
                        {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
                    )
                    schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = schema
    return schemas


def documents(paths: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(file name, object) for every non-empty YAML document of the files (- is stdin)."""
    for name in paths:
        text = sys.stdin.read() if name == "-" else Path(name).read_text()
        for doc in yaml.safe_load_all(text):
            if doc:
                yield name, doc


def check(doc: dict[str, Any], crds: dict[tuple[str, str], dict[str, Any]], k8s_version: str) -> list[str]:
    """The problems of one object (empty when valid)."""
    api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    group = api_version.split("/")[0] if "/" in api_version else ""
    if (api_version, kind) in crds:
        validator = jsonschema.Draft7Validator(crds[(api_version, kind)])
        return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc)]
    if group in CRD_GROUPS:
        return [f"{api_version} {kind} is not served by any CRD in the CRD directory"]
    if (api_version, kind) in SCHEMALESS:
        return []
    try:
        kubernetes_validate.validate(copy.deepcopy(doc), k8s_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path)) or '<root>'}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no schema for {api_version} {kind} (built-in kinds of Kubernetes {k8s_version}, CRDs, SCHEMALESS)"]
    return []


def main(argv: list[str] | None = None) -> int:
    """Validate every object of the files; 1 when any is invalid (or there are none), 2 without the CRDs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crds", type=Path, required=True, help="directory of CustomResourceDefinition YAML files")
    parser.add_argument("--k8s-version", default="1.32", help="Kubernetes version of the built-in schemas")
    parser.add_argument("files", nargs="+", help="YAML files of objects; - reads stdin")
    args = parser.parse_args(argv)
    if not args.crds.is_dir():
        print(f"CRD directory {args.crds} not found", file=sys.stderr)
        return 2
    crds = load_crds(args.crds)
    failures = count = 0
    for name, doc in documents(args.files):
        count += 1
        errors = check(doc, crds, args.k8s_version)
        where = f"{name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        for error in errors:
            print(f"FAIL {where}: {error}", file=sys.stderr)
        failures += bool(errors)
    print(f"{count - failures}/{count} objects valid ({len(crds)} CRD versions loaded)")
    return 1 if failures or count == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
