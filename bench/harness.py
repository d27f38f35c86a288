"""What the benchmarks share: a database, a patched child process, results files and tables.

The micro benchmark runs its unpatched cases in its own process and its gevent-patched cases in a
child started under ``python -m gevent.monkey`` (patching must come before anything imports
psycopg or ``threading``); the child reaches the same database through ``DATABASE_URL`` and prints
its results as one JSON document on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hybridpool
from hybridpool import embedded

#: Where the JSON results go.
RESULTS = Path(__file__).parent / "results"

#: The flag a benchmark module gets when it runs as a child.
CHILD_FLAG = "--child"

#: Longest run of a patched child (s).
CHILD_TIMEOUT = 300.0


@contextmanager
def database(name: str) -> Iterator[str]:
    """Yield the conninfo of a fresh database ``name`` (dropped at exit).

    On ``DATABASE_URL`` if set (the patched child gets its parent's this way), else on a
    throwaway embedded server.
    """
    with embedded.server_url() as url:
        if os.environ.get("HYBRIDPOOL_BENCH_CHILD"):
            yield url  # the parent's database: it owns it
            return
        conninfo = embedded.create_database(url, name)
        try:
            yield conninfo
        finally:
            embedded.drop_database(url, name)


def run_patched_child(module: str, conninfo: str, args: Sequence[str] = ()) -> Any:
    """Run ``python -m gevent.monkey --module <module> --patched-child`` on ``conninfo``; return
    the JSON document it prints last on stdout.

    :raises subprocess.CalledProcessError: the child failed; its stderr is passed through.
    :raises subprocess.TimeoutExpired: it ran longer than :data:`CHILD_TIMEOUT` seconds.
    """
    env = {**os.environ, "DATABASE_URL": conninfo, "HYBRIDPOOL_BENCH_CHILD": "1"}
    cwd = Path(__file__).parent.parent
    done = subprocess.run([sys.executable, "-m", "gevent.monkey", "--module", module, CHILD_FLAG, *args],
                          env=env, cwd=cwd, stdout=subprocess.PIPE, text=True, timeout=CHILD_TIMEOUT, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_results(name: str, data: Any, directory: Path = RESULTS) -> Path:
    """Write ``data`` to ``<directory>/<name>-<UTC time>.json`` (default ``bench/results/``) with
    the Python version and the hybridpool source it ran; return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    ran = {"python": sys.version, "hybridpool": str(Path(hybridpool.__file__).parent)}
    path.write_text(json.dumps({**ran, **data}, indent=2) + "\n")
    return path


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print ``rows`` as a Markdown table under ``headers``."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print("\n".join(lines))


def _cell(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def verdict(ok: bool) -> str:
    """PASS or MISS."""
    return "PASS" if ok else "MISS"
