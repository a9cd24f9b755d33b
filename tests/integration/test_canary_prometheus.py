"""Canary analysis against a real Prometheus scraping real `facegate serve` processes, and the laptop canary.

One module-scoped setup: a gallery with four students enrolled for three model versions (the same SFace weights):
``fg-v1`` the champion, ``fg-v2`` a healthy challenger, ``fg-v3`` a faulty one whose threshold rejects everyone.
Each version is served by its own process on 127.0.0.1; Debian's Prometheus scrapes all three every second; the
same check-ins are sent to each. The healthy canary must be promoted and the faulty one rolled back, from PromQL
and from a direct scrape alike.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from facegate.rollout import canary
from facegate.rollout.kserve import RolloutError
from facegate.rollout.procs import ServeProcess
from facegate.serve.gallery import Gallery, KeyRing
from tests.integration.promserver import PROMETHEUS, run_prometheus

pytestmark = pytest.mark.integration

PER_VERSION = 20
# Three servers share two cores with other work here: latency is judged loosely, the accept rate strictly.
POLICY = canary.CanaryPolicy(min_requests=12, max_p99_ratio=4.0, p99_slack_s=1.0)
CHECKINS = [("obama", "train/obama/obama2.jpg"), ("obama", "test/obama1.jpg"), ("biden", "train/biden/biden2.jpg"),
            ("kit", "train/kit_harington/john2.jpeg"), ("rose", "train/rose_leslie/img2.jpg")]  # fmt: skip
ENROL = {"obama": "train/obama/obama.jpg", "biden": "train/biden/biden.jpg",
         "kit": "train/kit_harington/john1.jpeg", "rose": "train/rose_leslie/img1.jpg"}  # fmt: skip


def _bundle(root: Path, version: str, threshold: float) -> Path:
    root.mkdir(parents=True)
    (root / "facegate.json").write_text(json.dumps({"model": "sface", "version": version, "threshold": threshold}))
    return root


@pytest.fixture(scope="module")
def setup(photos: Path, aligner: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from facegate.bundles import load_embedder

    if not Path(PROMETHEUS).is_file():
        pytest.skip("needs Prometheus (Debian package prometheus; .ci/run installs it)")
    tmp = tmp_path_factory.mktemp("canary")
    bundles = {
        "fg-v1": _bundle(tmp / "v1", "fg-v1", 0.36),
        "fg-v2": _bundle(tmp / "v2", "fg-v2", 0.36),
        "fg-v3": _bundle(tmp / "v3", "fg-v3", 0.99),  # rejects everyone
    }
    keys = KeyRing.generate("k1")
    url = f"sqlite:///{tmp / 'gallery.db'}"
    gallery = Gallery(url, KeyRing.from_env({"FACEGATE_GALLERY_KEYS": keys}))
    v1 = load_embedder(bundles["fg-v1"])
    for sid, rel in ENROL.items():
        gallery.enroll(sid, [(photos / rel).read_bytes()], v1, aligner)
    for version in ("fg-v2", "fg-v3"):
        assert gallery.reindex(load_embedder(bundles[version])) == len(ENROL)
    gallery.engine.dispose()
    checkin_dir = tmp / "checkins"  # the laptop canary's input: <student_id>/<photo>
    for i, (sid, rel) in enumerate(CHECKINS):
        (checkin_dir / sid).mkdir(parents=True, exist_ok=True)
        shutil.copy(photos / rel, checkin_dir / sid / f"{i}{Path(rel).suffix}")
    (checkin_dir / "stranger").mkdir()  # not enrolled: the laptop canary leaves them out
    shutil.copy(photos / "train" / "alex_lacamoire" / "img1.jpg", checkin_dir / "stranger" / "0.jpg")
    env = {"FACEGATE_GALLERY_KEYS": keys, "FACEGATE_HOME": str(tmp / "home")}
    checkins = [(sid, photos / rel) for sid, rel in CHECKINS]
    with contextlib.ExitStack() as stack:
        servers = {v: ServeProcess(b, url, env=env, log_path=tmp / f"{v}.log") for v, b in bundles.items()}
        for s in servers.values():
            stack.callback(s.stop)
            s.launch()  # the three load in parallel
        for s in servers.values():
            s.wait_ready()
        for s in servers.values():  # creates every labelled series before Prometheus takes its first sample
            assert canary.send_checkins(s.url, s.admin_key, checkins[:1]) == {"200": 1}
        targets = {s.metrics_url: {"facegate_model_version": v} for v, s in servers.items()}
        prom_url = stack.enter_context(run_prometheus(tmp, targets))  # returns once the three targets are up
        time.sleep(2.5)  # a baseline sample of every series, taken after the warm-up request
        started = time.time()
        with contextlib.ExitStack() as pools:
            from concurrent.futures import ThreadPoolExecutor

            pool = pools.enter_context(ThreadPoolExecutor(max_workers=3))
            futures = {
                v: pool.submit(canary.send_checkins, s.url, s.admin_key,
                               [checkins[i % len(checkins)] for i in range(PER_VERSION)], concurrency=2)
                for v, s in servers.items()
            }  # fmt: skip
            statuses = {v: f.result() for v, f in futures.items()}
        time.sleep(3.0)  # the last scrapes
        at = time.time()
        window = f"{math.ceil(at - started + 1.5)}s"
        yield {"servers": servers, "prometheus": prom_url, "window": window, "at": at, "statuses": statuses,
               "bundles": bundles, "gallery_url": url, "env": env, "checkin_dir": checkin_dir,
               "tmp": tmp}  # fmt: skip


def test_every_checkin_was_answered(setup: dict[str, Any]) -> None:
    assert setup["statuses"] == {v: {"200": PER_VERSION} for v in ("fg-v1", "fg-v2", "fg-v3")}


def test_prometheus_promotes_the_healthy_canary_and_rolls_back_the_faulty_one(setup: dict[str, Any]) -> None:
    source = canary.PrometheusSource(setup["prometheus"], window=setup["window"], at=setup["at"])
    v1, v2, v3 = (source.stats(v) for v in ("fg-v1", "fg-v2", "fg-v3"))
    for s in (v1, v2, v3):
        # increase() extrapolates to the window's edges; the traffic itself is PER_VERSION check-ins.
        assert PER_VERSION * 0.8 <= s.verifications <= PER_VERSION * 1.3, s
        assert s.error_rate == 0.0 and s.requests >= s.verifications * 0.9
    assert v1.accept_rate >= 0.8 and v3.accept_rate == 0.0
    healthy = canary.analyse(v1, v2, POLICY)
    assert healthy.decision == "promote", healthy.to_dict()
    faulty = canary.analyse(v1, v3, POLICY)
    assert faulty.decision == "rollback"
    # Same weights: latency, errors, retries and scores hold; only the accept rate shows the fault.
    assert [c.name for c in faulty.checks if not c.passed] == ["accept_rate"], faulty.to_dict()


def test_our_p99_is_prometheus_histogram_quantile(setup: dict[str, Any]) -> None:
    source = canary.PrometheusSource(setup["prometheus"], window=setup["window"], at=setup["at"])
    stats = source.stats("fg-v1")
    promql = (f'histogram_quantile(0.99, sum by (le) (increase(facegate_stage_seconds_bucket{{stage="total",'
              f'facegate_model_version="fg-v1"}}[{setup["window"]}])))')  # fmt: skip
    (_, theirs), *_ = source.query(promql)
    assert stats.p99_s == pytest.approx(theirs, rel=1e-9)
    assert 0 < stats.p99_s < 30


def test_direct_scrape_gives_the_same_verdicts_with_exact_counts(setup: dict[str, Any]) -> None:
    servers = setup["servers"]
    v1, v2, v3 = (canary.scrape(servers[v].metrics_url, v) for v in ("fg-v1", "fg-v2", "fg-v3"))
    for s in (v1, v2, v3):
        assert s.verifications == PER_VERSION + 1 and s.requests == PER_VERSION + 1  # + the warm-up check-in
    assert canary.analyse(v1, v2, POLICY).decision == "promote"
    assert canary.analyse(v1, v3, POLICY).decision == "rollback"


def test_local_canary_promotes_the_healthy_challenger(setup: dict[str, Any]) -> None:
    b = setup["bundles"]
    good = canary.local_canary(b["fg-v1"], b["fg-v2"], setup["checkin_dir"], setup["gallery_url"], 50,
                               policy=POLICY, requests=26, env=setup["env"])  # fmt: skip
    assert good.promote, good.to_dict()
    assert good.sent == {"champion": 13, "challenger": 13}
    assert good.statuses == {"champion": {"200": 13}, "challenger": {"200": 13}}  # no unknown_student 404s
    assert good.challenger.verifications == 13 and good.champion.model_version == "fg-v1"
    assert "| accept_rate |" in good.to_markdown()


def test_local_canary_without_templates_is_refused_before_serving(setup: dict[str, Any]) -> None:
    fresh = _bundle(setup["tmp"] / "v4", "fg-v4", 0.36)
    with pytest.raises(RolloutError) as err:
        canary.local_canary(setup["bundles"]["fg-v1"], fresh, setup["checkin_dir"], setup["gallery_url"], 10)
    assert err.value.code == "no_templates"


def test_local_canary_needs_enrolled_students(setup: dict[str, Any], tmp_path: Path, photos: Path) -> None:
    (tmp_path / "nobody").mkdir()
    shutil.copy(photos / "train" / "biden" / "biden.jpg", tmp_path / "nobody" / "0.jpg")
    b = setup["bundles"]
    with pytest.raises(canary.CanaryError) as err:
        canary.local_canary(b["fg-v1"], b["fg-v2"], tmp_path, setup["gallery_url"], 10)
    assert err.value.code == "no_enrolled_students"


def test_pipeline_analyze_step_rolls_back_the_faulty_registered_challenger(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from facegate.config import load_settings
    from facegate.registry.models import register_bundle
    from facegate.rollout.steps import analyze

    home = setup["tmp"] / "registry-home"
    monkeypatch.setenv("FACEGATE_GALLERY_KEYS", setup["env"]["FACEGATE_GALLERY_KEYS"])  # the pipeline pod's Secret
    champion = register_bundle(setup["bundles"]["fg-v1"], alias="champion", home=home)
    challenger = register_bundle(setup["bundles"]["fg-v3"], alias="challenger", home=home)
    settings = load_settings(overrides={"home": str(home), "serve.gallery_url": setup["gallery_url"]}, env={})
    first = analyze(champion=None, challenger=challenger, percent=10, target="local", photos_dir=None,
                    settings=settings)  # fmt: skip
    assert first["decision"] == "promote"  # nothing serves yet
    out = analyze(champion=champion, challenger=challenger, percent=50, target="local",
                  photos_dir=str(setup["checkin_dir"]), settings=settings, policy=POLICY)  # fmt: skip
    assert out["decision"] == "rollback" and out["reasons"][0].startswith("accept_rate")
    assert out["numbers"]["canary_promote"] == 0.0 and out["numbers"]["canary_challenger_accept_rate"] == 0.0
    assert "| accept_rate |" in out["markdown"] and "FAIL" in out["markdown"]
