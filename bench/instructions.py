"""Instructions per request, counted by callgrind: the steadiest figure for small changes.

``python -m bench.instructions [--engines hybridpool-native,hybridpool-asgi,hybridpool,builtin]
[--view afirst] [--requests 100,400]`` creates a fresh database, then for each engine runs a child
under ``valgrind --tool=callgrind`` twice, sending ``--requests`` requests (after 50 of warm-up)
one at a time through the engine's ASGI application in-process (no server, no sockets: the
``receive`` and ``send`` of :func:`bench.breakdown.one_request`), and prints the difference of the
two totals divided by the difference of the counts: what one request costs the whole process
(every thread: the event loop's, the request threads, the pools' workers), start-up and warm-up
left out. The engines of :data:`bench.engines.HYBRID_ASGI` run under hybridpool's application,
whose loop is marked as serving (``NativeQuerySet`` reads natively); the others under Django's.

User-space instructions only: a system call counts its libc wrapper, not the kernel's work, and
nothing of PostgreSQL's backends, and no waiting: a thread hop costs few instructions and much
CPU time (the kernel's, the GIL's handovers). Runs of the same code differ by up to about 20,000
instructions per request (about 0.7 %), even back to back: compare engines or versions measured
in one run, and read no smaller difference as a gain. Needs valgrind (``apt-get install valgrind``); about a
minute per engine.

Writes ``bench/results/instructions-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import harness, servers
from .e2e import names
from .engines import HYBRID_ASGI

DBNAME = "hybridpool_bench_instructions"
ENGINES = ("hybridpool-native", "hybridpool-asgi", "hybridpool", "builtin")
BASELINE = "builtin"
WARMUP = 50
#: The pools' cap, as in ``bench.e2e``.
MAX_SIZE = 20
COLLECTED = re.compile(r"Collected : (\d+)")


def child(view: str, requests: int) -> int:
    """In the child (under callgrind): ``WARMUP`` then ``requests`` requests of ``/<view>/``,
    through the application uvicorn serves for the engine in ``bench.e2e``."""
    from hybridpool import registry

    from .breakdown import get_scope, one_request

    hybrid = os.environ["BENCH_ENGINE"] in HYBRID_ASGI
    app = importlib.import_module("bench.app.hybrid_asgi" if hybrid else "bench.app.asgi").application
    scope = get_scope(f"/{view}/")

    async def run() -> None:
        if hybrid:
            registry.serving(asyncio.get_running_loop())  # what its lifespan.startup does under uvicorn
        for _ in range(WARMUP + requests):
            status = await one_request(app, scope)
            assert status == 200, status

    asyncio.run(run())
    return 0


def count(engine: str, conninfo: str, view: str, requests: int) -> int:
    """Total user-space instructions of a child sending ``requests`` requests (callgrind's count).

    :raises RuntimeError: callgrind printed no count (the child failed: its output is included).
    """
    env = {**servers.bench_environment("bench-instructions", engine, conninfo, MAX_SIZE), "HYBRIDPOOL_BENCH_CHILD": "1"}
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={scratch}/out.%p",
                               sys.executable, "-m", "bench.instructions", harness.CHILD_FLAG, view, str(requests)],
                              env=env, cwd=Path(__file__).parent.parent, capture_output=True, text=True,
                              timeout=harness.CHILD_TIMEOUT)
    found = COLLECTED.findall(done.stderr)
    if done.returncode or not found:
        raise RuntimeError(f"{engine}: callgrind counted nothing (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return int(found[0])  # the first process's: the child itself


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [harness.CHILD_FLAG]:
        return child(argv[1], int(argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", type=names, default=list(ENGINES), help=f"default: {','.join(ENGINES)}")
    parser.add_argument("--view", default="afirst", help="default: afirst (one afirst() per request)")
    parser.add_argument("--requests", type=lambda text: [int(n) for n in names(text)], default=[100, 400],
                        help="the two request counts whose totals are compared, default 100,400")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        parser.error("needs valgrind: apt-get install valgrind")
    few, many = args.requests
    per_request: dict[str, float] = {}
    with harness.database(DBNAME) as conninfo:
        servers.migrate(conninfo)
        for engine in args.engines:
            totals = [count(engine, conninfo, args.view, n) for n in (few, many)]
            per_request[engine] = (totals[1] - totals[0]) / (many - few)
            print(f"{engine:20} {per_request[engine] / 1e3:8.0f}k instructions per request", flush=True)
    base = per_request.get(BASELINE)
    table = [[engine, f"{value / 1e3:.0f}k", f"{value / base:.3f}" if base else "-"] for engine, value in per_request.items()]
    harness.print_table(["engine", "instructions/request", f"x {BASELINE}"], table)
    path = harness.write_results("instructions", {"args": vars(args), "per_request": per_request})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
