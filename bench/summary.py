"""The end-to-end benchmark's numbers: one record per measurement, rows of medians over rounds.

A record is :func:`bench.measure.measure`'s result plus ``round``, ``server``, ``engine``,
``view`` and ``clients``. Ratios are taken within a round (an engine's requests/s, or CPU µs per
request, over the baseline's, same server, view and clients, same round), then their median over
rounds: the machine's drift between rounds cancels out.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from .engines import BASELINE, ENGINES, REFERENCE
from .matrix import VIEWS

Record = dict[str, Any]
Cell = tuple[str, str, int]  # server, view, clients

#: The columns of :func:`rows`, with the markdown table's headers.
COLUMNS = {
    "server": "server", "view": "view", "clients": "clients", "engine": "engine", "rounds": "rounds",
    "requests_per_s": "req/s", "vs_builtin": f"x {BASELINE}", "vs_reference": f"x {REFERENCE}",
    "cpu_us_per_request": "CPU µs/req", "cpu_vs_builtin": f"CPU x {BASELINE}",
    "p50_ms": "p50 ms", "p99_ms": "p99 ms", "non_2xx": "non-2xx", "socket_errors": "socket errors",
    "timeouts": "timeouts", "peak_server_connections": "peak server conns", "native_share": "native reads",
}
#: CPU µs per request: the steady-state figure (:mod:`bench.measure`).
CPU = "cpu_us_per_request"
#: The gains the issue asks for: (what, engine, over this engine).
GAINS = (
    ("hybridpool's ASGI application", "hybridpool-asgi", "hybridpool"),
    ("NativeQuerySet", "hybridpool-native", "hybridpool-asgi"),
    ("both", "hybridpool-native", "hybridpool"),
)


def cell(record: Record) -> Cell:
    return record["server"], record["view"], record["clients"]


def ratio(records: Iterable[Record], engine: str, versus: str, key: str = "requests_per_s") -> float | None:
    """Median over rounds of ``engine``'s ``key`` (requests/s, or :data:`CPU`) over ``versus``'s in
    the same round and cell (None if no round has both)."""
    by_round: dict[int, dict[str, float]] = defaultdict(dict)
    for record in records:
        if record.get(key) is not None:
            by_round[record["round"]][record["engine"]] = record[key]
    ratios = [values[engine] / values[versus] for values in by_round.values()
              if engine in values and values.get(versus)]
    return statistics.median(ratios) if ratios else None


def median_of(records: list[Record], key: str) -> float | None:
    """Median of ``key`` over the records that have it (None if none)."""
    values = [record[key] for record in records if record.get(key) is not None]
    return statistics.median(values) if values else None


def native_share(records: list[Record]) -> float | None:
    """Share of NativeQuerySet's reads that ran natively, over the records (None if it read nothing)."""
    counts = [record.get("native_reads") or {} for record in records]
    total = sum(sum(count.values()) for count in counts)
    return sum(count.get("native", 0) for count in counts) / total if total else None


