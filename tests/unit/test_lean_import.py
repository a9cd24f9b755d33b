"""``facegate serve`` imports KServe without its Kubernetes client, and the client still works when asked for."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

_PROBE = """
import json, sys
import facegate
before = {m for m in sys.modules if m == "kserve" or m.startswith(("kserve.", "kubernetes"))}
from facegate.serve.lean_import import import_kserve_for_serving
kserve = import_kserve_for_serving()
from facegate.serve.app import create_app  # the whole server imports with the stand-in in place
lean = {"kubernetes": "kubernetes" in sys.modules, "model": kserve.Model.__module__}
client = None
try:
    kserve.KServeClient(config_file="/nonexistent/kubeconfig")
except Exception as exc:  # the real client, failing on the missing kubeconfig, not the stand-in
    client = type(exc).__module__ + "." + type(exc).__name__
print(json.dumps({"before": sorted(before), **lean, "client_error": client,
                  "kubernetes_after_use": "kubernetes" in sys.modules,
                  "real_module": not getattr(sys.modules["kserve.api.kserve_client"], "_facegate_stand_in", False)}))
"""


def test_serving_imports_kserve_without_kubernetes_and_the_client_loads_on_use() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"] == []  # import facegate imports neither KServe nor the Kubernetes client
    assert got["kubernetes"] is False and got["model"] == "kserve.model"
    assert got["client_error"] is not None and not got["client_error"].startswith("facegate")
    assert got["kubernetes_after_use"] is True and got["real_module"] is True
