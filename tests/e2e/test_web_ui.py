"""The kiosk and the proctor console in a real Chromium (Debian's), against `facegate serve` on 127.0.0.1.

Chromium's camera is a fake device that plays a y4m file made here from a real photo in ../shared (or an empty
grey frame), so the whole path runs: getUserMedia -> canvas JPEG -> v2 infer -> YuNet + SFace -> decision -> page.
One server per module, one Chromium per camera file; every request the browser makes is recorded and must stay on
the server's origin.

Screenshots go to ``FACEGATE_SCREENSHOT_DIR`` when set (the README's are made with
``FACEGATE_SCREENSHOT_DIR=docs/screenshots .venv/bin/pytest tests/e2e/test_web_ui.py``), else to a temporary folder.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from facegate.serve.gallery import KeyRing

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("FACEGATE_CHROMIUM", "/usr/bin/chromium")
ADMIN = secrets.token_urlsafe(24)  # made up per run, never a literal in the source
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_y4m(path: Path, bgr: np.ndarray, width: int = 640) -> Path:
    """A one-frame y4m (4:2:0) of an image, scaled to ``width``; Chromium's fake camera loops it."""
    h = round(bgr.shape[0] * width / bgr.shape[1] / 2) * 2
    frame = cv2.resize(bgr, (width, h), interpolation=cv2.INTER_AREA)
    yuv = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420)
    path.write_bytes(f"YUV4MPEG2 W{width} H{h} F30:1 Ip A1:1 C420jpeg\nFRAME\n".encode() + yuv.tobytes())
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Chromium at {CHROMIUM} (Debian package chromium; .ci/run installs it)")
    pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package (dev extra)")
    return CHROMIUM


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("FACEGATE_SCREENSHOT_DIR")
    out = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def server(photos: Path, chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`facegate serve` (SFace) with S1 = Obama and S2 = Biden enrolled, and a kiosk key."""
    tmp = tmp_path_factory.mktemp("web")
    port = _free_port()
    env = {
        **os.environ,
        "FACEGATE_HOME": str(tmp / "home"),
        "FACEGATE_GALLERY_KEYS": KeyRing.generate("k1"),
        "FACEGATE_ADMIN_KEY": ADMIN,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # One admin key drives every console test here; a proctor's console makes a handful of calls a minute.
        "FACEGATE_SERVE__RATE_BURST": "200",
    }
    log_path = tmp / "server.log"
    log = log_path.open("w")
    cmd = [sys.executable, "-m", "facegate", "serve", "--model", "sface", "--port", str(port), "--metrics-port", "0"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not become ready in 120 s"
            time.sleep(0.3)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        for sid, photo in (("S1", "train/obama/obama.jpg"), ("S2", "train/biden/biden.jpg")):
            body = {"photos": [base64.b64encode((photos / photo).read_bytes()).decode()]}
            r = httpx.put(f"{url}/admin/v1/students/{sid}", json=body, headers=admin, timeout=60)
            assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
        kiosk = httpx.post(url + "/admin/v1/keys/kiosk-web", headers=admin, timeout=10).json()["key"]
        yield {"url": url, "kiosk_key": kiosk, "log": log_path}
    finally:
        if proc.poll() is None:
            proc.terminate()  # only the process this fixture started, by its pid
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as p:
        yield p


def _launch(driver: Any, camera: Path, profile: Path) -> Any:
    # A fresh profile per browser; launch_persistent_context is how Playwright takes a user-data-dir.
    return driver.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        headless=True,
        args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={camera}"],
        viewport={"width": 1024, "height": 720},
        service_workers="block",
    )


class Browser:
    """One Chromium with one camera file, and the log of every request its pages made."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.requests: list[str] = []
        self.csp_violations: list[str] = []
        context.on("request", lambda req: self.requests.append(req.url))

    def page(self) -> Any:
        page = self.context.new_page()
        page.on(
            "console",
            lambda msg: self.csp_violations.append(msg.text) if "Content Security Policy" in msg.text else None,
        )
        return page


@contextlib.contextmanager
def _camera_browser(driver: Any, tmp: Path, name: str, frame: np.ndarray) -> Iterator[Browser]:
    ctx = _launch(driver, write_y4m(tmp / f"{name}.y4m", frame), tmp / "profile")
    try:
        yield Browser(ctx)
    finally:
        ctx.close()
        shutil.rmtree(tmp / "profile", ignore_errors=True)


@pytest.fixture(scope="module")
def face_browser(playwright_driver: Any, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Chromium whose camera shows Obama (a test photo, not the enrollment photo)."""
    frame = cv2.imread(str(photos / "test" / "obama1.jpg"))
    with _camera_browser(playwright_driver, tmp_path_factory.mktemp("chromium-face"), "face", frame) as browser:
        yield browser


@pytest.fixture(scope="module")
def empty_browser(playwright_driver: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Chromium whose camera shows an empty grey frame."""
    frame = np.full((480, 640, 3), 128, np.uint8)
    with _camera_browser(playwright_driver, tmp_path_factory.mktemp("chromium-empty"), "empty", frame) as browser:
        yield browser


def _poll(check: Any, seconds: float = 5.0) -> None:
    # Not page.wait_for_function: it evaluates a string, which the pages' CSP (rightly) forbids.
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def _kiosk(browser: Browser, server: dict[str, Any]) -> Any:
    """A kiosk page, provisioned on its setup screen by keyboard (as a proctor would) if it is not yet."""
    page = browser.page()
    page.goto(server["url"] + "/kiosk/")
    page.wait_for_selector("body[data-screen]")
    if page.is_visible("#setup-key"):  # first use of this browser's profile; the key then stays in its storage
        assert page.evaluate("document.activeElement.id") == "setup-key"
        page.keyboard.type(server["kiosk_key"])
        page.keyboard.press("Enter")
    page.wait_for_selector("#student-id", state="visible")
    return page


def _check_in(page: Any, student: str) -> str:
    """Type (scan) an ID and Enter, take the photo by keyboard, and wait for the result screen's kind."""
    page.wait_for_selector("#student-id", state="visible")
    assert page.evaluate("document.activeElement.id") == "student-id"
    page.keyboard.type(student)
    page.keyboard.press("Enter")
    page.wait_for_selector("#capture:enabled", state="visible", timeout=15000)
    assert page.evaluate("document.activeElement.id") == "capture"
    page.keyboard.press("Enter")
    page.wait_for_selector("#result-screen:not([hidden])", timeout=30000)
    return str(page.get_attribute("#result-screen", "data-result"))


def test_kiosk_accept_by_keyboard_only(face_browser: Browser, server: dict[str, Any], shots: Path) -> None:
    page = _kiosk(face_browser, server)
    assert _check_in(page, "S1") == "accept"
    assert "checked in" in page.inner_text("#result-title")
    assert "S1" in page.inner_text("#result-detail")
    # The result is announced to screen readers.
    _poll(lambda: "checked in" in page.inner_text("#announce"))
    assert page.get_attribute("#announce", "aria-live") == "assertive"
    page.screenshot(path=str(shots / "kiosk-accept.png"))
    # The key is in this device's storage only, never in a URL; no photo is stored.
    assert server["kiosk_key"] not in page.url
    assert all(server["kiosk_key"] not in u for u in face_browser.requests)
    stored = page.evaluate("Object.keys(localStorage)")
    assert stored == ["facegate.kioskKey"]
    assert page.evaluate("sessionStorage.length") == 0
    # Back to the ID screen by itself after a few seconds, focus in the ID field for the next scan.
    page.wait_for_selector("#id-screen:not([hidden])", timeout=12000)
    assert page.evaluate("document.activeElement.id") == "student-id"
    page.close()
    log = server["log"].read_text()
    assert server["kiosk_key"] not in log and ADMIN not in log


def test_kiosk_reject_for_another_person(face_browser: Browser, server: dict[str, Any], shots: Path) -> None:
    page = _kiosk(face_browser, server)
    page.fill("#student-id", "S2")  # Biden's ID in front of Obama's face
    page.click("#id-next")
    page.click("#capture:enabled", timeout=15000)
    page.wait_for_selector("#result-screen:not([hidden])", timeout=30000)
    assert page.get_attribute("#result-screen", "data-result") == "reject"
    text = page.inner_text("#result-screen")
    assert "see the proctor" in text
    assert not re.search(r"\d\.\d", text), "a reject must not show a score"
    page.screenshot(path=str(shots / "kiosk-reject.png"))
    page.click("#result-done")
    page.wait_for_selector("#id-screen:not([hidden])")
    page.close()


def test_kiosk_retry_for_an_empty_frame(empty_browser: Browser, server: dict[str, Any], shots: Path) -> None:
    page = _kiosk(empty_browser, server)
    assert _check_in(page, "S1") == "retry"
    assert "Look straight at the camera" in page.inner_text("#result-detail")
    page.screenshot(path=str(shots / "kiosk-retry.png"))
    page.keyboard.press("Enter")  # focus is on Done
    page.wait_for_selector("#id-screen:not([hidden])")
    page.close()


def test_kiosk_network_error_is_not_a_reject(face_browser: Browser, server: dict[str, Any]) -> None:
    page = _kiosk(face_browser, server)
    page.route("**/v2/models/verifier/infer", lambda route: route.abort("connectionrefused"))
    assert _check_in(page, "S1") == "error"
    assert "No connection" in page.inner_text("#result-title")
    page.close()


def test_kiosk_request_timeout_has_a_clear_message(face_browser: Browser, server: dict[str, Any]) -> None:
    page = _kiosk(face_browser, server)
    page.clock.install()  # the page's timers run on a clock the test moves, so 15 s pass at once
    page.route("**/v2/models/verifier/infer", lambda route: None)  # the verifier never answers
    page.keyboard.type("S1")
    page.keyboard.press("Enter")
    page.wait_for_selector("#capture:enabled", state="visible", timeout=15000)
    page.keyboard.press("Enter")
    page.wait_for_selector("#busy-screen:not([hidden])")
    page.clock.run_for(16_000)
    page.wait_for_selector("#result-screen:not([hidden])", timeout=10000)
    assert page.get_attribute("#result-screen", "data-result") == "error"
    assert "took too long" in page.inner_text("#result-title")
    page.close()


def test_kiosk_shows_a_presentation_attack_as_see_the_proctor(face_browser: Browser, server: dict[str, Any]) -> None:
    # The verifier's answer for a spoof with liveness on (the server side: tests/integration/test_liveness.py).
    outputs = {"decision": "reject", "reason": "presentation_attack", "message": "the liveness check did not pass",
               "model_version": "v", "score": -1.0, "threshold": 0.36}  # fmt: skip
    body = {"outputs": [{"name": k, "shape": [1], "datatype": "BYTES", "data": [v]} for k, v in outputs.items()]}
    page = _kiosk(face_browser, server)
    page.route("**/v2/models/verifier/infer", lambda route: route.fulfill(json=body))
    assert _check_in(page, "S1") == "reject"
    assert "see the proctor" in page.inner_text("#result-title")
    assert "liveness" not in page.inner_text("#result-screen")
    page.close()


def test_pages_send_strict_security_headers(server: dict[str, Any], chromium: str) -> None:
    for path in ("/kiosk/", "/kiosk/kiosk.js", "/kiosk/api.js", "/console/", "/console/console.js"):
        r = httpx.get(server["url"] + path, timeout=10)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert "camera=(self)" in r.headers["permissions-policy"]
    # No inline script or handler in the pages themselves (the CSP would block them anyway).
    for page in ("kiosk", "console"):
        html = httpx.get(f"{server['url']}/{page}/", timeout=10).text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
        assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
        assert "http://" not in html and "https://" not in html, "a reference to another origin"
    # Only the files shipped with the page are served; nothing else can be reached through the page routes.
    for path in ("/kiosk/../app.py", "/kiosk/%2e%2e%2fapp.py", "/kiosk/web.py", "/console/nothing.js"):
        assert httpx.get(server["url"] + path, timeout=10).status_code == 404, path


def test_csp_blocks_inline_script_in_the_browser(face_browser: Browser, server: dict[str, Any]) -> None:
    page = face_browser.page()
    page.goto(server["url"] + "/kiosk/")
    page.wait_for_selector("body[data-screen]")
    page.evaluate(
        """() => new Promise((resolve) => {
            document.addEventListener('securitypolicyviolation', () => resolve(), {once: true});
            const s = document.createElement('script');
            s.textContent = 'window.injected = true';
            document.body.appendChild(s);
            setTimeout(resolve, 2000);
        })"""
    )
    assert page.evaluate("window.injected === undefined")
    assert any("script-src" in v for v in face_browser.csp_violations)
    page.close()


# The console tests run after the kiosk tests in this module (pytest keeps file order).


def _console(browser: Browser, server: dict[str, Any]) -> Any:
    page = browser.page()
    page.goto(server["url"] + "/console/")
    page.wait_for_selector("#admin-key", state="visible")
    page.keyboard.type(ADMIN)  # the key field has focus
    page.keyboard.press("Enter")
    page.wait_for_selector("#workspace:not([hidden])")
    page.wait_for_selector("#student-table tbody tr")
    return page


def test_console_enrolls_from_the_camera_and_deletes_by_keyboard(
    face_browser: Browser, server: dict[str, Any], shots: Path
) -> None:
    page = _console(face_browser, server)
    assert page.evaluate("document.activeElement.id") == "enroll-id"
    page.keyboard.type("S3")
    page.click("#camera-start")
    page.wait_for_selector("#shot:enabled")
    for _ in range(3):
        page.click("#shot")
    _poll(lambda: page.inner_text("#shot-count").startswith("3 shots"))
    page.click("#enroll-submit")
    page.wait_for_selector("#enroll-result .ok-text", timeout=60000)
    assert "Enrolled S3: 3 photos accepted" in page.inner_text("#enroll-result")
    page.wait_for_selector("#student-table tr[data-student='S3']")
    # Today's counters come from the admin API (the kiosk tests above made decisions).
    page.click("#refresh")
    _poll(lambda: "match" in page.inner_text("#counters"))
    assert "sface" in page.inner_text("#model-version")
    page.screenshot(path=str(shots / "console.png"), full_page=True)
    # Delete by keyboard only: search, Tab to the row's Delete, Enter, confirm in the dialog.
    page.focus("#search")
    page.keyboard.type("S3")
    _poll(lambda: page.locator("#student-table tbody tr").count() == 1)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Delete S3"
    page.keyboard.press("Enter")
    page.wait_for_selector("#confirm[open]")
    assert page.evaluate("document.activeElement.id") == "confirm-cancel"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "confirm-delete"
    page.keyboard.press("Enter")
    page.wait_for_selector("#student-table tr[data-student='S3']", state="detached")
    assert not page.is_visible("#confirm")
    admin = {"Authorization": f"Bearer {ADMIN}"}
    listed = httpx.get(server["url"] + "/admin/v1/students", headers=admin, timeout=10).json()["students"]
    assert "S3" not in [s["student_id"] for s in listed]
    # The audit log shows the enrollment and the deletion.
    page.wait_for_selector("#audit-table tbody tr")
    audit = page.inner_text("#audit-table")
    assert "delete" in audit and "S3" in audit
    page.close()


def test_console_shows_each_refused_upload_with_its_reason(
    face_browser: Browser, server: dict[str, Any], photos: Path, tmp_path: Path
) -> None:
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((240, 320, 3), 128, np.uint8))
    page = _console(face_browser, server)
    page.fill("#enroll-id", "S4")
    page.set_input_files("#enroll-files", [str(photos / "train" / "obama" / "obama.jpg"), str(grey)])
    page.click("#enroll-submit")
    page.wait_for_selector("#enroll-result .ok-text", timeout=60000)
    text = page.inner_text("#enroll-result")
    assert "1 photo accepted" in text and "Photo 2 refused: no_face" in text
    page.close()


def test_console_refuses_a_kiosk_key_and_pages_the_audit(face_browser: Browser, server: dict[str, Any]) -> None:
    page = face_browser.page()
    page.goto(server["url"] + "/console/")
    page.fill("#admin-key", server["kiosk_key"])
    page.press("#admin-key", "Enter")
    page.wait_for_selector("#login-error:has-text('not an admin key')")
    assert page.is_hidden("#workspace")
    page.close()
    admin = {"Authorization": f"Bearer {ADMIN}"}
    first = httpx.get(server["url"] + "/admin/v1/audit/page?limit=1", headers=admin, timeout=10).json()
    assert len(first["entries"]) == 1 and first["next"] is not None
    second = httpx.get(
        server["url"] + f"/admin/v1/audit/page?limit=1&before={first['next']}", headers=admin, timeout=10
    ).json()
    assert max(e["id"] for e in second["entries"]) < min(e["id"] for e in first["entries"])
    kiosk = {"Authorization": f"Bearer {server['kiosk_key']}"}
    assert httpx.get(server["url"] + "/admin/v1/counters", headers=kiosk, timeout=10).status_code == 403
    counters = httpx.get(server["url"] + "/admin/v1/counters", headers=admin, timeout=10)
    assert counters.status_code == 200, counters.text
    counters = counters.json()
    assert counters["by_reason"].get("match", 0) >= 1 and counters["by_reason"].get("no_face", 0) >= 1


def test_no_request_leaves_the_origin(face_browser: Browser, empty_browser: Browser, server: dict[str, Any]) -> None:
    # Runs after the kiosk tests: every request those pages made, taken from the browsers' own request logs.
    seen = face_browser.requests + empty_browser.requests
    assert any(u.endswith("/v2/models/verifier/infer") for u in seen)
    foreign = [u for u in seen if not u.startswith(server["url"] + "/")]
    assert foreign == []
