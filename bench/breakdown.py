"""Where an async-ORM request's time goes under ASGI: Django's ASGIHandler driven in-process, and uvicorn.

``python -m bench.breakdown [--engines hybridpool,builtin] [--clients 1,10] [--seconds 5] [--rounds 3]
[--no-uvicorn]`` creates a fresh database, then for each round, engine and client count runs
``/async/`` (``Item.objects.aget``) in child processes, each for ``--seconds`` after a 1 s warm-up:

``plain``
    The bench project's ASGI application called directly from an asyncio loop by N concurrent tasks
    (no server, no sockets; ``receive`` and ``send`` are in-memory): requests per second, median
    wall time, and the process's CPU per request split by thread: the loop thread, the long-lived
    threads (psycopg_pool's workers and scheduler, hybridpool's watcher) and the rest, which are
    asgiref's per-request threads.
``timed``
    The same with wrappers timing (wall and thread CPU, per request) asgiref's hops, the thread
    starts they cause, Django's ``connect()`` and ``close()``, the pool's checkout and return and
    hybridpool's check and reset, the ORM's query and psycopg's ``execute``. The wrappers cost a
    few µs per call: read this mode for shares, ``plain`` for rates.
``count``
    Under ``PSYCOPG_IMPL=python`` (libpq through ctypes, whose methods can be wrapped): per request,
    ``sync_to_async`` hops, threads started, and libpq calls that send a query (a server round trip
    each; a reset sent on return and read at the next checkout is one).

With uvicorn (unless ``--no-uvicorn``) it also serves each engine as ``bench.e2e`` does, loads the
view with wrk at each client count, and reads the CPU time the worker process and the server's
PostgreSQL backends spent per request from ``/proc`` (the backends only if PostgreSQL runs on this
machine: the embedded server does). The worker's CPU less the in-process ``plain`` figure is what
uvicorn, h11 and the sockets add.

Prints the medians over rounds and writes every measurement to ``bench/results/breakdown-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from .procstat import process_cpu, stat_cpu

ROOT = Path(__file__).resolve().parent.parent
DBNAME = "hybridpool_breakdown"
PATH = "/async/"
WARMUP = 1.0
MODES = ("plain", "timed", "count")

# --- the child: the ASGI application in-process ------------------------------------------------


class Timers:
    """Per-category calls, wall and thread-CPU seconds; nested calls of one category count once."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = defaultdict(int)
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.local = threading.local()
        self.lock = threading.Lock()

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.wall.clear()
            self.cpu.clear()

    def add(self, category: str, wall: float, cpu: float) -> None:
        with self.lock:
            self.calls[category] += 1
            self.wall[category] += wall
            self.cpu[category] += cpu

    def wrap(self, owner: Any, name: str, category: str) -> None:
        """Time ``owner.name`` (a sync function or method) as ``category``."""
        original = getattr(owner, name)
        timers = self

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(timers.local, category, 0)
            if depth:
                return original(*args, **kwargs)
            setattr(timers.local, category, 1)
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                timers.add(category, time.perf_counter() - wall, time.thread_time() - cpu)
                setattr(timers.local, category, 0)

        setattr(owner, name, timed)

    def wrap_async(self, owner: Any, name: str, category: str) -> None:
        """Time the coroutine method ``owner.name`` as ``category`` (wall only: it suspends)."""
        original = getattr(owner, name)
        timers = self

        @functools.wraps(original)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            wall = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                timers.add(category, time.perf_counter() - wall, 0.0)

        setattr(owner, name, timed)


def instrument(timers: Timers) -> None:
    """Wrap what one request goes through (before the first connection: the pools bind their check
    and reset functions when they are built)."""
    import psycopg
    import psycopg_pool
    from asgiref.sync import SyncToAsync, ThreadSensitiveContext
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.backends.utils import CursorWrapper
    from django.db.models.sql.compiler import SQLCompiler

    from hybridpool import reset, steps
    from hybridpool.asgi import pool as asgi_pool

    timers.wrap_async(SyncToAsync, "__call__", "sync_to_async: await (loop side)")
    timers.wrap(SyncToAsync, "thread_handler", "sync_to_async: function in its thread")
    timers.wrap_async(ThreadSensitiveContext, "__aexit__", "ThreadSensitiveContext exit (join thread)")
    timers.wrap(asyncio.BaseEventLoop, "run_in_executor", "run_in_executor (submit)")
    timers.wrap(threading.Thread, "start", "Thread.start")
    timers.wrap(BaseDatabaseWrapper, "__init__", "Django: DatabaseWrapper()")
    timers.wrap(BaseDatabaseWrapper, "connect", "Django: connect()")
    timers.wrap(BaseDatabaseWrapper, "close", "Django: close()")
    timers.wrap(SQLCompiler, "as_sql", "Django: SQL compilation")
    timers.wrap(CursorWrapper, "execute", "Django: cursor.execute")
    timers.wrap(psycopg.Cursor, "execute", "psycopg: Cursor.execute")
    for cls in (psycopg_pool.ConnectionPool, asgi_pool.ThreadPool):
        timers.wrap(cls, "getconn", "pool: getconn")
        timers.wrap(cls, "putconn", "pool: putconn")
    timers.wrap(steps, "run", "hybridpool: steps.run (check, return)")
    timers.wrap(reset, "send", "hybridpool: reset.send")


