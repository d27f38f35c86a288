"""The targets of issue 5 for the end-to-end benchmark, checked on :func:`bench.summary.rows`.

A benchmark, not a timed test: each target is printed PASS or MISS (or "not run" when its cells
were not in the run's matrix); nothing fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .engines import BASELINE
from .harness import verdict

Row = dict[str, Any]
#: A row's test: (met, what was measured).
Check = Callable[[Row, Row | None], tuple[bool, str]]

#: The engines the targets are checked on: hybridpool as configured by default (``reset="safe"``:
#: a ``DISCARD ALL`` round trip per request, which no peer pays) and with ``reset="rollback"``,
#: the session guarantee of Django's built-in pool.
ENGINES = ("hybridpool", "hybridpool-rollback")


def at_least(name: str, minimum: float) -> Check:
    """The row's ratio ``name`` is at least ``minimum``."""
    def check(row: Row, _: Row | None) -> tuple[bool, str]:
        value = row[name]
        return value is not None and value >= minimum, "-" if value is None else f"{value:.2f}x"
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


def targets(max_size: int) -> list[tuple[str, str, tuple[str, ...], tuple[int, ...], Check]]:
    """The targets: (description, server, views, clients, check of hybridpool's row)."""
    gevent_views = ("one", "five")
    return [
        ("req/s >= 1.10x builtin", "gevent", gevent_views, (10, 100, 500), at_least("vs_builtin", 1.10)),
        ("req/s >= 0.97x max-age-none", "gevent", gevent_views, (10,), at_least("vs_reference", 0.97)),
        ("p99 <= builtin's", "gevent", gevent_views, (10, 100, 500), p99_no_worse),
        ("0 errors, 0 timeouts", "gevent", gevent_views, (500,), no_errors),
        (f"<= {max_size} server connections", "gevent", gevent_views, (500,), within(max_size)),
        ("req/s >= 1.0x builtin", "uvicorn", ("async",), (100,), at_least("vs_builtin", 1.0)),
        ("0 errors, 0 timeouts", "uvicorn", ("async",), (100,), no_errors),
    ]


def evaluate(summary: list[Row], max_size: int) -> list[list[str]]:
    """Check every target on every cell it names.

    :returns: rows of target, engine, server, view, clients, verdict (PASS, MISS or "not run"),
        measured.
    """
    def find(engine: str, server: str, view: str, clients: int) -> Row | None:
        return next((row for row in summary if (row["engine"], row["server"], row["view"], row["clients"])
                     == (engine, server, view, clients)), None)

    result = []
    for description, server, views, clients_list, check in targets(max_size):
        for engine in ENGINES:
            for view in views:
                for clients in clients_list:
                    cell = [description, engine, server, view, str(clients)]
                    row = find(engine, server, view, clients)
                    if row is None:
                        result.append([*cell, "not run", "-"])
                        continue
                    met, measured = check(row, find(BASELINE, server, view, clients))
                    result.append([*cell, verdict(met), measured])
    return result
