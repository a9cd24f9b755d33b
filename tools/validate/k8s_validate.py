"""Validate rendered Kubernetes objects offline, strict about unknown fields.

Built-in kinds go through kubernetes-validate, CRD kinds through facegate's own CRD validator
(``facegate.rollout.crds``: the openAPIV3Schema of the CRDs under a directory, ../shared/crds, made as strict as the
API server), the same one `facegate rollout --dry-run` and the pipelines use: one validator, not two.

kubernetes-validate only warns (and exits 0) for kinds it has no schema for, and the API server silently prunes
unknown fields of a CRD object, so a misspelt `canaryTraficPercent` would deploy as "no canary". Here an object
fails when a field is unknown (like `kubectl apply --validate=strict`), when its CRD group is one we validate but
the kind/version is not in the CRDs, or when its kind has no schema anywhere and is not in SCHEMALESS. It also fails
on a deprecated spelling the pinned release still tolerates (DEPRECATED_ANNOTATIONS: KServe's old `Serverless`).

    python tools/validate/k8s_validate.py --crds ../shared/crds rendered.yaml [more.yaml ...]   (or - for stdin)
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

# facegate's CRD validator needs only PyYAML and jsonschema, both in this venv; it is imported from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from facegate.rollout.crds import CrdValidationError, validate

# CRD groups whose objects must validate against ../shared/crds (KServe, Argo, Kubeflow Trainer, KubeRay,
# Prometheus operator); an object of one of these groups with no matching CRD version is an error.
CRD_GROUPS = {"serving.kserve.io", "argoproj.io", "trainer.kubeflow.org", "ray.io", "monitoring.coreos.com"}
# Kinds with no schema available offline, accepted with the reason why.
# None today: a kind nothing installs (e.g. kubeflow.org/v1 Profile next to standalone KFP) must fail, not pass.
SCHEMALESS: dict[tuple[str, str], str] = {}


def documents(paths: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(file name, object) for every non-empty YAML document of the files (- is stdin)."""
    for name in paths:
        text = sys.stdin.read() if name == "-" else Path(name).read_text()
        for doc in yaml.safe_load_all(text):
            if doc:
                yield name, doc


# Spellings the pinned releases only keep as deprecated aliases: (annotation, old value, current value, why).
DEPRECATED_ANNOTATIONS = [
    ("serving.kserve.io/deploymentMode", "Serverless", "Knative",
     "KServe v0.16 renamed the mode; v0.20 accepts Serverless only as a deprecated alias"),
]  # fmt: skip


def deprecated(doc: dict[str, Any]) -> list[str]:
    """Annotations, on the object or its InferenceService predictor, that use a deprecated spelling."""
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    predictor = spec.get("predictor") if isinstance(spec.get("predictor"), dict) else {}
    found = []
    for where, meta in (("metadata", doc.get("metadata") or {}), ("spec.predictor", predictor)):
        annotations = meta.get("annotations") or {}
        for key, old, new, why in DEPRECATED_ANNOTATIONS:
            if annotations.get(key) == old:
                found.append(f"{where}.annotations {key}: {old} is deprecated, write {new} ({why})")
    return found


def check(doc: dict[str, Any], crd_dir: Path, k8s_version: str) -> list[str]:
    """The problems of one object (empty when valid)."""
    old_names = deprecated(doc)
    if old_names:
        return old_names
    api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    group = api_version.split("/")[0] if "/" in api_version else ""
    if group in CRD_GROUPS:
        try:
            validate(doc, crd_dir)
        except CrdValidationError as exc:
            if exc.code in ("unknown_kind", "unknown_version"):
                return [f"{api_version} {kind} is not served by any CRD in the CRD directory"]
            return exc.errors or [str(exc)]
        return []
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
    failures = count = 0
    for name, doc in documents(args.files):
        count += 1
        errors = check(doc, args.crds, args.k8s_version)
        where = f"{name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        for error in errors:
            print(f"FAIL {where}: {error}", file=sys.stderr)
        failures += bool(errors)
    print(f"{count - failures}/{count} objects valid (CRD kinds checked against {args.crds})")
    return 1 if failures or count == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
