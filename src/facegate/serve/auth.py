"""API keys and rate limits for the verifier service.

- **Keys** are 256-bit random tokens (``fgk_...``) shown once at creation and stored as their SHA-256 in the
  gallery database (``api_keys`` table), one per kiosk or administrator name. A random key of that entropy needs no
  slow password hash; the stored digest is useless to whoever reads the table. Lookups are cached for a few seconds
  so a verify costs no database round trip, which bounds how long a revoked key keeps working.
- **Roles**: ``kiosk`` may verify and embed; ``admin`` may also enroll, delete, list, reindex and read the audit log.
  ``FACEGATE_ADMIN_KEY`` (a Kubernetes Secret in the cluster) adds one bootstrap admin key that lives nowhere else.
- **Rate limits**: a token bucket per key name, so one misbehaving kiosk cannot starve the others.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from facegate.errors import FacegateError
from facegate.serve.gallery import ApiKey

__all__ = ["ADMIN_KEY_ENV", "ApiKeyStore", "AuthError", "Principal", "RateLimiter", "hash_key"]

ADMIN_KEY_ENV = "FACEGATE_ADMIN_KEY"
KEY_PREFIX = "fgk_"
Role = Literal["kiosk", "admin"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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

    Args:
        engine: The gallery's SQLAlchemy engine (its ``api_keys`` table).
        cache_ttl_s: How long a lookup result is trusted; a revoked key stops working within this time.
        env: Environment holding ``FACEGATE_ADMIN_KEY`` (``os.environ`` by default).
    """

    def __init__(self, engine: Engine, *, cache_ttl_s: float = 5.0, env: dict[str, str] | None = None) -> None:
        self.engine = engine
        ApiKey.__table__.create(engine, checkfirst=True)  # type: ignore[attr-defined]
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._misses: dict[str, tuple[float, Principal | None]] = {}
        # Digests of keys that authenticated recently (-> when). Only consulted while a client address is throttled
        # for failed attempts: kiosks behind the same proxy or NAT as a guesser keep working.
        self._good: dict[str, float] = {}
        self._lock = threading.Lock()
        bootstrap = (env if env is not None else os.environ).get(ADMIN_KEY_ENV, "")
        # Only the digest is kept: the key itself is not held in memory longer than this constructor.
        self._bootstrap = hash_key(bootstrap) if bootstrap else None

    @classmethod
    def from_url(cls, url: str) -> ApiKeyStore:
        """A store on the gallery database at ``url`` (no gallery encryption key needed)."""
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return cls(create_engine(url, future=True, hide_parameters=True))

    def create(self, name: str, role: Role = "kiosk") -> str:
        """Create (or replace) the key for ``name``; returns the key, which is never stored or shown again."""
        if not _NAME.match(name):
            raise AuthError("key name must be 1-64 letters, digits, '.', '_' or '-'", code="bad_key_name")
        if role not in ("kiosk", "admin"):
            raise AuthError("role must be 'kiosk' or 'admin'", code="bad_role")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
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

    def recently_valid(self, key: str | None, within_s: float = 3600.0) -> bool:
        """Whether ``key`` authenticated in the last ``within_s`` seconds (no database lookup).

        A ``True`` is not an authentication: the caller still calls :meth:`authenticate`, which honours revocation.
        """
        digest = self._digest(key)
        if digest is None:
            return False
        if self._is_bootstrap(digest):
            return True
        with self._lock:
            seen = self._good.get(digest)
        return seen is not None and time.monotonic() - seen < within_s

    def authenticate(self, key: str | None) -> Principal | None:
        """The principal for a presented key, or ``None`` when it is missing, unknown or revoked."""
        digest = self._digest(key)
        if digest is None:
            return None
        if self._is_bootstrap(digest):
            return Principal("admin", "admin")
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest) or self._misses.get(digest)
        if hit is not None and now - hit[0] < self.cache_ttl_s:
            return hit[1]
        with Session(self.engine) as session:
            row = session.scalars(select(ApiKey).where(ApiKey.key_hash == digest)).first()
            principal = (
                Principal(row.name, "admin" if row.role == "admin" else "kiosk")
                if row is not None and row.revoked_at is None
                else None
            )
        with self._lock:
            cache = self._cache if principal is not None else self._misses
            if len(cache) > 10_000:  # misses have their own bound, so guessing cannot evict the valid keys
                cache.clear()
            cache[digest] = (now, principal)
            if principal is not None:
                if len(self._good) > 10_000:
                    self._good.clear()
                self._good[digest] = now
        return principal

    @staticmethod
    def _digest(key: str | None) -> str | None:
        """The stored form of a presented key; ``None`` for a missing or oversized one."""
        return hash_key(key) if key and len(key) <= 256 else None

    def _is_bootstrap(self, digest: str) -> bool:
        return self._bootstrap is not None and hmac.compare_digest(digest, self._bootstrap)

    def _clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._misses.clear()


class RateLimiter:
    """Token buckets by name: ``rate_per_minute`` sustained, ``burst`` at once.

    Args:
        rate_per_minute: Sustained requests per minute per name.
        burst: Bucket size (requests allowed back to back after a quiet period).
        clock: Time source (tests pass a fake one).
    """

    def __init__(self, rate_per_minute: float, burst: int, clock: Callable[[], float] | None = None) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self._clock = clock or time.monotonic
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

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
            if tokens >= 1.0:
                self._buckets[name] = (tokens - 1.0, now)
                return 0.0
            self._buckets[name] = (tokens, now)
            return (1.0 - tokens) / self.rate
