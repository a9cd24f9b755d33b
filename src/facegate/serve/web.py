"""The kiosk page (``/kiosk/``) and the proctor console (``/console/``): static files and their security headers.

Both pages are plain HTML, CSS and JavaScript modules shipped inside the package (``facegate/serve/static``): no
CDN, no build step, nothing fetched from another origin, so they work on an exam room's LAN. They need no key to
load; what they do needs one (the kiosk key for ``/v2/models/verifier/infer``, an admin key for ``/admin/v1``), sent
by the page in the ``Authorization`` header, never in a URL.

Every page and asset is answered with a strict Content-Security-Policy (``default-src 'self'``, no inline script or
style, ``frame-ancestors 'none'``), ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` and a
``Permissions-Policy`` that allows the camera to these pages (same origin) and nothing else.

The console also needs two read-only admin routes that the admin API does not have: today's decision counters by
reason (from the audit table, so they are the same on every replica, unlike one replica's ``/metrics``) and the
audit log paged by a cursor.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from facegate.serve.gallery import AuditEntry

if TYPE_CHECKING:
    from facegate.serve.models import Runtime

__all__ = ["CONTENT_SECURITY_POLICY", "PAGES", "STATIC_DIR", "install_web", "security_headers"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The pages, by URL prefix (each a folder of ``STATIC_DIR``).
PAGES = ("kiosk", "console")
#: Content types of the files the pages are made of; anything else in the folders is not served.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "media-src 'self'",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",  # forms are handled by script; none may navigate anywhere
        "frame-ancestors 'none'",
    )
)
#: The camera for these pages only (and only from this origin); every other powerful feature is off.
PERMISSIONS_POLICY = (
    "camera=(self), microphone=(), geolocation=(), payment=(), usb=(), serial=(), bluetooth=(), "
    "display-capture=(), fullscreen=(self)"
)


def security_headers() -> dict[str, str]:
    """The headers every page and asset of the kiosk and the console is answered with."""
    return {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",  # for browsers that predate frame-ancestors
        "Permissions-Policy": PERMISSIONS_POLICY,
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        # The pages change with the package; a kiosk must never keep running yesterday's script.
        "Cache-Control": "no-cache",
    }


def _files(page: str) -> dict[str, Path]:
    """The servable files of one page (and of ``common``), by URL name, found once at start-up.

    A fixed table, not a path taken from the URL: nothing outside these folders can be reached, whatever the path.
    """
    out: dict[str, Path] = {}
    for folder in (STATIC_DIR / "common", STATIC_DIR / page):
        if folder.is_dir():
            for f in sorted(folder.iterdir()):
                if f.is_file() and f.suffix in CONTENT_TYPES:
                    out[f.name] = f
    return out


def _page_router(page: str) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    files = _files(page)
    headers = security_headers()

    def answer(name: str) -> Response:
        path = files.get(name)
        if path is None:
            return JSONResponse({"error": "no such file", "code": "not_found"}, status_code=404, headers=headers)
        return FileResponse(path, media_type=CONTENT_TYPES[path.suffix], headers=headers)

    @router.get(f"/{page}")
    async def to_index() -> Response:
        return RedirectResponse(f"/{page}/", status_code=308, headers=headers)

    @router.get(f"/{page}/")
    async def index() -> Response:
        return answer("index.html")

    @router.get(f"/{page}/{{name}}")
    async def asset(name: str) -> Response:
        return answer(name)

    return router


def _today_start(now: dt.datetime | None = None) -> dt.datetime:
    now = now or dt.datetime.now(dt.UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def decision_counters(runtime: Runtime, now: dt.datetime | None = None) -> dict[str, Any]:
    """Today's (UTC) verification decisions by decision and reason, from the audit table.

    The audit table is shared by every replica, so this is the whole service's day, not one process's counters.
    """
    since = _today_start(now)
    with Session(runtime.gallery.engine) as session:
        rows = session.execute(
            select(AuditEntry.decision, AuditEntry.detail, func.count())
            .where(AuditEntry.action == "verify", AuditEntry.at >= since)
            .group_by(AuditEntry.decision, AuditEntry.detail)
        ).all()
    by_reason: dict[str, int] = {}
    by_decision: dict[str, int] = {}
    for decision, detail, n in rows:
        reason = (detail or {}).get("reason") or "unknown"
        by_reason[reason] = by_reason.get(reason, 0) + int(n)
        by_decision[str(decision)] = by_decision.get(str(decision), 0) + int(n)
    return {
        "since": since.isoformat(),
        "model_version": runtime.embedder.version,
        "total": sum(by_decision.values()),
        "by_decision": dict(sorted(by_decision.items())),
        "by_reason": dict(sorted(by_reason.items())),
    }


def audit_page(runtime: Runtime, before: int | None = None, limit: int = 20) -> dict[str, Any]:
    """One page of the audit log, newest first, and the cursor of the next (older) page (``None`` at the end).

    Args:
        runtime: The serving runtime (its gallery database).
        before: Only entries with a smaller id (the ``next`` of the previous page); newest when omitted.
        limit: Entries per page (1..200).
    """
    limit = max(1, min(limit, 200))
    rows = runtime.gallery.audit(limit + 1, before=before)  # one more than shown: is there an older page?
    keep = ("id", "at", "action", "kiosk", "student_id", "decision", "score", "model_version")
    entries = [
        {**{k: r[k] for k in keep}, "reason": r["detail"].get("reason") if isinstance(r["detail"], dict) else None}
        for r in rows[:limit]
    ]
    return {"entries": entries, "next": entries[-1]["id"] if len(rows) > limit else None}


def _console_admin_router(runtime: Runtime) -> APIRouter:
    """Read-only admin routes for the console (under ``/admin/v1``, so the gatekeeper asks for an admin key)."""
    router = APIRouter(prefix="/admin/v1", include_in_schema=False)

    @router.get("/counters")
    async def counters() -> Any:
        return await runtime.run(decision_counters, runtime)

    @router.get("/audit/page")
    async def audit(before: int | None = None, limit: int = 20) -> Any:
        return await runtime.run(audit_page, runtime, before, limit)

    @router.get("/covariates")
    async def covariates() -> Any:
        from facegate.serve.covariate_metrics import snapshot  # decisions per photo-covariate bin, this process

        return snapshot()

    return router


def install_web(app: FastAPI, runtime: Runtime) -> None:
    """Add the kiosk and console pages and the console's read-only admin routes to the service's app."""
    for page in PAGES:
        app.include_router(_page_router(page))
    app.include_router(_console_admin_router(runtime))