SENDS = ("exec_", "exec_params", "exec_prepared", "prepare", "describe_prepared", "describe_portal",
         "send_query", "send_query_params", "send_query_prepared", "send_prepare",
         "send_describe_prepared", "send_describe_portal", "pipeline_sync")


def instrument_counts(timers: Timers) -> None:
    """Count hops, thread starts and libpq sends (``PSYCOPG_IMPL=python`` only)."""
    from asgiref.sync import SyncToAsync
    from psycopg.pq import pq_ctypes

    timers.wrap_async(SyncToAsync, "__call__", "sync_to_async hops")
    timers.wrap(threading.Thread, "start", "threads started")
    for name in SENDS:
        timers.wrap(pq_ctypes.PGconn, name, "server round trips (libpq sends)")


def long_lived_cpu() -> dict[int, float]:
    """CPU seconds of each thread of this process but the caller's, by native id."""
    out = {}
    me = threading.get_native_id()
    for tid in os.listdir("/proc/self/task"):
        if int(tid) == me:
            continue
        try:
            out[int(tid)] = stat_cpu(f"/proc/self/task/{tid}/stat")
        except OSError:
            continue
    return out


async def one_request(app: Any, scope: dict[str, Any]) -> int:
    """Run one GET through ``app`` with in-memory ``receive`` and ``send``; return the status."""
    done = asyncio.Event()
    received = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()  # as uvicorn: a disconnect once the response is complete
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif not message.get("more_body"):
            done.set()

    await app(scope, receive, send)
    return status


def get_scope(path: str) -> dict[str, Any]:
    """The ASGI scope of a GET of ``path``, as uvicorn gives it."""
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}


async def load(app: Any, clients: int, seconds: float, timers: Timers | None) -> dict[str, Any]:
    scope = get_scope(PATH)
    latencies: list[float] = []
    errors = 0
    timing = False
    stop = 0.0

    async def client() -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            start = time.perf_counter()
            status = await one_request(app, scope)
            if timing:
                latencies.append(time.perf_counter() - start)
                errors += status != 200

    stop = time.perf_counter() + WARMUP
    await asyncio.gather(*(client() for _ in range(clients)))
    if timers is not None:
        timers.reset()
    threads_before, cpu_before, loop_before = long_lived_cpu(), time.process_time(), time.thread_time()
    timing, started = True, time.perf_counter()
    stop = started + seconds
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    cpu, loop_cpu, threads_after = time.process_time() - cpu_before, time.thread_time() - loop_before, long_lived_cpu()
    long_lived = sum(threads_after[tid] - threads_before[tid] for tid in threads_after.keys() & threads_before.keys())
    n = len(latencies)
    result = {"requests": n, "errors": errors, "seconds": elapsed, "requests_per_s": n / elapsed,
              "p50_ms": statistics.median(latencies) * 1e3, "mean_ms": statistics.fmean(latencies) * 1e3,
              "cpu_us": cpu / n * 1e6, "loop_cpu_us": loop_cpu / n * 1e6, "long_lived_cpu_us": long_lived / n * 1e6,
              "request_threads_cpu_us": (cpu - loop_cpu - long_lived) / n * 1e6}
    if timers is not None:
        result["categories"] = {name: {"calls": timers.calls[name] / n, "wall_us": timers.wall[name] / n * 1e6,
                                       "cpu_us": timers.cpu[name] / n * 1e6} for name in sorted(timers.calls)}
    return result


def child(mode: str, clients: int, seconds: float) -> None:
    import django

    django.setup()
    timers = None
    if mode != "plain":
        timers = Timers()
        (instrument if mode == "timed" else instrument_counts)(timers)
    from django.core.asgi import get_asgi_application

    app = get_asgi_application()
    result = asyncio.run(load(app, clients, seconds, timers))
    print(json.dumps(result))


# --- the driver -----------------------------------------------------------------------------------


