"""Spike test (HikariCP's): 50 borrowers at once on a pool whose connections take 150 ms to open.

``python -m bench.spike`` puts :mod:`bench.proxy` (150 ms before each new connection reaches the
server) in front of PostgreSQL and, for each pool, in a child process of its own: opens it with
``min_size=5, max_size=50`` and waits for the 5; then starts 50 borrowers at once, each holding a
connection for 2 ms. This process counts the pool's server connections (``pg_stat_activity`` by
``application_name``) every 10 ms from before the spike to 2 s after it. A pool that opens a
connection for each waiter ends with 50; one that lets the 5 warm connections serve the burst
(50 x 2 ms is over long before a new connection is ready) ends with about 6.

Pools: the green driver (child under ``python -m gevent.monkey``, borrowers are greenlets), the
thread driver and psycopg_pool's :class:`~psycopg_pool.ConnectionPool` (borrowers are threads).
Target: at most 7 server connections at the end. Prints a table, writes ``bench/results/spike-*.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench import harness

MIN_SIZE, MAX_SIZE = 5, 50
BORROWERS = 50
HOLD = 0.002  # s a borrower keeps its connection
CONNECT_DELAY = 0.15  # s the proxy waits before connecting onward
SAMPLE_EVERY = 0.01  # s
WATCH = 2.0  # s watched after the spike starts
SETTLE = 0.5  # s between the pool being ready and the spike
TARGET = 7  # server connections at most at the end
COUNT_QUERY = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"

#: pool -> run patched
POOLS = {"green driver": True, "thread driver": False, "psycopg_pool": False}


def proxy_target(conninfo: str) -> str:
    """Where the proxy connects onward: the server's UNIX socket path, or ``host:port``."""
    params = conninfo_to_dict(conninfo)
    host, port = params.get("host") or "/tmp", params.get("port") or "5432"
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else f"{host}:{port}"


def make_pool(name: str, conninfo: str) -> Any:
    """Open pool ``name`` on ``conninfo`` with the spike's sizes and wait for ``min_size``."""
    if name == "psycopg_pool":
        from psycopg_pool import ConnectionPool

        pool = ConnectionPool(conninfo, min_size=MIN_SIZE, max_size=MAX_SIZE, kwargs={"autocommit": True}, open=True)
    else:
        from hybridpool import create_pool

        pool = create_pool(conninfo, driver="gevent" if name == "green driver" else "thread",
                           min_size=MIN_SIZE, max_size=MAX_SIZE)
    pool.wait(30)
    return pool


def spike(pool: Any) -> dict[str, Any]:
    """Start :data:`BORROWERS` borrowers at once, each holding a connection :data:`HOLD` seconds;
    return when it started (monotonic s, comparable across processes), when the last one was done,
    and the longest wait (s). Borrowers are threads: greenlets when gevent has patched threading."""
    go = threading.Event()
    waits: list[float] = []

    def borrow() -> None:
        go.wait()
        asked = time.monotonic()
        with pool.connection(timeout=10):
            waits.append(time.monotonic() - asked)
            time.sleep(HOLD)

    threads = [threading.Thread(target=borrow) for _ in range(BORROWERS)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)  # let every borrower reach go.wait()
    started = time.monotonic()
    go.set()
    for thread in threads:
        thread.join(15)
    done = time.monotonic()
    return {"spike_at": started, "done_at": done, "served": len(waits), "max_wait_s": max(waits, default=0.0)}


def child(name: str, conninfo: str) -> dict[str, Any]:
    """The child's part: open the pool, spike, stay open :data:`WATCH` seconds, report."""
    pool = make_pool(name, conninfo)
    try:
        time.sleep(SETTLE)
        result = spike(pool)
        time.sleep(max(result["spike_at"] + WATCH - time.monotonic(), 0.0))
        return {**result, "stats": pool.get_stats()}
    finally:
        pool.close()


