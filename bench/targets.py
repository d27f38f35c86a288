"""The targets of the end-to-end benchmark, checked on :func:`bench.summary.rows`, in two groups:

- ``issue 5``: hybridpool under gunicorn's gevent worker and uvicorn's ``async`` view, for
  hybridpool as configured by default (``reset="safe"``: a ``DISCARD ALL`` round trip per request,
  which no peer pays) and with ``reset="rollback"``, the session guarantee of Django's built-in pool;
- ``asgi``: one ``afirst()`` per request under uvicorn (one worker) at 10 and 100 clients, for the
  ENGINE switch alone (``hybridpool``, Django's ``asgi.py``), + hybridpool's ASGI application
  (``hybridpool-asgi``) and + NativeQuerySet (``hybridpool-native``); and gunicorn's gevent worker,
  one query, default safe reset. Requests/s and CPU per request, each as a ratio to the built-in
  pool under Django's application in the same round, and no errors in any of these cells (the
  built-in pool's included).

A benchmark, not a timed test: each target is printed PASS or MISS (or "not run" when its cells
were not in the run's matrix); nothing fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .engines import BASELINE
from .harness import verdict

Row = dict[str, Any]
#: A row's test: (met, what was measured).
Check = Callable[[Row, Row | None], tuple[bool, str]]

#: The engines the targets of issue 5 are checked on: hybridpool with ``reset="safe"`` (its
#: default) and with ``reset="rollback"``.
ENGINES = ("hybridpool", "hybridpool-rollback")

HEADERS = ["group", "target", "engine", "server", "view", "clients", "verdict", "measured"]


@dataclass(frozen=True)
class Target:
    """A check of ``engines``' rows in each (``view``, ``clients``) cell of ``server``."""

    group: str
    description: str
    engines: tuple[str, ...]
    server: str
    views: tuple[str, ...]
    clients: tuple[int, ...]
    check: Check


def at_least(name: str, minimum: float) -> Check:
    """The row's ratio ``name`` is at least ``minimum``."""
    def check(row: Row, _: Row | None) -> tuple[bool, str]:
        value = row.get(name)
        return value is not None and value >= minimum, "-" if value is None else f"{value:.2f}x"
    return check


def at_most(name: str, maximum: float) -> Check:
    """The row's ratio ``name`` is at most ``maximum``."""
    def check(row: Row, _: Row | None) -> tuple[bool, str]:
        value = row.get(name)
        return value is not None and value <= maximum, "-" if value is None else f"{value:.2f}x"
    return check


def p99_no_worse(row: Row, baseline: Row | None) -> tuple[bool, str]:
    """The row's p99 is no more than the baseline's in the same cell."""
    if baseline is None:
        return False, "no baseline"
    return row["p99_ms"] <= baseline["p99_ms"], f"{row['p99_ms']:.1f} vs {baseline['p99_ms']:.1f} ms"


def no_errors(row: Row, _: Row | None) -> tuple[bool, str]:
    """No non-2xx responses, socket errors or timeouts."""
    counts = {name: row[name] for name in ("non_2xx", "socket_errors", "timeouts")}
    return not any(counts.values()), ", ".join(f"{name} {count}" for name, count in counts.items())


def within(max_size: int) -> Check:
    """The peak of server connections is at most ``max_size``."""
    def check(row: Row, _: Row | None) -> tuple[bool, str]:
        return row["peak_server_connections"] <= max_size, f"peak {row['peak_server_connections']}"
    return check


def targets(max_size: int) -> list[Target]:
    """The targets of both groups."""
    gevent_views = ("one", "five")
    issue5 = [
        ("req/s >= 1.10x builtin", "gevent", gevent_views, (10, 100, 500), at_least("vs_builtin", 1.10)),
        ("req/s >= 0.97x max-age-none", "gevent", gevent_views, (10,), at_least("vs_reference", 0.97)),
        ("p99 <= builtin's", "gevent", gevent_views, (10, 100, 500), p99_no_worse),
        ("0 errors, 0 timeouts", "gevent", gevent_views, (500,), no_errors),
        (f"<= {max_size} server connections", "gevent", gevent_views, (500,), within(max_size)),
        ("req/s >= 1.0x builtin", "uvicorn", ("async",), (100,), at_least("vs_builtin", 1.0)),
        ("0 errors, 0 timeouts", "uvicorn", ("async",), (100,), no_errors),
    ]
    clients = (10, 100)
    asgi = [
        ("ENGINE switch only: req/s >= 1.00x builtin", ("hybridpool",), "uvicorn", ("afirst",),
         at_least("vs_builtin", 1.00)),
        ("+ hybridpool's ASGI app: req/s >= 1.25x builtin", ("hybridpool-asgi",), "uvicorn", ("afirst",),
         at_least("vs_builtin", 1.25)),
        ("+ hybridpool's ASGI app: CPU/req <= 0.85x builtin", ("hybridpool-asgi",), "uvicorn", ("afirst",),
         at_most("cpu_vs_builtin", 0.85)),
        ("+ NativeQuerySet: req/s >= 1.45x builtin", ("hybridpool-native",), "uvicorn", ("afirst",),
         at_least("vs_builtin", 1.45)),
        ("+ NativeQuerySet: CPU/req <= 0.75x builtin", ("hybridpool-native",), "uvicorn", ("afirst",),
         at_most("cpu_vs_builtin", 0.75)),
        ("gevent, safe reset: req/s >= 1.00x builtin", ("hybridpool",), "gevent", ("one",),
         at_least("vs_builtin", 1.00)),
        ("gevent, safe reset: CPU/req <= 1.03x builtin", ("hybridpool",), "gevent", ("one",),
         at_most("cpu_vs_builtin", 1.03)),
        ("0 errors, 0 timeouts", ("hybridpool", "hybridpool-asgi", "hybridpool-native", BASELINE), "uvicorn",
         ("afirst",), no_errors),
        ("0 errors, 0 timeouts", ("hybridpool", BASELINE), "gevent", ("one",), no_errors),
    ]
    return ([Target("issue 5", description, ENGINES, server, views, counts, check)
             for description, server, views, counts, check in issue5]
            + [Target("asgi", description, engines, server, views, clients, check)
               for description, engines, server, views, check in asgi])


def evaluate(summary: list[Row], max_size: int) -> list[list[str]]:
    """Check every target on every cell it names.

    :returns: rows of :data:`HEADERS`: group, target, engine, server, view, clients, verdict
        (PASS, MISS or "not run"), measured.
    """
    def find(engine: str, server: str, view: str, clients: int) -> Row | None:
        return next((row for row in summary if (row["engine"], row["server"], row["view"], row["clients"])
                     == (engine, server, view, clients)), None)

    result = []
    for target in targets(max_size):
        for engine in target.engines:
            for view in target.views:
                for clients in target.clients:
                    cell = [target.group, target.description, engine, target.server, view, str(clients)]
                    row = find(engine, target.server, view, clients)
                    if row is None:
                        result.append([*cell, "not run", "-"])
                        continue
                    met, measured = target.check(row, find(BASELINE, target.server, view, clients))
                    result.append([*cell, verdict(met), measured])
    return result
