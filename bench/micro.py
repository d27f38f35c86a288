"""Micro benchmark: the cost of one checkout and return of an idle connection (µs).

``python -m bench.micro [--repeats N]`` times ``putconn(getconn())`` on a pool of one warm
connection for each hybridpool driver, beside psycopg_pool's :class:`~psycopg_pool.ConnectionPool`
and a bare :class:`gevent.queue.Queue` ``get``/``put``, in this process (not patched) and in a child
under ``python -m gevent.monkey`` (patched: where the green driver is meant to run). Each figure is
the median over repeats of the mean time of one operation in a repeat; the cases take turns, a
repeat each, so that load from elsewhere on the machine spreads over all of them.

What a figure is made of: ``check="never", reset="rollback"`` is the pool's bookkeeping alone (an
idle connection needs no rollback); the default ``check="auto"`` adds one zero-timeout ``poll``
of the socket (a system call, no round trip); ``reset="safe"`` adds a ``DISCARD ALL`` round trip.
The bare system call and round trip are timed on their own too, and a one-row statement alone and
carrying the safe reset as the ENGINE's connections carry it (what that costs: psycopg reading ten
results instead of one, the server running nine more statements, hybridpool's cursor). Prints a
table and the targets, writes ``bench/results/micro-*.json``.
"""

from __future__ import annotations

import argparse
import gc
import select
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import gevent.monkey

from bench import harness
from hybridpool.readiness import readable_now

#: Operations per repeat, and repeats per case.
ITERATIONS = 5000
REPEATS = 7
#: Longest repeat (s): a slow case runs fewer operations.
REPEAT_SECONDS = 0.5
#: Operations run before timing.
WARMUP = 200

#: Targets: the green driver's checkout+return (µs, reset="rollback", patched); the thread
#: driver's slowdown against psycopg_pool (ratio).
GREEN_TARGET_US = 3.0
THREAD_TARGET_RATIO = 1.10

Op = Callable[[], None]
Case = Callable[[str], tuple[Op, Op]]  # conninfo -> (one operation, clean-up)


def measure(op: Op, iterations: int) -> float:
    """Return the mean µs of one ``op`` over up to ``iterations`` calls, stopped after
    :data:`REPEAT_SECONDS`; the garbage collector is off while timing."""
    gc.disable()
    done = 0
    started = time.perf_counter()
    stop = started + REPEAT_SECONDS
    try:
        while done < iterations:
            for _ in range(100):
                op()
            done += 100
            if time.perf_counter() > stop:
                break
        return (time.perf_counter() - started) / done * 1e6
    finally:
        gc.enable()


def bare_queue(conninfo: str) -> tuple[Op, Op]:
    """``get`` then ``put`` of the one item of a :class:`gevent.queue.Queue`."""
    import gevent.queue

    queue: gevent.queue.Queue[object] = gevent.queue.Queue()
    queue.put(object())
    return lambda: queue.put(queue.get()), lambda: None


def psycopg_pool_case(reset: str | None) -> Case:
    """psycopg_pool's own :class:`~psycopg_pool.ConnectionPool`, no check; with ``reset``, given
    hybridpool's reset function of that name as its ``reset`` callback (which it runs in a worker)."""
    from psycopg_pool import ConnectionPool

    from hybridpool import lifecycle, steps

    def case(conninfo: str) -> tuple[Op, Op]:
        pool = ConnectionPool(conninfo, min_size=1, max_size=1, kwargs={"autocommit": True}, open=True,
                              reset=steps.bind(lifecycle.reset, policy=reset) if reset else None)
        pool.wait(10)
        return lambda: pool.putconn(pool.getconn()), pool.close

    return case


def hybridpool_case(driver: str, reset: str, check: str = "auto") -> Case:
    """A hybridpool pool of ``driver`` with ``reset`` and ``check``."""
    from hybridpool import create_pool

    def case(conninfo: str) -> tuple[Op, Op]:
        pool = create_pool(conninfo, driver=driver, min_size=1, max_size=1, reset=reset, check=check)
        pool.wait(10)
        return lambda: pool.putconn(pool.getconn()), pool.close

    return case