def run_child(mode: str, engine: str, conninfo: str, clients: int, seconds: float) -> dict[str, Any]:
    from . import servers

    env = servers.bench_environment("bench-breakdown", engine, conninfo, 20)
    if mode == "count":
        env["PSYCOPG_IMPL"] = "python"
    done = subprocess.run([sys.executable, "-m", "bench.breakdown", "--child", mode, "--clients", str(clients),
                           "--seconds", str(seconds)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
                          timeout=seconds + 120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def backend_pids(conninfo: str, application_name: str) -> list[int]:
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [application_name])
        return [pid for (pid,) in rows if Path(f"/proc/{pid}").exists()]


def run_uvicorn(engine: str, conninfo: str, clients: int, seconds: int) -> dict[str, Any]:
    """Serve ``engine`` with uvicorn, load ``/async/`` with wrk; the worker's and its PostgreSQL
    backends' CPU per request."""
    from . import servers, wrk

    with servers.serve("uvicorn", engine, conninfo, 20, "bench-breakdown") as server:
        with urllib.request.urlopen(f"{server.base_url}/stats/") as response:
            pid = json.load(response)["pid"]
        url = server.base_url + PATH
        asyncio.run(wrk.run(url, clients, 1, 5))  # warm-up: the pool's connections are open after it
        backends = backend_pids(conninfo, server.application_name)
        before = process_cpu(pid), sum(process_cpu(b) for b in backends)
        result = asyncio.run(wrk.run(url, clients, seconds, 5))
        after = process_cpu(pid), sum(process_cpu(b) for b in backends if Path(f"/proc/{b}").exists())
    n = result["requests"]
    return {**result, "cpu_us": (after[0] - before[0]) / n * 1e6,
            "postgres_cpu_us": (after[1] - before[1]) / n * 1e6 if backends else None,
            "backends": len(backends)}


def median_of(records: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in records if r.get(key) is not None]
    return statistics.median(values) if values else None


def report(records: list[dict[str, Any]], engines: list[str], clients: list[int]) -> str:
    from .e2e import markdown

    def cells(kind: str, keys: list[str]) -> list[list[Any]]:
        rows = []
        for n in clients:
            for engine in engines:
                mine = [r for r in records if r["kind"] == kind and r["engine"] == engine and r["clients"] == n]
                if mine:
                    rows.append([n, engine, len(mine), *(f"{v:.0f}" if v is not None and v >= 10 else
                                                         f"{v:.2f}" if v is not None else "-"
                                                         for v in (median_of(mine, k) for k in keys))])
        return rows

    out = []
    plain = ["requests_per_s", "p50_ms", "cpu_us", "loop_cpu_us", "request_threads_cpu_us", "long_lived_cpu_us"]
    out.append("In-process (ASGIHandler, no server), medians over rounds:\n")
    out.append(markdown(["clients", "engine", "rounds", "req/s", "p50 ms", "CPU µs/req", "loop thread",
                         "request threads", "long-lived threads"], cells("plain", plain)))
    out.append("uvicorn + wrk, medians over rounds:\n")
    out.append(markdown(["clients", "engine", "rounds", "req/s", "p50 ms", "worker CPU µs/req", "postgres CPU µs/req"],
                        cells("uvicorn", ["requests_per_s", "p50_ms", "cpu_us", "postgres_cpu_us"])))
    for kind in ("count", "timed"):
        names = sorted({name for r in records if r["kind"] == kind for name in r.get("categories", {})})
        for n in clients:
            rows = []
            for name in names:
                row = [name]
                for engine in engines:
                    mine = [r["categories"].get(name) for r in records
                            if r["kind"] == kind and r["engine"] == engine and r["clients"] == n]
                    mine = [m for m in mine if m]
                    if kind == "count":
                        row.append(f"{statistics.median(m['calls'] for m in mine):.2f}" if mine else "-")
                    else:
                        row.extend([f"{statistics.median(m['calls'] for m in mine):.2f}",
                                    f"{statistics.median(m['wall_us'] for m in mine):.0f}",
                                    f"{statistics.median(m['cpu_us'] for m in mine):.0f}"] if mine else ["-"] * 3)
                rows.append(row)
            if not rows:
                continue
            if kind == "count":
                out.append(f"Per request at {n} clients (PSYCOPG_IMPL=python):\n")
                out.append(markdown(["what", *engines], rows))
            else:
                out.append(f"Timed (inclusive, per request) at {n} clients: calls, wall µs, thread CPU µs:\n")
                out.append(markdown(["what", *(f"{e} {c}" for e in engines for c in ("calls", "wall", "cpu"))], rows))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--engines", default="hybridpool,builtin")
    parser.add_argument("--clients", default="1,10")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--no-uvicorn", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, int(args.clients), args.seconds)
        return 0
    from . import servers
    from .harness import database, write_results

    engines, clients, modes = args.engines.split(","), [int(c) for c in args.clients.split(",")], args.modes.split(",")
    records: list[dict[str, Any]] = []
    with database(DBNAME) as conninfo:
        servers.migrate(conninfo)
        for round_ in range(args.rounds):
            for n in clients:
                for engine in engines:
                    for mode in modes:
                        record = run_child(mode, engine, conninfo, n, args.seconds)
                        records.append({"kind": mode, "engine": engine, "clients": n, "round": round_, **record})
                        print(f"round {round_} {mode} {engine} {n}: {record['requests_per_s']:.0f} req/s",
                              file=sys.stderr)
                    if not args.no_uvicorn:
                        record = run_uvicorn(engine, conninfo, n, args.seconds)
                        records.append({"kind": "uvicorn", "engine": engine, "clients": n, "round": round_, **record})
                        print(f"round {round_} uvicorn {engine} {n}: {record['requests_per_s']:.0f} req/s",
                              file=sys.stderr)
    text = report(records, engines, clients)
    print(text)
    path = write_results("breakdown", {"argv": sys.argv[1:], "records": records, "report": text})
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