def sample(conninfo: str, app: str, until: subprocess.Popen[str], limit: float) -> list[tuple[float, int]]:
    """Count the server connections of ``application_name`` ``app`` every :data:`SAMPLE_EVERY`
    seconds while process ``until`` runs, for ``limit`` seconds at most: (monotonic s, count)."""
    samples = []
    start = time.monotonic()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for tick in range(int(limit / SAMPLE_EVERY)):
            if until.poll() is not None:
                break
            row = conn.execute(COUNT_QUERY, [app]).fetchone()
            samples.append((time.monotonic(), row[0] if row else 0))
            time.sleep(max(start + (tick + 1) * SAMPLE_EVERY - time.monotonic(), 0.0))
    return samples


def run_pool(name: str, conninfo: str, proxy_port: int) -> dict[str, Any]:
    """Run pool ``name`` in a child through the proxy, sampling its server connections here."""
    app = f"spike-{uuid.uuid4().hex[:8]}"
    through_proxy = make_conninfo(conninfo, host="127.0.0.1", port=str(proxy_port), application_name=app)
    command = [sys.executable, "-m", "gevent.monkey", "--module"] if POOLS[name] else [sys.executable, "-m"]
    with subprocess.Popen([*command, "bench.spike", harness.CHILD_FLAG, name, through_proxy],
                          cwd=Path(__file__).parent.parent, stdout=subprocess.PIPE, text=True) as proc:
        samples = sample(conninfo, app, proc, harness.CHILD_TIMEOUT)
        out, _ = proc.communicate(timeout=harness.CHILD_TIMEOUT)
    if proc.returncode:
        raise RuntimeError(f"the {name} child failed with exit status {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    at = result["spike_at"]
    series = [(round(t - at, 3), n) for t, n in samples if -SETTLE <= t - at <= WATCH]
    return {**result, "series": series, "before": series[0][1] if series else None,
            "peak": max((n for _, n in series), default=0), "end": series[-1][1] if series else None}


def report(results: dict[str, dict[str, Any]]) -> None:
    """Print the table, the sampled series (every 100 ms) and the verdicts."""
    rows = [[name, r["before"], r["peak"], r["end"], f"{1000 * r['max_wait_s']:.1f}",
             f"{1000 * (r['done_at'] - r['spike_at']):.1f}", r["served"], harness.verdict(r["end"] <= TARGET)]
            for name, r in results.items()]
    harness.print_table(["pool", "conns before", "peak", "end (2 s)", "longest wait ms", "spike done ms",
                         "served", f"end <= {TARGET}"], rows)
    for name, r in results.items():
        every = [f"{t:+.1f}s:{n}" for i, (t, n) in enumerate(r["series"]) if i % 10 == 0]
        print(f"{name}: {' '.join(every)}")


def main(argv: list[str] | None = None) -> None:
    """Run the spike test, or (``--child NAME CONNINFO``) one pool's part of it."""
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == harness.CHILD_FLAG:
        print(json.dumps(child(sys.argv[2], sys.argv[3])))
        return
    parser = argparse.ArgumentParser(prog="python -m bench.spike", description=__doc__.split("\n")[0])
    parser.add_argument("--pool", choices=list(POOLS), action="append", help="run only this pool (repeatable)")
    args = parser.parse_args(argv)
    with harness.database("hybridpool_bench_spike") as conninfo:
        with subprocess.Popen([sys.executable, "-m", "bench.proxy", proxy_target(conninfo),
                               "--delay", str(CONNECT_DELAY), "--seconds", "600"],
                              cwd=Path(__file__).parent.parent, stdout=subprocess.PIPE, text=True) as proxy:
            try:
                port = int(proxy.stdout.readline()) if proxy.stdout else 0
                results = {name: run_pool(name, conninfo, port) for name in (args.pool or POOLS)}
            finally:
                proxy.terminate()
    report(results)
    print(f"results: {harness.write_results('spike', results)}")


if __name__ == "__main__":
    main()
