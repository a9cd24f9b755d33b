"""API keys and rate limits for the verifier service.

- **Keys** read ``fgk_<key id>.<secret>``: a 64-bit key id (not secret) and a 256-bit random secret, shown once at
  creation and stored as the SHA-256 of the whole key in the gallery database (``api_keys`` table), one per kiosk
  or administrator name. A random key of that entropy needs no slow password hash; the stored digest is useless to
  whoever reads the table. The active digests are held in memory and re-read every few seconds, so checking any
  key costs no database round trip, and that re-read bounds how long a revoked key keeps working. Keys issued
  before key ids existed (``fgk_<secret>``) keep working.
- **Roles**: ``kiosk`` may verify and embed; ``admin`` may also enroll, delete, list, reindex and read the audit log.
  ``FACEGATE_ADMIN_KEY`` (a Kubernetes Secret in the cluster) adds one bootstrap admin key that lives nowhere else.
- **Rate limits**: a token bucket per key name, so one misbehaving kiosk cannot starve the others.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from facegate.errors import FacegateError
from facegate.serve.gallery import ApiKey

__all__ = ["ADMIN_KEY_ENV", "ApiKeyStore", "AuthError", "Principal", "RateLimiter", "claimed_key_id", "hash_key"]

ADMIN_KEY_ENV = "FACEGATE_ADMIN_KEY"
KEY_PREFIX = "fgk_"
Role = Literal["kiosk", "admin"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KEY_ID = re.compile(r"[0-9a-f]{16}")


class AuthError(FacegateError):
    """A key operation was refused (bad name or role)."""

    code = "auth_error"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name (a kiosk id or an administrator) and role."""

    name: str
    role: Role


def hash_key(key: str) -> str:
    """Hex SHA-256 of an API key (what the database stores)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class ApiKeyStore:
    """API keys in the gallery database.

    Every active key's digest is held in memory and the table is re-read at most every ``cache_ttl_s``, so
    authenticating any key, good or bad, costs a dictionary lookup and not a database round trip. A valid key
    therefore never needs protecting from other clients' failures: it is checked first, always, on every replica
    and right after a restart.

    Args:
        engine: The gallery's SQLAlchemy engine (its ``api_keys`` table).
        cache_ttl_s: How often the key table is re-read; a revoked key stops working within this time.
        env: Environment holding ``FACEGATE_ADMIN_KEY`` (``os.environ`` by default).
        stale_limit_s: How long the last good copy of the table is used while the database cannot be read.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        cache_ttl_s: float = 5.0,
        env: dict[str, str] | None = None,
        stale_limit_s: float = 60.0,
    ) -> None:
        self.engine = engine
        ApiKey.__table__.create(engine, checkfirst=True)  # type: ignore[attr-defined]
        self.cache_ttl_s = cache_ttl_s
        self.stale_limit_s = stale_limit_s
        self._table: dict[str, Principal] = {}
        self._loaded_at: float | None = None
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._refreshing = threading.Event()
        self._generation = 0  # bumped by every create/revoke here, so an older read is never installed after it
        #: Called with the principals of each table read (the check-in counters start every kiosk's series at 0).
        self.on_reload: Callable[[Iterable[Principal]], None] | None = None
        bootstrap = (env if env is not None else os.environ).get(ADMIN_KEY_ENV, "")
        # Only the digest is kept: the key itself is not held in memory longer than this constructor.
        self._bootstrap = hash_key(bootstrap) if bootstrap else None

    @classmethod
    def from_url(cls, url: str) -> ApiKeyStore:
        """A store on the gallery database at ``url`` (no gallery encryption key needed)."""
        from facegate.serve.gallery import prepare_sqlite_path

        prepare_sqlite_path(url)
        return cls(create_engine(url, future=True, hide_parameters=True))

    def create(self, name: str, role: Role = "kiosk") -> str:
        """Create (or replace) the key for ``name``; returns the key, which is never stored or shown again.

        Keys read ``fgk_<key id>.<secret>``: the key id (16 hex digits) is not secret and lets the gatekeeper
        count failed guesses per claimed key as well as per address.
        """
        if not _NAME.match(name):
            raise AuthError("key name must be 1-64 letters, digits, '.', '_' or '-'", code="bad_key_name")
        if role not in ("kiosk", "admin"):
            raise AuthError("role must be 'kiosk' or 'admin'", code="bad_role")
        key = f"{KEY_PREFIX}{secrets.token_hex(8)}.{secrets.token_urlsafe(32)}"
        with Session(self.engine) as session, session.begin():
            row = session.get(ApiKey, name)
            if row is None:
                session.add(ApiKey(name=name, role=role, key_hash=hash_key(key)))
            else:
                row.role, row.key_hash, row.revoked_at = role, hash_key(key), None
                row.created_at = datetime.now(UTC)
        self._clear()
        return key

    def revoke(self, name: str) -> bool:
        """Revoke ``name``'s key; returns whether an active key existed."""
        with Session(self.engine) as session, session.begin():
            row = session.get(ApiKey, name)
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = datetime.now(UTC)
        self._clear()
        return True

    def list(self) -> list[dict[str, str | None]]:
        """Key names, roles and dates (never a key or a digest)."""
        with Session(self.engine) as session:
            return [
                {
                    "name": r.name,
                    "role": r.role,
                    "created_at": r.created_at.isoformat(),
                    "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
                }
                for r in session.scalars(select(ApiKey).order_by(ApiKey.name))
            ]

    def preload(self) -> None:
        """Read the key table now (before readiness), so the first request does not wait for that read."""
        self._snapshot()

    def fresh(self) -> bool:
        """Whether :meth:`authenticate` can answer from memory right now (no database read due).

        Past half its lifetime, the table is re-read in the background, so a steady stream of requests never
        waits for that read (and a revoked key still stops working within ``cache_ttl_s``).
        """
        loaded = self._loaded_at
        if loaded is None:
            return False
        age = time.monotonic() - loaded
        if age >= self.cache_ttl_s / 2 and not self._refreshing.is_set():
            self._refreshing.set()
            threading.Thread(target=self._refresh_behind, name="facegate-keys", daemon=True).start()
        return age < self.cache_ttl_s

    def _refresh_behind(self) -> None:
        try:
            with self._refresh_lock:
                self._reload()
        except Exception:  # the table stays as it was; the request path's own read reports a database that stays down
            logging.getLogger("facegate.serve").debug("background read of the key table failed", exc_info=True)
        finally:
            self._refreshing.clear()

    def authenticate(self, key: str | None) -> Principal | None:
        """The principal for a presented key, or ``None`` when it is missing, unknown or revoked.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: If the key table cannot be read and the last copy is too old.
        """
        digest = self._digest(key)
        if digest is None:
            return None
        if self._is_bootstrap(digest):
            return Principal("admin", "admin")
        return self._snapshot().get(digest)

    def _snapshot(self) -> dict[str, Principal]:
        """The digest -> principal table, re-read when older than the TTL (one reader at a time)."""
        if self.fresh():
            return self._table
        with self._refresh_lock:
            if self.fresh():  # another thread refreshed while this one waited
                return self._table
            try:
                return self._reload()
            except Exception:
                loaded = self._loaded_at
                if loaded is not None and time.monotonic() - loaded < self.stale_limit_s:
                    return self._table  # a database blip: keep serving with the last copy for a while
                raise

    def _reload(self) -> dict[str, Principal]:
        """Read the active keys and swap the table in (the caller holds the refresh lock)."""
        started = time.monotonic()  # the copy is as old as the read's start: a revocation during it is not in it
        generation = self._generation
        with Session(self.engine) as session:
            rows = session.execute(
                select(ApiKey.key_hash, ApiKey.name, ApiKey.role).where(ApiKey.revoked_at.is_(None))
            ).all()
        table = {h: Principal(n, "admin" if r == "admin" else "kiosk") for h, n, r in rows}
        with self._lock:
            if generation == self._generation:  # a key created or revoked meanwhile: this copy may predate it
                self._table, self._loaded_at = table, started
        if self.on_reload is not None:
            self.on_reload(table.values())
        return table

    @staticmethod
    def _digest(key: str | None) -> str | None:
        """The stored form of a presented key; ``None`` for a missing or oversized one."""
        return hash_key(key) if key and len(key) <= 256 else None

    def _is_bootstrap(self, digest: str) -> bool:
        return self._bootstrap is not None and hmac.compare_digest(digest, self._bootstrap)

    def _clear(self) -> None:
        with self._lock:
            self._loaded_at = None
            self._generation += 1