def round_trip(conninfo: str) -> tuple[Op, Op]:
    """``DISCARD ALL`` on a bare connection: the server round trip of ``reset="safe"``."""
    import psycopg

    conn = psycopg.connect(conninfo, autocommit=True)
    return lambda: conn.execute("DISCARD ALL", prepare=False), conn.close


#: A one-row statement, as Django's ORM sends them.
STATEMENT = "SELECT relname, relkind FROM pg_class WHERE oid = 1259"


def statement(carrier: str | None = None) -> Case:
    """:data:`STATEMENT` and its row through a new cursor of Django's (client-side binding) on a
    bare connection. With ``carrier``, after the safe reset's statements in the same query, as
    ``reset="safe"`` sends a connection's first statement: ``"psycopg"``, Django's cursor sends
    them, psycopg reads ten results, the last one is selected; ``"hybridpool"``, the reset is
    marked pending and :class:`hybridpool.cursors.ResettingCursor` carries it (its checks, the
    notifications it drops, the result and query it presents)."""

    def case(conninfo: str) -> tuple[Op, Op]:
        from django.db.backends.postgresql.base import Cursor

        from hybridpool import reset
        from hybridpool.cursors import CARRIED, CARRIER, PooledConnection, ResettingCursor

        factory = ResettingCursor if carrier == "hybridpool" else Cursor
        conn: Any = PooledConnection.connect(conninfo, autocommit=True, cursor_factory=factory)
        conn._pool = None  # as a pool's connection

        def plain() -> None:
            with conn.cursor() as cursor:
                cursor.execute(STATEMENT)
                cursor.fetchone()

        def by_psycopg() -> None:
            with conn.cursor() as cursor:
                cursor.execute(CARRIER + STATEMENT)
                cursor._select_current_result(len(CARRIED))
                cursor.fetchone()

        def by_hybridpool() -> None:
            reset.mark_pending(conn)
            plain()

        return {None: plain, "psycopg": by_psycopg, "hybridpool": by_hybridpool}[carrier], conn.close

    return case


def socket_poll(poll: Callable[[int], Any]) -> Case:
    """``poll(fd)``, a zero-timeout poll of a bare connection's socket (``check="auto"``'s)."""

    def case(conninfo: str) -> tuple[Op, Op]:
        import psycopg

        conn = psycopg.connect(conninfo, autocommit=True)
        fd = conn.pgconn.socket
        return lambda: poll(fd), conn.close

    return case


def select_poll(select_function: Callable[..., Any]) -> Callable[[int], Any]:
    """``select_function([fd], [], [], 0)``, as a ``poll`` for :func:`socket_poll`."""
    return lambda fd: select_function([fd], [], [], 0)


#: The rows of the bare server round trip and system call.
POLL, ROUND_TRIP = "syscall: poll(fd, 0) holding the GIL (readable_now)", "round trip: DISCARD ALL"

