"""Fixtures for integration tests that need a database of their own."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database on the session's throwaway PostgreSQL server (dropped afterwards), as a URL."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = f"t_{secrets.token_hex(6)}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()