def rows(records: list[Record]) -> list[dict[str, Any]]:
    """One row per (server, view, clients, engine): medians over rounds of requests/s, CPU µs per
    request (both measures of :mod:`bench.measure`), p50 and p99 (ms); ratios to the baseline
    (requests/s and CPU) and to the reference (requests/s) (see :func:`ratio`); sums of non-2xx
    responses, socket errors and timeouts; the highest peak of server connections; the share of
    NativeQuerySet's reads that ran natively."""
    by_cell: dict[Cell, list[Record]] = defaultdict(list)
    for record in records:
        by_cell[cell(record)].append(record)
    result = []
    for key in sorted(by_cell, key=lambda c: (c[0], tuple(VIEWS).index(c[1]), c[2])):
        in_cell = by_cell[key]
        for engine in ENGINES:
            mine = [record for record in in_cell if record["engine"] == engine]
            if not mine:
                continue
            result.append({
                **dict(zip(("server", "view", "clients"), key)), "engine": engine, "rounds": len(mine),
                **{name: statistics.median(record[name] for record in mine)
                   for name in ("requests_per_s", "p50_ms", "p99_ms")},
                "vs_builtin": ratio(in_cell, engine, BASELINE),
                "vs_reference": ratio(in_cell, engine, REFERENCE),
                "cpu_us_per_request": median_of(mine, CPU),
                "cpu_vs_builtin": ratio(in_cell, engine, BASELINE, CPU),
                "cpu_us_per_answered": median_of(mine, "cpu_us_per_answered"),
                "cpu_answered_vs_builtin": ratio(in_cell, engine, BASELINE, "cpu_us_per_answered"),
                **{name: sum(record[name] for record in mine) for name in ("non_2xx", "socket_errors", "timeouts")},
                "peak_server_connections": max(record["peak_server_connections"] for record in mine),
                "native_share": native_share(mine),
            })
    return result


def table(summary: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Headers and cells of a markdown table of :func:`rows` (ratios to 2 places, rates whole)."""
    def show(name: str, value: Any) -> Any:
        if value is None:
            return "-"
        if name in ("requests_per_s", CPU):
            return round(value)
        if name == "native_share":
            return f"{value:.0%}"
        return round(value, 1) if name.endswith("_ms") else value

    return list(COLUMNS.values()), [[show(name, row[name]) for name in COLUMNS] for row in summary]


def reset_costs(records: list[Record], safe: str = "hybridpool", cheap: str = "hybridpool-rollback") -> list[list[Any]]:
    """The cost of hybridpool's default reset against ``reset="rollback"``, per cell where both ran.

    :returns: rows of server, view, clients, the ratio of requests/s (``safe`` over ``cheap``,
        see :func:`ratio`) and the extra time per request in µs: the median over rounds of
        ``1e6 / rate(safe) - 1e6 / rate(cheap)``, which is the extra server time per request when
        the server is saturated.
    """
    by_cell: dict[Cell, dict[int, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for record in records:
        by_cell[cell(record)][record["round"]][record["engine"]] = record["requests_per_s"]
    result = []
    for key, by_round in sorted(by_cell.items()):
        extra = [1e6 / rates[safe] - 1e6 / rates[cheap] for rates in by_round.values()
                 if rates.get(safe) and rates.get(cheap)]
        if extra:
            in_cell = [record for record in records if cell(record) == key]
            result.append([*key, round(ratio(in_cell, safe, cheap), 2), round(statistics.median(extra))])
    return result


def gains(records: list[Record]) -> list[list[Any]]:
    """What each step of :data:`GAINS` brings, per cell where both its engines ran.

    :returns: rows of step, server, view, clients, the ratio of requests/s and of CPU µs per
        request (the engine over the one before the step, see :func:`ratio`), and the CPU µs per
        request saved (median over rounds of the difference within a round).
    """
    by_cell: dict[Cell, list[Record]] = defaultdict(list)
    for record in records:
        by_cell[cell(record)].append(record)
    result = []
    for what, engine, versus in GAINS:
        for key in sorted(by_cell, key=lambda c: (c[0], tuple(VIEWS).index(c[1]), c[2])):
            in_cell = by_cell[key]
            rate = ratio(in_cell, engine, versus)
            if rate is None:
                continue
            by_round: dict[int, dict[str, float]] = defaultdict(dict)
            for record in in_cell:
                if record.get(CPU) is not None:
                    by_round[record["round"]][record["engine"]] = record[CPU]
            saved = [cpus[versus] - cpus[engine] for cpus in by_round.values() if engine in cpus and versus in cpus]
            cpu = ratio(in_cell, engine, versus, CPU)
            result.append([f"{what} ({engine} / {versus})", *key, round(rate, 2),
                           "-" if cpu is None else round(cpu, 2), round(statistics.median(saved)) if saved else "-"])
    return result
