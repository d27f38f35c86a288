"""One measurement of the end-to-end benchmark: a warm-up, a pause until the server has finished
what the warm-up left, then a timed wrk load; all the while the server's sessions in
``pg_stat_activity`` are counted (the peak covers the warm-up: a cold pool that overshoots its cap
does it then)."""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.request
from typing import Any

import psycopg

from examples.load import watch_peak

from . import wrk

#: Longest wait for the warm-up's abandoned requests to finish (s), and the pause between looks (s).
QUIESCE_SECONDS = 30.0
QUIESCE_INTERVAL = 0.05
#: Seconds of timed load per client, at least: at 500 clients a request waits seconds in the queue
#: on a 2-core machine, and a shorter load would count only the first answers.
SECONDS_PER_CLIENT = 0.01


def in_flight(base_url: str) -> int:
    """The requests the server is handling, by its ``/stats/`` (this one included)."""
    with urllib.request.urlopen(f"{base_url}/stats/", timeout=QUIESCE_SECONDS) as response:
        return json.load(response)["in_flight"]


async def quiesce(base_url: str) -> float:
    """Wait until the server handles nothing but the look itself, two looks in a row.

    When wrk ends it drops its connections, but the server still runs the requests it had
    accepted (hundreds, at 500 clients): measured right away, the next load would queue behind
    them. Gives up after :data:`QUIESCE_SECONDS`.

    :returns: the wait (s).
    """
    started = time.monotonic()
    quiet = 0
    while quiet < 2 and time.monotonic() - started < QUIESCE_SECONDS:
        quiet = quiet + 1 if await asyncio.to_thread(in_flight, base_url) <= 1 else 0
        await asyncio.sleep(QUIESCE_INTERVAL)
    return time.monotonic() - started


def duration(seconds: int, clients: int) -> int:
    """The timed load of a cell (s): ``seconds``, or longer for many clients (:data:`SECONDS_PER_CLIENT`)."""
    return max(seconds, math.ceil(clients * SECONDS_PER_CLIENT))


async def measure(base_url: str, path: str, method: str, clients: int, warmup: int, seconds: int, timeout: int,
                  conninfo: str, application_name: str) -> dict[str, Any]:
    """Load ``path`` with ``clients`` connections for ``warmup`` (s, not counted), then
    :func:`duration` (s).

    :param conninfo: the server's database, to count its sessions.
    :param application_name: the ``application_name`` of the server's connections.
    :returns: :func:`bench.wrk.parse`'s numbers of the timed load, plus
        peak_server_connections (most sessions of ``application_name`` seen at once, every ~10 ms)
        seconds (of the timed load) and quiesce_s (the wait after the warm-up, see :func:`quiesce`).
    """
    url, seconds = base_url + path, duration(seconds, clients)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True,
                                                     application_name="hybridpool-bench-monitor") as watching:
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_peak(watching, application_name, stop))
        try:
            if warmup > 0:
                await wrk.run(url, clients, warmup, timeout, method)
            waited = await quiesce(base_url)
            result = await wrk.run(url, clients, seconds, timeout, method)
        finally:
            stop.set()
            peak = await watcher
    return {**result, "peak_server_connections": peak, "seconds": seconds, "quiesce_s": waited}
