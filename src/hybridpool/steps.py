"""Sans-I/O steps: what a connection's check, reset and return do is written once, as generators
that say what to wait for; a thin runner does the waiting, blocking (:func:`run`) or awaiting
(:func:`arun`).

A procedure is a generator (:data:`Steps`) that yields an :class:`Op` whenever it needs the server,
gets the op's result back (or its exception, thrown in at the ``yield``), and returns its own
result. What needs no waiting (libpq's non-blocking ``send_query``, ``get_result`` on input already
read, the marks the pools keep on a connection) it does itself. The same procedure then serves a
``psycopg.Connection`` in a thread or greenlet and a ``psycopg.AsyncConnection`` in an event loop,
which cannot drift apart. The pattern is psycopg's own: its ``generators`` module holds the
protocol and ``waiting`` the sync and async ways to wait (psycopg's ``waiting.wait`` and
``wait_async``).

An interruption (``gevent.Timeout``, ``GreenletExit``, ``KeyboardInterrupt``, ``CancelledError``)
raised while an op waits is thrown into the procedure like any exception, so its ``try`` blocks
and ``finally`` clauses run as in plain code.
"""

from __future__ import annotations

import asyncio
import inspect
import select
from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import partial
from time import monotonic
from typing import Any, TypeVar

import psycopg

T = TypeVar("T")

#: A procedure: yields ops, is sent their results, returns a ``T``.
Steps = Generator["Op", Any, T]


