"""Every dashboard panel's PromQL, run against a real Prometheus scraping real `facegate serve` processes under load.

Two versions serve side by side as stable and canary: ``fg-v1`` with one request in flight per key (so a busy kiosk
gets 429), ``fg-v2`` with the liveness check at threshold 1.0 (every face is a presentation attack). Two kiosk keys
in two halls send check-ins, a photo without a face and an unknown student; Debian's Prometheus scrapes both every
second. A query with a syntax error, over a metric the server does not export, or that selects nothing fails.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from facegate.dashboards.panels import DASHBOARDS, promql
from facegate.rollout import canary
from facegate.rollout.procs import ServeProcess
from facegate.serve.auth import ApiKeyStore
from facegate.serve.gallery import Gallery, KeyRing
from tests.conftest import SHARED
from tests.integration.promserver import PROMETHEUS, run_prometheus

pytestmark = pytest.mark.integration

MINIFASNET = SHARED / "models" / "minifasnet"
CHECKINS = [("obama", "train/obama/obama2.jpg"), ("biden", "train/biden/biden2.jpg"), ("obama", "test/obama1.jpg")]
ENROL = {"obama": "train/obama/obama.jpg", "biden": "train/biden/biden.jpg"}
KIOSKS = ("hall-a.kiosk-1", "hall-b.kiosk-2")


def _bundle(root: Path, version: str) -> Path:
    root.mkdir(parents=True)
    (root / "facegate.json").write_text(json.dumps({"model": "sface", "version": version, "threshold": 0.36}))
    return root


def _blank_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (128, 128, 128)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def prom(photos: Path, aligner: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from facegate.bundles import load_embedder
    from facegate.faces.liveness import convert_from_photos

    if not Path(PROMETHEUS).is_file():
        pytest.skip("needs Prometheus (Debian package prometheus; .ci/run installs it)")
    if not MINIFASNET.is_dir():
        pytest.skip(f"needs the MiniFASNet weights in {MINIFASNET} (../shared) for presentation attacks")
    tmp = tmp_path_factory.mktemp("dashboards")
    liveness = tmp / "liveness"
    convert_from_photos(MINIFASNET, liveness, photos / "train")
    keys = KeyRing.generate("k1")
    url = f"sqlite:///{tmp / 'gallery.db'}"
    gallery = Gallery(url, KeyRing.from_env({"FACEGATE_GALLERY_KEYS": keys}))
    bundles = {"fg-v1": _bundle(tmp / "v1", "fg-v1"), "fg-v2": _bundle(tmp / "v2", "fg-v2")}
    for sid, rel in ENROL.items():
        gallery.enroll(sid, [(photos / rel).read_bytes()], load_embedder(bundles["fg-v1"]), aligner)
    gallery.reindex(load_embedder(bundles["fg-v2"]))
    gallery.engine.dispose()
    store = ApiKeyStore.from_url(url)
    kiosk_keys = {name: store.create(name) for name in KIOSKS}
    store.engine.dispose()
    base = {"FACEGATE_GALLERY_KEYS": keys, "FACEGATE_HOME": str(tmp / "home")}
    env = {
        "fg-v1": {**base, "FACEGATE_SERVE__MAX_INFLIGHT_PER_KEY": "1"},
        "fg-v2": {**base, "FACEGATE_SERVE__LIVENESS": "true", "FACEGATE_SERVE__LIVENESS_MODEL": str(liveness),
                  "FACEGATE_SERVE__LIVENESS_THRESHOLD": "1.0"},
    }  # fmt: skip
    checkins = [(sid, photos / rel) for sid, rel in CHECKINS]
    (tmp / "noface.jpg").write_bytes(_blank_jpeg())
    with contextlib.ExitStack() as stack:
        # A generous start: the two servers load at once, on a shared machine (2 cores here).
        servers = {v: ServeProcess(b, url, env=env[v], log_path=tmp / f"{v}.log", start_timeout_s=300)
                   for v, b in bundles.items()}  # fmt: skip
        for s in servers.values():
            stack.callback(s.stop)
            s.launch()
        for s in servers.values():
            s.wait_ready()
        # Every (hall, kiosk, decision) series the traffic moves exists before the baseline scrape: a counter born
        # between two scrapes has no earlier sample, so rate() reads all of a fast hall's check-ins as 0.
        for s in servers.values():
            for kiosk in KIOSKS:
                canary.send_checkins(s.url, kiosk_keys[kiosk], checkins[:1])
        targets = {s.metrics_url: {"facegate_model_version": v} for v, s in servers.items()}
        prom_url = stack.enter_context(run_prometheus(tmp, targets))
        time.sleep(2.5)  # a baseline sample of every series
        started = time.time()
        jobs = [
            (servers["fg-v1"].url, kiosk_keys[KIOSKS[0]], checkins * 2, 3),  # 3 at once on 1 slot: 429s
            (servers["fg-v1"].url, kiosk_keys[KIOSKS[1]], checkins * 2 + [("obama", tmp / "noface.jpg")], 1),
            (servers["fg-v2"].url, kiosk_keys[KIOSKS[1]], checkins * 2, 1),
        ]  # all presentation attacks
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            statuses = list(pool.map(lambda j: canary.send_checkins(j[0], j[1], j[2], concurrency=j[3]), jobs))
        # After the rest: kiosk-2's one slot on fg-v1 is free again, so this is answered 404, not 429.
        unknown = [("nobody", photos / CHECKINS[0][1])]
        statuses.append(canary.send_checkins(servers["fg-v1"].url, kiosk_keys[KIOSKS[1]], unknown))
        time.sleep(3.0)  # the last scrapes
        at = time.time()
        yield {"url": prom_url, "at": at, "window": f"{math.ceil(at - started + 1.5)}s", "statuses": statuses,
               "started": started}  # fmt: skip


def _query(prom: dict[str, Any], expr: str) -> list[dict[str, Any]]:
    q = promql(expr, rate_interval=prom["window"], range_=prom["window"])
    r = httpx.get(f"{prom['url']}/api/v1/query", params={"query": q, "time": f"{prom['at']:.3f}"}, timeout=30)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", f"{q}: {body.get('error')}"
    return list(body["data"]["result"])


def test_the_traffic_had_every_outcome_the_dashboards_show(prom: dict[str, Any]) -> None:
    busy, _, attacked, unknown = prom["statuses"]
    assert busy.get("429", 0) >= 1 and busy.get("200", 0) >= 1
    assert attacked == {"200": len(CHECKINS) * 2}
    assert set(unknown) == {"404"}


@pytest.mark.parametrize(
    ("board", "title", "expr"),
    [(d.uid, p.title, t.expr) for d in DASHBOARDS for p in d.panels for t in p.targets],
)
def test_every_panel_query_returns_data(prom: dict[str, Any], board: str, title: str, expr: str) -> None:
    result = _query(prom, expr)
    values = [float(s["value"][1]) for s in result]
    assert values, f"{board} / {title}: no series for {expr}"
    assert not all(math.isnan(v) for v in values), f"{board} / {title}: only NaN for {expr}"


def test_panels_tell_halls_kiosks_and_versions_apart(prom: dict[str, Any]) -> None:
    by_hall = {s["metric"]["hall"]: float(s["value"][1]) for s in _query(prom, DASHBOARDS[0].panels[0].targets[0].expr)}
    assert set(by_hall) == {"hall-a", "hall-b"} and all(v > 0 for v in by_hall.values())
    reasons = {s["metric"]["reason"] for s in _query(prom, DASHBOARDS[0].panels[2].targets[0].expr)}
    assert {"match", "no_face", "presentation_attack", "unknown_student"} <= reasons
    share = {s["metric"]["facegate_model_version"]: float(s["value"][1])
             for s in _query(prom, DASHBOARDS[1].panels[0].targets[0].expr)}  # fmt: skip
    assert set(share) == {"fg-v1", "fg-v2"} and math.isclose(sum(share.values()), 1.0, rel_tol=1e-6)
    refused = {s["metric"]["reason"] for s in _query(prom, DASHBOARDS[2].panels[2].targets[0].expr)}
    assert "key_busy" in refused


def test_snapshot_page_draws_every_panel(prom: dict[str, Any], tmp_path: Path) -> None:
    """The README's picture: the rollout dashboard's queries over the traffic, drawn as SVG, shot by Chromium."""
    from facegate.dashboards.snapshot import fetch_series, page_height, render_html, screenshot

    board = DASHBOARDS[1]
    series = fetch_series(prom["url"], board, start=prom["started"] - 3, end=prom["at"], step=1.0)
    assert [title for title, _ in series] == [p.title for p in board.panels]
    assert all(lines for _, lines in series), "a panel has no series"
    html = render_html(board, series)
    assert html.count("<polyline") + html.count("<rect class='bar'") >= len(board.panels)
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("needs Debian's chromium for the PNG")
    png = screenshot(html, tmp_path / "rollout.png", chromium=chromium, height=page_height(board))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "dashboard-rollout.png"
    if keep.parent.is_dir() and __import__("os").environ.get("FACEGATE_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(png, keep)


def test_every_alert_rule_parses_and_reads_exported_metrics(prom: dict[str, Any]) -> None:
    """The chart's PrometheusRule, on the same Prometheus: each expression parses and each metric it names exists."""
    import re
    import subprocess

    import yaml

    from tests.deploy.conftest import CHART, HELM

    if not HELM.exists():
        pytest.skip("needs .tools/bin/helm (make validate-tools) to render the PrometheusRule")
    out = subprocess.run([str(HELM), "template", "facegate", str(CHART)], check=True, capture_output=True, text=True)
    rules = next(d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "PrometheusRule")
    # Alerts and recording rules alike (the covariate alert reads series its recording rules make).
    exprs = {r.get("alert") or r["record"]: r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]}
    assert sum(1 for g in rules["spec"]["groups"] for r in g["rules"] if "alert" in r) >= 4
    for alert, expr in exprs.items():
        _query(prom, expr)  # parses (the comparison makes an empty result normal when nothing fires)
        for metric in set(re.findall(r"\bfacegate_\w+", expr)):
            assert _query(prom, f"count({metric})"), f"{alert} reads {metric}, which the server does not export"
