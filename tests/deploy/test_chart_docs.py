"""The chart's values documentation and schema are generated from values.yaml and stay strict."""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

SPEC = importlib.util.spec_from_file_location("chart_docs", REPO / "tools" / "validate" / "chart_docs.py")
assert SPEC and SPEC.loader
chart_docs = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(chart_docs)
CHART = REPO / "helm" / "facegate"


def _objects(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if schema.get("type") == "object" and "properties" in schema:
        found.append((path, schema))
        for key, sub in schema["properties"].items():
            found += _objects(sub, f"{path}.{key}" if path else key)
    return found


def test_committed_schema_and_table_are_current() -> None:
    assert chart_docs.main(["--check"]) == 0, "run: python tools/validate/chart_docs.py"


def test_every_object_rejects_unknown_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    objects = _objects(schema)
    assert len(objects) > 20
    for path, obj in objects:
        assert obj["additionalProperties"] is False, path or "<root>"


def test_every_value_has_a_description() -> None:
    text = (CHART / "values.yaml").read_text()
    _, missing = chart_docs.render(text)
    assert missing == []
    assert "| `verifier.canaryTrafficPercent` | int | `100` |" in (CHART / "README.md").read_text()


def test_a_value_without_comment_is_reported() -> None:
    text = (CHART / "values.yaml").read_text().replace("    # -- Scrape interval.\n", "")
    _, missing = chart_docs.render(text)
    assert missing == ["metrics.serviceMonitor.interval"]