#: name -> (case, iterations per repeat)
CASES: dict[str, tuple[Case, int]] = {
    "gevent.queue.Queue get+put": (bare_queue, ITERATIONS),
    "psycopg_pool (no check, no reset)": (psycopg_pool_case(None), ITERATIONS),
    "psycopg_pool reset=hybridpool rollback": (psycopg_pool_case("rollback"), ITERATIONS // 5),
    "psycopg_pool reset=hybridpool safe": (psycopg_pool_case("safe"), ITERATIONS // 5),
    "thread driver check=never reset=rollback": (hybridpool_case("thread", "rollback", "never"), ITERATIONS),
    "thread driver reset=rollback": (hybridpool_case("thread", "rollback"), ITERATIONS),
    "thread driver reset=safe": (hybridpool_case("thread", "safe"), ITERATIONS // 5),
    "green driver check=never reset=rollback": (hybridpool_case("gevent", "rollback", "never"), ITERATIONS),
    "green driver reset=rollback": (hybridpool_case("gevent", "rollback"), ITERATIONS),
    "green driver reset=safe": (hybridpool_case("gevent", "safe"), ITERATIONS // 5),
    ROUND_TRIP: (round_trip, ITERATIONS // 5),
    "statement: Django's cursor": (statement(), ITERATIONS // 5),
    "statement carrying the reset: psycopg": (statement("psycopg"), ITERATIONS // 5),
    "statement carrying the reset: ResettingCursor": (statement("hybridpool"), ITERATIONS // 5),
    POLL: (socket_poll(readable_now), ITERATIONS),
    "syscall: select(fd, 0), unpatched": (socket_poll(select_poll(gevent.monkey.get_original("select", "select"))),
                                          ITERATIONS),
    "select.select(fd, 0) as patched": (socket_poll(select_poll(select.select)), ITERATIONS),
}


def run_cases(conninfo: str, repeats: int) -> dict[str, list[float]]:
    """Time every case in this process; return name -> per-repeat µs.

    The cases take turns, one repeat each per round, so that a burst of load from elsewhere on
    the machine falls on all of them rather than on one.
    """
    results: dict[str, list[float]] = {name: [] for name in CASES}
    with ExitStack() as stack:
        ops = {}
        for name, (case, iterations) in CASES.items():
            op, cleanup = case(conninfo)
            stack.callback(cleanup)
            for _ in range(WARMUP):
                op()
            ops[name] = (op, iterations)
        for _ in range(repeats):
            for name, (op, iterations) in ops.items():
                results[name].append(measure(op, iterations))
    return results


def summarize(runs: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """Medians per case and process, and the verdicts on the targets."""
    medians = {proc: {name: statistics.median(us) for name, us in cases.items()} for proc, cases in runs.items()}
    checks = {}
    for green in ("green driver reset=rollback", "green driver check=never reset=rollback"):
        us = medians["patched"][green]
        checks[f"{green} (patched) <= {GREEN_TARGET_US} us"] = (us, us <= GREEN_TARGET_US)
    for thread, reference in (("thread driver check=never reset=rollback", "psycopg_pool (no check, no reset)"),
                              ("thread driver reset=rollback", "psycopg_pool reset=hybridpool rollback"),
                              ("thread driver reset=safe", "psycopg_pool reset=hybridpool safe")):
        ratio = medians["plain"][thread] / medians["plain"][reference]
        checks[f"{thread} / {reference} (plain) <= {THREAD_TARGET_RATIO}"] = (ratio, ratio <= THREAD_TARGET_RATIO)
    return {"medians_us": medians, "targets": {k: {"value": v, "pass": ok} for k, (v, ok) in checks.items()}}


def report(runs: dict[str, dict[str, list[float]]], summary: dict[str, Any]) -> None:
    """Print the table of medians (µs) and the targets."""
    procs = list(runs)
    rows = [[name, *(f"{statistics.median(runs[p][name]):.2f} ({min(runs[p][name]):.2f}-{max(runs[p][name]):.2f})"
                     for p in procs)] for name in CASES]
    harness.print_table(["checkout+return of an idle connection, µs: median (min-max)", *procs], rows)
    for proc in procs:
        m = summary["medians_us"][proc]
        for driver in ("thread", "green"):
            book = m[f"{driver} driver check=never reset=rollback"]
            auto, safe = m[f"{driver} driver reset=rollback"], m[f"{driver} driver reset=safe"]
            print(f"{proc}, {driver} driver: bookkeeping {book:.2f} µs (check=never, reset=rollback);"
                  f" check=auto's socket poll adds {auto - book:.2f} µs (bare: {m[POLL]:.2f});"
                  f" reset=safe adds {safe - auto:.2f} µs (bare DISCARD ALL round trip: {m[ROUND_TRIP]:.2f})")
    for name, target in summary["targets"].items():
        print(f"{harness.verdict(target['pass'])}  {name}: {target['value']:.2f}")


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, or (``--child``) its patched half."""
    parser = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=REPEATS, help="repeats per case (default %(default)s)")
    parser.add_argument(harness.CHILD_FLAG, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    with harness.database("hybridpool_bench_micro") as conninfo:
        if args.child:
            import json

            print(json.dumps(run_cases(conninfo, args.repeats)))
            return
        runs = {"plain": run_cases(conninfo, args.repeats),
                "patched": harness.run_patched_child("bench.micro", conninfo, ["--repeats", str(args.repeats)])}
    summary = summarize(runs)
    report(runs, summary)
    path = harness.write_results("micro", {"repeats_us": runs, **summary})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