class Op:
    """One thing a procedure waits for: :meth:`run` does it blocking, :meth:`arun` awaiting."""

    __slots__ = ()

    def run(self, conn: psycopg.Connection[Any]) -> Any:
        raise NotImplementedError

    async def arun(self, conn: psycopg.AsyncConnection[Any]) -> Any:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Execute(Op):
    """Run ``query`` (unprepared: a pool's own statement must not take a place in psycopg's
    prepared-statement cache); the result is not read."""

    query: Any

    def run(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(self.query, prepare=False)

    async def arun(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(self.query, prepare=False)


@dataclass(frozen=True, slots=True)
class Rollback(Op):
    """End the connection's transaction (psycopg's ``rollback()``)."""

    def run(self, conn: psycopg.Connection[Any]) -> None:
        conn.rollback()

    async def arun(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.rollback()


@dataclass(frozen=True, slots=True)
class SetAttribute(Op):
    """Set one of psycopg's client-side attributes (``autocommit``, ``isolation_level``, ...):
    ``conn.name = value``, or ``await conn.set_name(value)``."""

    name: str
    value: Any

    def run(self, conn: psycopg.Connection[Any]) -> None:
        setattr(conn, self.name, self.value)

    async def arun(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await getattr(conn, f"set_{self.name}")(self.value)


@dataclass(frozen=True, slots=True)
class Cancel(Op):
    """Ask the server to stop the running query (psycopg's ``cancel_safe``, which waits at most
    ``timeout`` seconds)."""

    timeout: float

    def run(self, conn: psycopg.Connection[Any]) -> None:
        conn.cancel_safe(timeout=self.timeout)

    async def arun(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.cancel_safe(timeout=self.timeout)


@dataclass(frozen=True, slots=True)
class Call(Op):
    """Call a user's function with the connection (a ``check``, ``configure`` or ``reset``
    setting); for an async connection it may be a coroutine function. Returns its result."""

    function: Callable[..., Any]

    def run(self, conn: psycopg.Connection[Any]) -> Any:
        return self.function(conn)

    async def arun(self, conn: psycopg.AsyncConnection[Any]) -> Any:
        result = self.function(conn)
        return await result if inspect.isawaitable(result) else result


@dataclass(frozen=True, slots=True)
class WaitSocket(Op):
    """Wait until ``conn``'s socket is readable (writable if ``write``), until the monotonic
    ``deadline`` at the latest.

    :raises psycopg.OperationalError: the deadline passed; ``what`` says what was awaited.
    """

    deadline: float
    what: str
    write: bool = False

    def run(self, conn: psycopg.Connection[Any]) -> None:
        _wait_socket(conn.pgconn.socket, self._remaining(), self.write)

    async def arun(self, conn: psycopg.AsyncConnection[Any]) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        fileno = conn.pgconn.socket
        add, remove = (loop.add_writer, loop.remove_writer) if self.write else (loop.add_reader, loop.remove_reader)
        add(fileno, _set_done, ready)
        try:
            async with asyncio.timeout(self._remaining()):
                await ready
        except TimeoutError:
            raise self._late() from None
        finally:
            remove(fileno)

    def _remaining(self) -> float:
        remaining = self.deadline - monotonic()
        if remaining <= 0:
            raise self._late()
        return remaining

    def _late(self) -> psycopg.OperationalError:
        return psycopg.OperationalError(f"no answer to {self.what} in time")


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _wait_socket(fileno: int, timeout: float, write: bool) -> None:
    """``select.select`` on one socket: cooperative once gevent has patched it."""
    fds = [fileno]
    select.select([] if write else fds, fds if write else [], [], timeout)


class _Progress:
    """A procedure under way, whose ``first`` op is due: :meth:`next` gives the op to do next,
    with what the last one gave (``value``) or raised (``error``) sent in, or None once the
    procedure returned ``result``."""

    __slots__ = ("steps", "first", "value", "error", "result")

    def __init__(self, steps: Steps[Any], first: Op) -> None:
        self.steps = steps
        self.first: Op | None = first
        self.value: Any = None
        self.error: BaseException | None = None
        self.result: Any = None

    def next(self) -> Op | None:
        if (first := self.first) is not None:
            self.first = None
            return first
        error, self.error = self.error, None
        try:
            return self.steps.send(self.value) if error is None else self.steps.throw(error)
        except StopIteration as stop:
            self.result = stop.value
            return None


def run(steps: Steps[T], conn: psycopg.Connection[Any]) -> T:
    """Run a procedure on a sync connection, blocking at each op; return its result."""
    try:
        first = next(steps)  # most procedures end without waiting: no more bookkeeping for them
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]  # the procedure's T
    progress = _Progress(steps, first)
    while (op := progress.next()) is not None:
        try:
            progress.value = op.run(conn)
        except BaseException as ex:  # noqa: BLE001 - thrown into the procedure, which decides
            progress.error = ex
    return progress.result  # type: ignore[no-any-return]  # the procedure's T


async def arun(steps: Steps[T], conn: psycopg.AsyncConnection[Any]) -> T:
    """Run a procedure on an async connection, awaiting each op; return its result."""
    try:
        first = next(steps)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]  # the procedure's T
    progress = _Progress(steps, first)
    while (op := progress.next()) is not None:
        try:
            progress.value = await op.arun(conn)
        except BaseException as ex:  # noqa: BLE001 - thrown into the procedure, which decides
            progress.error = ex
    return progress.result  # type: ignore[no-any-return]  # the procedure's T


def bind(procedure: Callable[..., Steps[Any]], *, asynchronous: bool = False,
         at_once: Callable[..., bool] | None = None, **settings: Any) -> Callable[[Any], Any]:
    """Return a function of one connection that runs ``procedure(conn, **settings)``: with
    :func:`run`, or with :func:`arun` (a coroutine function) if ``asynchronous``. How a pool
    binds its settings to the procedures it runs on checkout and return.

    :param at_once: the procedure's common case, done on the spot: ``at_once(conn, **settings)``
        returns True if it did all the procedure would do without waiting on the server (the
        function then returns True, the procedure does not run), False if the procedure must run
        (having changed nothing). A warm checkout or return then costs one call, without a
        generator (``bench.micro``: the green driver's checkout and return, 2.72 µs against 3.66 µs).
    """
    bound = partial(procedure, **settings)
    if asynchronous:
        async def run_async(conn: psycopg.AsyncConnection[Any]) -> Any:
            if at_once is not None and at_once(conn, **settings):
                return True
            return await arun(bound(conn), conn)

        return run_async

    def run_sync(conn: psycopg.Connection[Any]) -> Any:
        return (at_once is not None and at_once(conn, **settings)) or run(bound(conn), conn)

    return run_sync
