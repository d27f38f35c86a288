"""One measurement of the end-to-end benchmark: a warm-up, a pause until the server has finished
what the warm-up left, then a timed wrk load; all the while the server's sessions in
``pg_stat_activity`` are counted (the peak covers the warm-up: a cold pool that overshoots its cap
does it then).

**CPU per request.** The CPU time of the process that serves (user + system of all its threads,
``utime + stime`` in ``/proc/<pid>/stat``; the pid ``/stats/`` gives: gunicorn's worker, not its
arbiter; uvicorn's own process, which runs no worker child with ``--workers 1``) is taken two ways:

- ``cpu_us_per_request``, the figure of the tables: at :data:`WINDOW` (20 % and 70 %) of the timed
  load the driver asks ``/stats/``, whose view reads, at one instant in the server, its process's
  ``/proc/self/stat`` and its count of requests started (``/stats/`` left out): the CPU between the
  two looks over the requests started between them. Both looks fall inside the load (checked by
  the server's monotonic clock), when as many requests are in flight at each end, so no request's
  cost is counted against another's.
- ``cpu_us_per_answered``: the driver reads ``/proc/<pid>/stat`` when wrk starts and when it ends,
  over the requests wrk counts answered. This counts against the answered requests the partial cost
  of those still in flight at the end (up to one per client, cancelled under ASGI when wrk drops its
  connections): a few per cent more at 100 clients, more so for a slower engine.
"""

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
from .procstat import process_cpu

#: Longest wait for the warm-up's abandoned requests to finish (s), and the pause between looks (s).
QUIESCE_SECONDS = 30.0
QUIESCE_INTERVAL = 0.05
#: Seconds of timed load per client, at least: at 500 clients a request waits seconds in the queue
#: on a 2-core machine, and a shorter load would count only the first answers.
SECONDS_PER_CLIENT = 0.01
#: When the driver asks the server for its CPU and request count during the timed load, as shares
#: of the load's duration: after the ramp-up, and early enough to be answered before the end.
WINDOW = (0.20, 0.70)


def server_stats(base_url: str) -> dict[str, Any]:
    """The server's ``/stats/``: pid, in_flight (this request included), served (requests started
    but ``/stats/``), cpu_s (its process's user + system CPU from ``/proc/self/stat``), monotonic
    (its clock when it read them), native (NativeQuerySet's reads by path)."""
    with urllib.request.urlopen(f"{base_url}/stats/", timeout=QUIESCE_SECONDS) as response:
        return json.load(response)


def in_flight(base_url: str) -> int:
    """The requests the server is handling, by its ``/stats/`` (this one included)."""
    return server_stats(base_url)["in_flight"]


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


async def looks(base_url: str, started: float, seconds: int) -> list[dict[str, Any]]:
    """``/stats/`` at each share of :data:`WINDOW` of a load of ``seconds`` begun at ``started``
    (``time.monotonic()``)."""
    result = []
    for share in WINDOW:
        await asyncio.sleep(max(0.0, started + share * seconds - time.monotonic()))
        result.append(await asyncio.to_thread(server_stats, base_url))
    return result


def window(first: dict[str, Any], last: dict[str, Any], started: float, ended: float) -> dict[str, Any]:
    """The server's CPU per request between two ``/stats/`` looks of one load (see the module's
    docstring): None unless both were read within the load (``started``..``ended``, monotonic) and
    requests started between them."""
    requests = last["served"] - first["served"]
    inside = started <= first["monotonic"] < last["monotonic"] <= ended
    cpu = last["cpu_s"] - first["cpu_s"]
    return {"cpu_window_s": cpu, "cpu_window_requests": requests,
            "cpu_window_span_s": last["monotonic"] - first["monotonic"], "cpu_window_inside": inside,
            "cpu_us_per_request": cpu / requests * 1e6 if inside and requests > 0 else None,
            "native_reads": {path: last["native"].get(path, 0) - first["native"].get(path, 0)
                             for path in ("native", "thread", "retried")}}


async def measure(base_url: str, path: str, method: str, clients: int, warmup: int, seconds: int, timeout: int,
                  conninfo: str, application_name: str, pid: int, arbiter: int | None = None) -> dict[str, Any]:
    """Load ``path`` with ``clients`` connections for ``warmup`` (s, not counted), then
    :func:`duration` (s), reading the serving process's CPU time (see the module's docstring).

    :param conninfo: the server's database, to count its sessions.
    :param application_name: the ``application_name`` of the server's connections.
    :param pid: the process that serves (``/stats/``'s pid).
    :param arbiter: the server's parent process if it is not ``pid`` (gunicorn's arbiter): its CPU
        over the load is recorded apart (``arbiter_cpu_s``), not counted per request.
    :returns: :func:`bench.wrk.parse`'s numbers of the timed load, plus
        peak_server_connections (most sessions of ``application_name`` seen at once, every ~10 ms),
        seconds (of the timed load), quiesce_s (the wait after the warm-up, see :func:`quiesce`),
        :func:`window`'s numbers (cpu_us_per_request; native_reads, NativeQuerySet's reads between
        the looks by path), cpu_s (the serving process's CPU seconds over wrk's run),
        cpu_us_per_answered (``cpu_s`` per answered request) and arbiter_cpu_s.
    """
    url, seconds = base_url + path, duration(seconds, clients)
    arbiter = arbiter if arbiter not in (None, pid) else None
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True,
                                                     application_name="hybridpool-bench-monitor") as watching:
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_peak(watching, application_name, stop))
        try:
            if warmup > 0:
                await wrk.run(url, clients, warmup, timeout, method)
            waited = await quiesce(base_url)
            cpu_start, arbiter_start = process_cpu(pid), process_cpu(arbiter) if arbiter else 0.0
            started = time.monotonic()
            load = asyncio.create_task(wrk.run(url, clients, seconds, timeout, method))
            in_load = asyncio.create_task(looks(base_url, started, seconds))
            try:
                result = await load
            except BaseException:
                in_load.cancel()
                raise
            ended = time.monotonic()
            cpu = process_cpu(pid) - cpu_start
            arbiter_cpu = process_cpu(arbiter) - arbiter_start if arbiter else None
            first, last = await in_load
        finally:
            stop.set()
            peak = await watcher
    return {**result, "peak_server_connections": peak, "seconds": seconds, "quiesce_s": waited,
            **window(first, last, started, ended), "cpu_s": cpu,
            "cpu_us_per_answered": cpu / result["requests"] * 1e6 if result["requests"] else None,
            "arbiter_cpu_s": arbiter_cpu}
