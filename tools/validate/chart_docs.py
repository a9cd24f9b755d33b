"""Generate the facegate chart's values.schema.json and the values table in its README from values.yaml.

values.yaml is the single source: every value carries a ``# --`` comment (helm-docs convention) that becomes its
description. The schema is strict: every object has ``additionalProperties: false``, so a misspelt or unknown key
fails ``helm lint``/``template``/``install``; constraints that types alone cannot express (ranges, enums, patterns)
are listed in ``CONSTRAINTS`` below by dotted path.

    python tools/validate/chart_docs.py           # rewrite values.schema.json and README.md
    python tools/validate/chart_docs.py --check   # exit 1 if either is stale or a value has no `# --` comment
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "facegate"
START, END = "<!-- values-table:start -->", "<!-- values-table:end -->"

_DNS_LABEL = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
_SECRET = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_QUANTITY = {"type": ["string", "number"], "pattern": r"^[0-9.]+(m|Ki|Mi|Gi|Ti|k|M|G|T)?$"}
_FRACTION = {"type": "number", "exclusiveMinimum": 0, "maximum": 1}
_CRON = {"type": "string", "pattern": r"^(@(hourly|daily|weekly|monthly|yearly)|(\S+\s+){4}\S+)$"}
_TIME_ZONE = {"type": "string", "pattern": r"^([A-Za-z_]+(/[A-Za-z0-9_+-]+)*)?$"}
_TOLERATIONS = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "key": {"type": "string"},
            "operator": {"enum": ["Exists", "Equal"]},
            "value": {"type": "string"},
            "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
            "tolerationSeconds": {"type": "integer", "minimum": 0},
        },
    },
}

# Constraints by dotted path; a "*" segment matches any key. Applied over the type inferred from the default.
CONSTRAINTS: dict[str, dict[str, Any]] = {
    "image.pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    "imagePullSecrets": {"type": "array", "items": _DNS_LABEL},
    "model.storageUri": {"type": "string", "pattern": r"^(s3|gs|https?|pvc)://.+"},
    "model.version": {"type": "string", "minLength": 1, "pattern": r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"},
    "verifier.canaryTrafficPercent": {"type": "integer", "minimum": 0, "maximum": 100},
    "verifier.deploymentMode": {"enum": ["Knative", "Serverless"]},
    "serve.liveness.model": {"type": "string", "pattern": r"^/.+"},
    "serve.liveness.threshold": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
    "verifier.minReplicas": {"type": "integer", "minimum": 1},
    "verifier.maxReplicas": {"type": "integer", "minimum": 1},
    "verifier.scaleMetric": {"enum": ["concurrency", "rps"]},
    "verifier.scaleTarget": {"type": "integer", "minimum": 1},
    "*.autoscaling.minReplicas": {"type": "integer", "minimum": 1},
    "*.autoscaling.maxReplicas": {"type": "integer", "minimum": 1},
    "*.autoscaling.targetCPUUtilizationPercentage": {"type": "integer", "minimum": 1, "maximum": 100},
    "*.pdb.minAvailable": {"type": "integer", "minimum": 0},
    "*.replicas": {"type": "integer", "minimum": 0},
    "*.resources.*.cpu": _QUANTITY,
    "*.resources.*.memory": _QUANTITY,
    "*.nodeSelector": _STRING_MAP,
    "*.tolerations": _TOLERATIONS,
    "secrets.adminKey.existingSecret": {"type": "string", "pattern": r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$"},
    "secrets.*.existingSecret": _SECRET,
    "postgresql.existingSecret": _SECRET,
    "minio.existingSecret": _SECRET,
    "*.storageSize": {"type": "string", "pattern": r"^[0-9]+(Mi|Gi|Ti)$"},
    "s3.endpoint": {"type": "string", "pattern": r"^(https?://.+)?$"},
    "mlflow.artifactsDestination": {"type": "string", "pattern": r"^s3://.+"},
    "mlflow.workers": {"type": "integer", "minimum": 1, "maximum": 32},
    "reindex.activeDeadlineSeconds": {"type": "integer", "minimum": 60},
    "networkPolicy.ingressNamespaces": {"type": "array", "items": _DNS_LABEL},
    "networkPolicy.adminNamespaces": {"type": "array", "items": _DNS_LABEL},
    "networkPolicy.kioskCIDRs": {
        "type": "array",
        "items": {"type": "string", "pattern": r"^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$"},
    },
    "networkPolicy.mlNamespace": _DNS_LABEL,
    "networkPolicy.prometheus.namespace": _DNS_LABEL,
    "networkPolicy.prometheus.podLabels": {**_STRING_MAP, "minProperties": 1},
    "metrics.port": {"type": "integer", "minimum": 1024, "maximum": 65535, "not": {"enum": [8012, 8013, 8080]}},
    "metrics.serviceMonitor.interval": {"type": "string", "pattern": r"^[0-9]+(s|m)$"},
    "metrics.serviceMonitor.labels": _STRING_MAP,
    "metrics.rules.labels": _STRING_MAP,
    "metrics.dashboards.labels": _STRING_MAP,
    "metrics.dashboards.annotations": _STRING_MAP,
    "metrics.rules.noFaceRate": _FRACTION,
    "metrics.rules.errorRate": _FRACTION,
    "metrics.rules.scoreDrift": _FRACTION,
    "metrics.rules.covariateDepartureRatio": {"type": "number", "exclusiveMinimum": 1},
    "metrics.rules.covariateDepartureMin": _FRACTION,
    "metrics.rules.covariateMinCheckins": {"type": "integer", "minimum": 1},
    "metrics.rules.p99LatencySeconds": {"type": "number", "exclusiveMinimum": 0},
    # Retention and backups (docs/operations-retention.md): the bounds facegate's RetentionSettings enforce too.
    **{f"{job}.schedule": _CRON for job in ("retention", "backup")},
    **{f"{job}.timeZone": _TIME_ZONE for job in ("retention", "backup")},
    "retention.inactiveDays": {"type": "integer", "minimum": 1, "maximum": 1095},
    "retention.auditDays": {"type": "integer", "minimum": 1},
    "retention.endOfEnrollment": {"type": "string", "pattern": r"^([0-9]{4}-[0-9]{2}-[0-9]{2})?$"},
    "retention.auditMode": {"enum": ["strip", "delete"]},
    "retention.activeDeadlineSeconds": {"type": "integer", "minimum": 60},
    "backup.url": {"type": "string", "pattern": r"^s3://[a-z0-9][a-z0-9.-]+(/.*)?$"},
    "backup.keep": {"type": "integer", "minimum": 1, "maximum": 1000},
    "backup.pgDumpImage": {"type": "string", "minLength": 1},
    "backup.dumpSizeLimit": {"type": "string", "pattern": r"^[0-9]+(Mi|Gi|Ti)$"},
    "backup.activeDeadlineSeconds": {"type": "integer", "minimum": 60},
}


def _constraint(path: str) -> dict[str, Any] | None:
    parts = path.split(".")
    for pattern, schema in CONSTRAINTS.items():
        pat = pattern.split(".")
        if pat[0] == "*" and len(pat) <= len(parts):  # leading "*" = any prefix
            tail = pat[1:]
            cand = parts[len(parts) - len(tail) :]
        elif len(pat) == len(parts):
            tail, cand = pat, parts
        else:
            continue
        if all(p in ("*", c) for p, c in zip(tail, cand, strict=True)):
            return schema
    return None


def comments(text: str) -> dict[str, str]:
    """Dotted path -> the `# --` description written above it (continuation lines start with `#` too)."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and pending is not None:
            pending.append(stripped[1:].strip())
            continue
        match = re.match(r"^( *)([A-Za-z0-9_.-]+):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        if pending is not None:
            out[".".join(k for _, k in stack)] = " ".join(pending)
            pending = None
    return out


def _schema(value: Any, path: str, docs: dict[str, str]) -> dict[str, Any]:
    constraint = _constraint(path) if path else None
    if isinstance(value, dict) and (value or constraint is None) and path not in docs:
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {k: _schema(v, f"{path}.{k}" if path else k, docs) for k, v in value.items()},
        }
    if isinstance(value, bool):
        schema: dict[str, Any] = {"type": "boolean"}
    elif isinstance(value, int):
        schema = {"type": "integer"}
    elif isinstance(value, float):
        schema = {"type": "number"}
    elif isinstance(value, list):
        schema = {"type": "array", "items": {"type": "string"}}
    elif isinstance(value, dict):
        schema = dict(_STRING_MAP)
    else:
        schema = {"type": "string"}
    if constraint:
        schema = {**schema, **constraint}
    if path in docs:
        schema["description"] = docs[path]
    return schema


