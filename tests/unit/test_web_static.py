"""The kiosk and console files shipped in the package: present, self-contained, and CSP-clean (no browser needed)."""

from __future__ import annotations

import re

import pytest

from facegate.serve.web import CONTENT_SECURITY_POLICY, PAGES, STATIC_DIR, _files, security_headers

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("page", PAGES)
def test_each_page_has_its_files_and_loads_nothing_from_elsewhere(page: str) -> None:
    files = _files(page)
    assert {"index.html", "api.js", "camera.js", "base.css", f"{page}.js", f"{page}.css"} <= set(files)
    for name, path in files.items():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://", text), f"{name} names another origin"
        if name.endswith(".html"):
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), f"inline script in {name}"
            assert not re.search(r"\son[a-z]+\s*=", text), f"inline event handler in {name}"
            assert not re.search(r"\sstyle\s*=", text), f"inline style in {name}"
        if name.endswith(".js"):
            assert "eval(" not in text and "new Function" not in text and "innerHTML" not in text, name


def test_only_page_files_are_servable() -> None:
    served = {p for page in PAGES for p in _files(page).values()}
    assert all(p.is_relative_to(STATIC_DIR) for p in served)
    assert all(p.suffix in {".html", ".js", ".css", ".svg", ".ico"} for p in served)


def test_security_headers() -> None:
    h = security_headers()
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY and "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    assert h["X-Content-Type-Options"] == "nosniff" and h["Referrer-Policy"] == "no-referrer"
    assert "camera=(self)" in h["Permissions-Policy"] and "microphone=()" in h["Permissions-Policy"]
