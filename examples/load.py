"""A bounded HTTP load against an example deployment on 127.0.0.1, watching the server's sessions.

``run_load`` sends a fixed number of requests, ``concurrency`` at once and none after a
wall-clock cap, cycling through the given paths (``POST:/notes/`` posts a note, ``/notes/`` gets).
Meanwhile it counts, every ~10 ms on a connection of its own, the PostgreSQL sessions whose
``application_name`` is the deployment's, and keeps the peak. Then it reads the deployment's pool
stats at ``/stats/`` and what is left on the server.

CLI: ``DATABASE_URL=... python -m examples.load --url http://127.0.0.1:8001 --path /notes/
--path POST:/notes/ --requests 500 --concurrency 100 --application-name hybridpool-gevent``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import psycopg

#: The only host a load is ever sent to.
HOST = "127.0.0.1"

#: Longest run of one load (s): no request starts after it, none outlives it.
MAX_SECONDS = 120.0

#: Pause between two samples of the server's sessions (s).
SAMPLE_INTERVAL = 0.01

#: Idle client connections are dropped after this (s): before the servers' keep-alive timeouts
#: (gunicorn 2 s, uvicorn 5 s), so a connection is never reused just as the server closes it.
KEEPALIVE_SECONDS = 1.0

SESSIONS = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
IDLE_IN_TRANSACTION = SESSIONS + " AND state LIKE 'idle in transaction%%'"


def check_local(base_url: str) -> None:
    """Refuse to load anything but ``http://127.0.0.1``.

    :raises ValueError: for another scheme or host.
    """
    parts = urlsplit(base_url)
    if parts.scheme != "http" or parts.hostname != HOST:
        raise ValueError(f"refusing to load {base_url!r}: only http://{HOST} is allowed")


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of ascending ``sorted_values`` (None if empty)."""
    if not sorted_values:
        return None
    return sorted_values[max(math.ceil(fraction * len(sorted_values)) - 1, 0)]


async def count_sessions(conn: psycopg.AsyncConnection[Any], query: str, application_name: str) -> int:
    """Run a ``count(*)`` query over ``pg_stat_activity`` for ``application_name``."""
    cursor = await conn.execute(query, (application_name,))
    (count,) = await cursor.fetchone()
    return count


async def watch_peak(conn: psycopg.AsyncConnection[Any], application_name: str, stop: asyncio.Event) -> int:
    """Sample the sessions of ``application_name`` until ``stop`` is set; return the peak."""
    peak = 0
    while True:
        peak = max(peak, await count_sessions(conn, SESSIONS, application_name))
        if stop.is_set():
            return peak
        await asyncio.sleep(SAMPLE_INTERVAL)


async def send(session: aiohttp.ClientSession, method: str, path: str, number: int,
               deadline: float) -> tuple[float, int | str]:
    """Send one request; return its latency (ms) and HTTP status, or the exception's name."""
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=max(deadline - started, 0.001))
    body = {"title": f"load note {number}", "body": "posted by examples.load"} if method == "POST" else None
    try:
        async with session.request(method, path, json=body, timeout=timeout) as response:
            await response.read()
            outcome: int | str = response.status
    except (aiohttp.ClientError, asyncio.TimeoutError) as ex:
        outcome = type(ex).__name__
    return 1000.0 * (time.monotonic() - started), outcome


async def run_load(base_url: str, paths: list[str], requests: int, concurrency: int, database_url: str,
                   application_name: str, max_seconds: float = MAX_SECONDS) -> dict[str, Any]:
    """Send ``requests`` requests to ``base_url`` cycling through ``paths``, ``concurrency`` at once.

    The ``concurrency`` senders share one aiohttp session holding up to ``concurrency``
    keep-alive connections. (httpx, tried first, spent about 5 ms of CPU per request on this
    2-core machine, a core taken from the server it measured; aiohttp about 0.4 ms.)

    :param paths: ``/path`` to GET, ``POST:/path`` to POST a note.
    :param database_url: the deployment's PostgreSQL server, to watch its sessions.
    :param application_name: the ``application_name`` of the deployment's connections.
    :param max_seconds: wall-clock cap; requests not started by then are not sent.
    :returns: requests (sent), ok (2xx), errors (other statuses and exceptions, by kind in
        ``error_kinds``), requests_per_s, p50_ms, p99_ms, peak_server_connections, pool_stats
        (``/stats/``), server_connections_after, idle_in_transaction_after.
    :raises ValueError: ``base_url`` is not on 127.0.0.1.
    """
    check_local(base_url)
    targets = [("POST", path.removeprefix("POST:")) if path.startswith("POST:") else ("GET", path) for path in paths]
    numbers = iter(range(requests))  # shared by the senders: each request is sent once
    outcomes: list[tuple[float, int | str]] = []
    started = time.monotonic()
    deadline = started + max_seconds

    async def sender(session: aiohttp.ClientSession) -> None:
        for number in numbers:
            if time.monotonic() >= deadline:
                return
            method, path = targets[number % len(targets)]
            outcomes.append(await send(session, method, path, number, deadline))

    async with contextlib.AsyncExitStack() as stack:
        monitor = await stack.enter_async_context(await psycopg.AsyncConnection.connect(
            database_url, autocommit=True, application_name="hybridpool-load-monitor"))
        connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=KEEPALIVE_SECONDS)
        session = await stack.enter_async_context(aiohttp.ClientSession(base_url, connector=connector))
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_peak(monitor, application_name, stop))
        await asyncio.gather(*(sender(session) for _ in range(min(concurrency, requests))))
        elapsed = time.monotonic() - started
        stop.set()
        peak = await watcher
        async with session.get("/stats/") as response:
            pool_stats = await response.json()
        after = await count_sessions(monitor, SESSIONS, application_name)
        idle_in_transaction = await count_sessions(monitor, IDLE_IN_TRANSACTION, application_name)

    latencies = sorted(latency for latency, _ in outcomes)
    errors = [status for _, status in outcomes if not (isinstance(status, int) and 200 <= status < 300)]
    return {
        "requests": len(outcomes),
        "ok": len(outcomes) - len(errors),
        "errors": len(errors),
        "error_kinds": {str(kind): errors.count(kind) for kind in set(errors)},
        "requests_per_s": len(outcomes) / elapsed,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "peak_server_connections": peak,
        "pool_stats": pool_stats,
        "server_connections_after": after,
        "idle_in_transaction_after": idle_in_transaction,
    }


def main(argv: list[str] | None = None) -> None:
    """The CLI: run one load and print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help=f"base URL, http://{HOST}:PORT")
    parser.add_argument("--path", action="append", required=True, help="/path to GET or POST:/path to POST; repeatable")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--application-name",
                        default=os.environ.get("HYBRIDPOOL_APPLICATION_NAME", "hybridpool-example"),
                        help="application_name of the deployment's connections")
    args = parser.parse_args(argv)
    result = asyncio.run(run_load(args.url, args.path, args.requests, args.concurrency,
                                  os.environ["DATABASE_URL"], args.application_name))
    for key, value in result.items():
        print(f"{key:>26}: {round(value, 1) if isinstance(value, float) else value}")


if __name__ == "__main__":
    main()