def leaves(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Documented leaves: scalars, lists, and maps that are values in their own right (labels, selectors)."""
    if isinstance(value, dict) and value and _constraint(path) is None:
        return [item for k, v in value.items() for item in leaves(v, f"{path}.{k}" if path else k)]
    return [(path, value)]


def _type(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", list: "list", dict: "object"}.get(type(value), "string")


def render(values_text: str) -> tuple[str, list[str]]:
    """(schema JSON, missing descriptions) for values.yaml's text."""
    values = yaml.safe_load(values_text)
    docs = comments(values_text)
    missing = [p for p, _ in leaves(values) if p not in docs]
    schema = {"$schema": "https://json-schema.org/draft-07/schema#", "title": "facegate chart values"}
    schema.update(_schema(values, "", docs))
    return json.dumps(schema, indent=2) + "\n", missing


def table(values_text: str) -> str:
    """The Markdown values table (key, type, default, description) for the chart README."""
    values = yaml.safe_load(values_text)
    docs = comments(values_text)
    rows = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for path, value in leaves(values):
        default = json.dumps(value, separators=(",", ":")).replace("|", "\\|")
        description = docs.get(path, "").replace("|", "\\|")
        rows.append(f"| `{path}` | {_type(value)} | `{default}` | {description} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, verify) values.schema.json and the README table; 1 when stale or undocumented."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail instead of writing when a file is stale")
    parser.add_argument("--chart", type=Path, default=CHART)
    args = parser.parse_args(argv)
    values_text = (args.chart / "values.yaml").read_text()
    schema, missing = render(values_text)
    if missing:
        print("values without a `# --` comment: " + ", ".join(missing), file=sys.stderr)
        return 1
    readme_path = args.chart / "README.md"
    readme = readme_path.read_text()
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    new_readme = f"{head}{START}\n{table(values_text)}\n{END}{tail}"
    targets = {args.chart / "values.schema.json": schema, readme_path: new_readme}
    stale = [p for p, text in targets.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path} is stale: run python tools/validate/chart_docs.py", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(targets[path])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
