"""The facegate chart, on `helm template` output of each values file (the real helm from make validate-tools)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import CHART, VALUES_FILES, Objects, of_kind, one, pod_specs

pytestmark = pytest.mark.integration

Render = Callable[..., Objects]


@pytest.mark.parametrize("values", VALUES_FILES)
def test_each_values_file_renders_the_serving_stack(render: Render, values: str) -> None:
    objects = render(values)
    kinds = {o["kind"] for o in objects}
    assert {"InferenceService", "ServingRuntime", "Deployment", "StatefulSet", "NetworkPolicy"} <= kinds
    assert {"ServiceMonitor", "PrometheusRule", "PodDisruptionBudget"} <= kinds
    assert all(o["metadata"].get("namespace") == "facegate" for o in objects), "every object is namespaced"


def test_inferenceservice_is_knative_mode_on_the_chart_runtime(render: Render) -> None:
    isvc = one(render(), "InferenceService", "facegate-verifier")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "facegate"
    assert model["runtime"] == one(render(), "ServingRuntime")["metadata"]["name"] == "facegate-openvino"
    assert model["storageUri"].startswith("s3://")
    container = one(render(), "ServingRuntime")["spec"]["containers"][0]
    # tini forwards SIGTERM to the server, which drains in-flight check-ins (the image's smoke test proves it).
    assert container["command"] + container["args"][:3] == ["tini", "--", "facegate", "serve", "--model", "/mnt/models"]


@pytest.mark.parametrize("mode", ["Knative", "Serverless"])
def test_a_users_legacy_serverless_mode_is_rendered_as_knative(render: Render, helm: Any, mode: str) -> None:
    # KServe v0.20 keeps Serverless only as a deprecated alias: the chart writes the current name either way.
    isvc = one(render("values.yaml", f"verifier.deploymentMode={mode}"), "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"


def test_a_mode_without_canaries_is_refused_by_the_schema(helm: Any) -> None:
    import subprocess

    cmd = [str(helm), "template", "facegate", str(CHART), "--set", "verifier.deploymentMode=RawDeployment"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode != 0 and "deploymentMode" in out.stderr


@pytest.mark.parametrize("percent", [0, 25, 100])
def test_canary_percent_comes_from_values(render: Render, percent: int) -> None:
    isvc = one(render("values.yaml", f"verifier.canaryTrafficPercent={percent}"), "InferenceService")
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == percent


def test_chameleon_renders_v100_placement_canary_and_servicemonitor(render: Render) -> None:
    objects = render("values-chameleon.yaml")
    assert one(objects, "InferenceService")["spec"]["predictor"]["canaryTrafficPercent"] == 10
    job = one(objects, "Job")["spec"]["template"]["spec"]
    assert job["nodeSelector"] == {"facegate.io/pool": "gpu-v100"}
    assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"} in job[
        "tolerations"
    ]
    # The latency-bound verifier stays on the CPU pool, off the tainted GPU nodes.
    assert one(objects, "ServingRuntime")["spec"]["nodeSelector"] == {"facegate.io/pool": "cpu"}
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # The canary analysis tells versions apart by this target label (facegate.rollout.canary).
    relabel = monitor["spec"]["endpoints"][0]["relabelings"][0]
    assert relabel["targetLabel"] == "facegate_model_version"
    assert relabel["sourceLabels"] == ["__meta_kubernetes_pod_label_facegate_io_model_version"]


@pytest.mark.parametrize("values", VALUES_FILES)
def test_no_container_runs_as_root(render: Render, values: str) -> None:
    for name, spec in pod_specs(render(values)):
        pod_ctx = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") in (False, None), name
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            ctx = {**pod_ctx, **container.get("securityContext", {})}
            where = f"{name}/{container['name']}"
            assert ctx.get("runAsNonRoot") is True, where
            assert ctx.get("runAsUser", 0) != 0, where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            assert ctx["seccompProfile"]["type"] == "RuntimeDefault", where
    isvc = one(render(values), "InferenceService")
    assert isvc["spec"]["predictor"]["securityContext"]["runAsNonRoot"] is True


def _secret_refs(node: Any) -> list[str]:
    """Every Secret name a rendered object points at (secretKeyRef, secret volumes, ServiceAccount secrets)."""
    found: list[str] = []
    if isinstance(node, dict):
        if "secretKeyRef" in node:
            found.append(node["secretKeyRef"]["name"])
        if "secret" in node and isinstance(node["secret"], dict) and "secretName" in node["secret"]:
            found.append(node["secret"]["secretName"])
        for value in node.values():
            found += _secret_refs(value)
    elif isinstance(node, list):
        for value in node:
            found += _secret_refs(value)
    return found


def _existing_secret_values(values: dict[str, Any]) -> set[str]:
    names = set()
    for key, value in values.items():
        if key == "existingSecret" and value:
            names.add(value)
        elif isinstance(value, dict):
            names |= _existing_secret_values(value)
    return names


@pytest.mark.parametrize("values", VALUES_FILES)
def test_every_secret_comes_from_an_existing_secret_reference(render: Render, values: str) -> None:
    objects = render(values)
    assert not of_kind(objects, "Secret"), "the chart must never create a Secret"
    merged = yaml.safe_load((CHART / "values.yaml").read_text())
    declared = _existing_secret_values(merged)
    refs = set(_secret_refs(objects))
    for sa in of_kind(objects, "ServiceAccount"):
        refs |= {s["name"] for s in sa.get("secrets", [])}
    assert refs and refs <= declared, f"references outside existingSecret values: {refs - declared}"


def test_existing_secret_names_are_followed(render: Render) -> None:
    objects = render(
        "values.yaml", "secrets.gallery.existingSecret=exam-gallery", "secrets.adminKey.existingSecret=ops"
    )
    refs = set(_secret_refs(objects))
    assert {"exam-gallery", "ops"} <= refs and "facegate-gallery-db" not in refs


def _policy(objects: Objects, suffix: str) -> dict[str, Any]:
    return next(p for p in of_kind(objects, "NetworkPolicy") if p["metadata"]["name"].endswith(suffix))


def _labels_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In"
        ok = ok and labels.get(expr["key"]) in expr["values"]
    return ok


def _pod_labels(objects: Objects) -> dict[str, dict[str, str]]:
    """Component -> labels of its pods (the verifier's as KServe labels them)."""
    labels = {"verifier": {"serving.kserve.io/inferenceservice": "facegate-verifier"}}
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob"):
            template = (
                obj["spec"]["jobTemplate"]["spec"]["template"] if obj["kind"] == "CronJob" else obj["spec"]["template"]
            )
            pod = template["metadata"]["labels"]
            labels[pod["app.kubernetes.io/component"]] = pod
    return labels


@pytest.mark.parametrize("values", VALUES_FILES)
def test_network_policies_select_the_right_pods(render: Render, values: str) -> None:
    objects = render(values)
    pods = _pod_labels(objects)
    deny = _policy(objects, "-default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}

    # Kiosks (through the Knative ingress namespaces) reach the verifier, and no other policy admits them.
    verifier = _policy(objects, "-verifier")
    assert _labels_match(verifier["spec"]["podSelector"], pods["verifier"])
    ingress_ns = {"kourier-system", "knative-serving"}
    for policy in of_kind(objects, "NetworkPolicy"):
        admitted = {
            peer["namespaceSelector"]["matchLabels"].get("kubernetes.io/metadata.name")
            for rule in policy["spec"].get("ingress", [])
            for peer in rule.get("from", [])
            if "namespaceSelector" in peer
        }
        if policy is not verifier:
            assert not admitted & ingress_ns, f"{policy['metadata']['name']} admits the kiosk ingress path"

    # The gallery database admits only facegate's own pods, on 5432.
    postgres = _policy(objects, "-postgresql")
    assert _labels_match(postgres["spec"]["podSelector"], pods["postgresql"])
    (rule,) = postgres["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [5432]
    assert all("namespaceSelector" not in peer and "ipBlock" not in peer for peer in rule["from"])
    allowed = {c for c, pod in pods.items() if any(_labels_match(peer["podSelector"], pod) for peer in rule["from"])}
    assert allowed == {"verifier", "admin", "reindex", "mlflow", "purge", "backup"}

    # Metrics ports admit Prometheus's pods in its namespace only.
    for policy in (verifier, _policy(objects, "-admin")):
        metrics_rules = [r for r in policy["spec"]["ingress"] if {p["port"] for p in r["ports"]} == {8082}]
        assert len(metrics_rules) == 1
        (peer,) = metrics_rules[0]["from"]
        assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
        assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}


def test_prometheus_rules_cover_the_four_signals(render: Render) -> None:
    rules = one(render(), "PrometheusRule")["spec"]["groups"][0]["rules"]
    exprs = {r["alert"]: r["expr"] for r in rules}
    assert 'reason="no_face"' in exprs["FacegateNoFaceRateHigh"]
    assert "histogram_quantile(0.99" in exprs["FacegateLatencyP99High"]
    assert 'status=~"5.."' in exprs["FacegateHttp5xxRateHigh"]
    assert "by (model_version)" in exprs["FacegateScoreDrift"]