def claimed_key_id(key: str) -> str | None:
    """The key id a presented key claims (``fgk_<id>.<secret>``), or ``None`` for another shape.

    Only for counting failures per claimed key: it authenticates nothing.
    """
    if not key.startswith(KEY_PREFIX) or "." not in key:
        return None
    kid = key[len(KEY_PREFIX) :].partition(".")[0]
    return kid if _KEY_ID.fullmatch(kid) else None


class RateLimiter:
    """Token buckets by name: ``rate_per_minute`` sustained, ``burst`` at once.

    Args:
        rate_per_minute: Sustained requests per minute per name.
        burst: Bucket size (requests allowed back to back after a quiet period).
        clock: Time source (tests pass a fake one).
    """

    def __init__(
        self,
        rate_per_minute: float,
        burst: int,
        clock: Callable[[], float] | None = None,
        max_names: int = 100_000,
    ) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self._clock = clock or time.monotonic
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self.max_names = max_names

    def peek(self, name: str) -> float:
        """Seconds until ``name`` would get a token (0 when one is available), without taking it."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(name, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def acquire(self, name: str) -> float:
        """Take one token for ``name``; returns 0 when allowed, else the seconds until a token is available."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(name, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if len(self._buckets) >= self.max_names and name not in self._buckets:
                self._prune(now)
            if tokens >= 1.0:
                self._buckets[name] = (tokens - 1.0, now)
                return 0.0
            self._buckets[name] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled (they hold no state); if all are busy, forget them all.

        Names can come from clients (addresses, claimed key ids), so the table must not grow without bound.
        """
        full = [n for n, (t, last) in self._buckets.items() if t + (now - last) * self.rate >= self.burst]
        for n in full:
            del self._buckets[n]
        if len(self._buckets) >= self.max_names:
            self._buckets.clear()
