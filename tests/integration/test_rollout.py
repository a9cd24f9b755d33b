"""KServe rollout objects: CRD validation, the template gate, the CLI's dry run, and server-side apply on the wire."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from typer.testing import CliRunner

from facegate.errors import FacegateError
from facegate.rollout import crds, kserve
from facegate.serve.gallery import Gallery, KeyRing
from tests.conftest import SHARED

pytestmark = pytest.mark.integration

KSERVE_CRDS = SHARED / "crds" / "kserve"


@pytest.fixture(scope="module")
def kserve_crds() -> Path:
    if not (KSERVE_CRDS / "serving.kserve.io_inferenceservices.yaml").is_file():
        pytest.skip(f"needs the KServe CRDs in {KSERVE_CRDS} (../shared beside the checkout; CI has it)")
    return KSERVE_CRDS


def test_canary_promote_rollback_objects_validate_against_the_kserve_crd(kserve_crds: Path) -> None:
    uri, version = "s3://facegate-models/bundles/7", "iresnet50-openvino-int8+7"
    canary = kserve.inference_service(uri, version, canary_percent=10)
    promoted = kserve.inference_service(uri, version)
    rolled_back = kserve.inference_service(uri, version, canary_percent=0)
    for obj in (canary, promoted, rolled_back):
        crds.validate(obj, kserve_crds)
        assert obj["apiVersion"] == "serving.kserve.io/v1beta1" and obj["kind"] == "InferenceService"
        assert obj["metadata"]["name"] == "facegate-verifier" and obj["metadata"]["namespace"] == "facegate"
        assert obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
        assert obj["metadata"]["annotations"][kserve.MODEL_VERSION_KEY] == version
        model = obj["spec"]["predictor"]["model"]
        assert model == {"modelFormat": {"name": "facegate"}, "runtime": "facegate-openvino", "storageUri": uri}
        # '+' is not allowed in a label value: the label is sanitised, the annotation exact.
        assert obj["spec"]["predictor"]["labels"][kserve.MODEL_VERSION_KEY] == "iresnet50-openvino-int8-7"
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"]
    assert rolled_back["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_validator_reports_unknown_fields_wrong_types_and_bad_metadata(kserve_crds: Path) -> None:
    obj = kserve.inference_service("s3://b/m", "v1", canary_percent=5)
    obj["spec"]["predictor"]["canaryTraficPercent"] = 5  # misspelt: the API server would prune it silently
    obj["spec"]["predictor"]["minReplicas"] = "one"  # (a field the Helm chart owns, still typed by the CRD)
    obj["metadata"]["labels"]["bad"] = "has space"
    obj["metadata"]["name"] = "Facegate_Verifier"
    with pytest.raises(crds.CrdValidationError) as err:
        crds.validate(obj, kserve_crds)
    text = " | ".join(err.value.errors)
    assert "'canaryTraficPercent' was unexpected" in text
    assert "spec.predictor.minReplicas: 'one' is not of type 'integer'" in text
    assert "metadata.labels.bad" in text and "metadata.name" in text
    assert len(err.value.errors) == 4
    with pytest.raises(crds.CrdValidationError) as unknown:
        crds.validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}, kserve_crds)
    assert unknown.value.code == "unknown_kind"


def test_model_version_label_is_always_a_valid_label_value() -> None:
    long = "x" * 80 + "+build/7"
    label = kserve.model_version_label(long)
    assert len(label) <= 63 and label != kserve.model_version_label(long + "b")
    assert kserve.model_version_label("-v1.2_") == "v1.2"
    assert kserve.model_version_label("@@@") == "unknown"


def test_canary_percent_out_of_range_is_refused() -> None:
    for p in (0, 100, 150):
        with pytest.raises(kserve.RolloutError) as err:
            kserve.canary("s3://b/m", "v1", p, gallery="sqlite://", dry_run=True)
        assert err.value.code == "bad_percent"


def _bundle(root: Path, version: str, threshold: float = 0.36) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "facegate.json").write_text(json.dumps({"model": "sface", "version": version, "threshold": threshold}))
    return root


@pytest.fixture
def gallery(tmp_path: Path, photos: Path, aligner: Any) -> Iterator[tuple[Gallery, str, Any]]:
    from facegate.bundles import load_embedder

    url = f"sqlite:///{tmp_path / 'gallery.db'}"
    keys = KeyRing.from_env({"FACEGATE_GALLERY_KEYS": KeyRing.generate("k1")})
    g = Gallery(url, keys)
    v1 = load_embedder(_bundle(tmp_path / "v1", "fg-v1"))
    g.enroll("S-1", [(photos / "train" / "obama" / "obama.jpg").read_bytes()], v1, aligner)
    yield g, url, aligner
    g.engine.dispose()


def test_a_canary_without_templates_is_refused_until_reindexed(gallery: Any, tmp_path: Path, photos: Path) -> None:
    from facegate.bundles import load_embedder

    g, _, aligner = gallery
    with pytest.raises(kserve.RolloutError) as err:
        kserve.canary("s3://b/v2", "fg-v2", 10, gallery=g, baseline_version="fg-v1", dry_run=True)
    assert err.value.code == "no_templates" and "gallery reindex" in err.value.message
    with pytest.raises(kserve.RolloutError):
        kserve.promote("s3://b/v2", "fg-v2", gallery=g, dry_run=True)
    v2 = load_embedder(_bundle(tmp_path / "v2", "fg-v2"))
    assert g.reindex(v2) == 1
    obj = kserve.canary("s3://b/v2", "fg-v2", 10, gallery=g, baseline_version="fg-v1", dry_run=True)
    assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 10
    # A student enrolled after the reindex has no fg-v2 template: the canary could not verify them.
    v1 = load_embedder(tmp_path / "v1")
    g.enroll("S-2", [(photos / "train" / "biden" / "biden.jpg").read_bytes()], v1, aligner)
    assert (g.template_count("fg-v1"), g.template_count("fg-v2")) == (2, 1)
    with pytest.raises(kserve.RolloutError) as partial:
        kserve.canary("s3://b/v2", "fg-v2", 10, gallery=g, baseline_version="fg-v1", dry_run=True)
    assert partial.value.code == "incomplete_templates"


def test_cli_dry_run_refuses_then_prints_a_valid_object(gallery: Any, tmp_path: Path, kserve_crds: Path) -> None:
    from facegate.bundles import load_embedder
    from facegate.cli import app

    g, url, _ = gallery
    runner = CliRunner()
    args = ["rollout", "canary", "--storage-uri", "s3://b/v2", "--model-version", "fg-v2", "--percent", "20",
            "--db", url, "--crds", str(kserve_crds), "--dry-run"]  # fmt: skip
    out = runner.invoke(app, args)
    assert out.exit_code == 2, out.output
    assert "[no_templates]" in out.output
    g.reindex(load_embedder(_bundle(tmp_path / "v2", "fg-v2")))
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    obj = yaml.safe_load(out.stdout)
    crds.validate(obj, kserve_crds)
    assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert obj["spec"]["predictor"]["model"]["storageUri"] == "s3://b/v2"
    out = runner.invoke(app, ["rollout", "promote", "--storage-uri", "s3://b/v2", "--model-version", "fg-v2",
                              "--db", url, "--dry-run"])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "canaryTrafficPercent" not in yaml.safe_load(out.stdout)["spec"]["predictor"]
    out = runner.invoke(app, ["rollout", "rollback", "--storage-uri", "s3://b/v2", "--model-version", "fg-v2",
                              "--dry-run"])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert yaml.safe_load(out.stdout)["spec"]["predictor"]["canaryTrafficPercent"] == 0
    out = runner.invoke(app, ["rollout", "canary", "--percent", "10", "--dry-run", "--db", url])
    assert out.exit_code == 2 and "[bad_usage]" in out.output


class _Recorder(BaseHTTPRequestHandler):
    """Answers like the API server for one InferenceService and records every request it gets."""

    seen: ClassVar[list[dict[str, Any]]] = []
    stored: ClassVar[dict[str, Any]] = {}

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        url = urlsplit(self.path)
        self.seen.append({"method": "PATCH", "path": url.path, "query": parse_qs(url.query),
                          "content_type": self.headers["Content-Type"], "body": body})  # fmt: skip
        type(self).stored = body
        self._reply(200, body)

    def do_GET(self) -> None:
        self.seen.append({"method": "GET", "path": self.path})
        if not self.stored:
            self._reply(404, {"kind": "Status", "code": 404})
            return
        status = {"conditions": [{"type": "Ready", "status": "True"}],
                  "components": {"predictor": {"latestRolledoutRevision": "facegate-verifier-predictor-00001",
                                               "latestCreatedRevision": "facegate-verifier-predictor-00002",
                                               "traffic": [{"revisionName": "facegate-verifier-predictor-00002",
                                                            "percent": 10, "tag": "latest"},
                                                           {"revisionName": "facegate-verifier-predictor-00001",
                                                            "percent": 90, "tag": "prev"}]}}}  # fmt: skip
        self._reply(200, {**self.stored, "status": status})

    def log_message(self, *args: Any) -> None:
        pass


def test_apply_is_a_server_side_apply_by_facegate_and_status_reads_traffic() -> None:
    from kubernetes import client

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        conf = client.Configuration()
        conf.host = f"http://127.0.0.1:{server.server_address[1]}"
        api = client.ApiClient(conf)
        with pytest.raises(kserve.RolloutError) as missing:
            kserve.get_status(api_client=api)
        assert missing.value.code == "not_deployed"
        obj = kserve.apply(kserve.inference_service("s3://b/v2", "fg-v2", canary_percent=10), api_client=api)
        patch = _Recorder.seen[-1]
        assert (
            patch["path"] == "/apis/serving.kserve.io/v1beta1/namespaces/facegate/inferenceservices/facegate-verifier"
        )
        assert patch["content_type"] == "application/apply-patch+yaml"
        assert patch["query"] == {"fieldManager": ["facegate"], "force": ["true"]}
        assert patch["body"]["spec"]["predictor"]["canaryTrafficPercent"] == 10
        assert obj == patch["body"]
        st = kserve.get_status(api_client=api)
        assert (st.model_version, st.canary_percent, st.ready) == ("fg-v2", 10, True)
        assert st.storage_uri == "s3://b/v2" and st.latest_rolled_out == "facegate-verifier-predictor-00001"
        assert st.traffic == {"facegate-verifier-predictor-00002": 10, "facegate-verifier-predictor-00001": 90}
        kserve.apply(kserve.inference_service("s3://b/v2", "fg-v2"), api_client=api)
        assert "canaryTrafficPercent" not in _Recorder.seen[-1]["body"]["spec"]["predictor"]
        api.close()
    finally:
        server.shutdown()
        server.server_close()


def test_a_serve_process_that_cannot_start_says_why_and_cleans_up(tmp_path: Path) -> None:
    from facegate.rollout.procs import ServeProcess

    env = {"FACEGATE_GALLERY_KEYS": KeyRing.generate("k1"), "FACEGATE_HOME": str(tmp_path)}
    proc = ServeProcess(tmp_path / "no-such-bundle", f"sqlite:///{tmp_path / 'g.db'}", env=env, start_timeout_s=60)
    with pytest.raises(FacegateError) as err:
        proc.start()
    assert err.value.code == "serve_failed" and "no-such-bundle" in err.value.message
    log = proc.log_path
    proc.stop()
    assert proc.proc is not None and proc.proc.returncode not in (None, 0)
    assert not log.exists()  # its temporary log is gone
