"""A fault injector that interrupts a borrower at each point where it waits on the server.

It is not a mock: the pool and the database are real, and the interruption is the one a real
borrower gets, delivered where it waits:

- a greenlet (:func:`in_greenlet`): a ``gevent.Timeout`` or ``GreenletExit`` thrown into it at its
  k-th switch to the hub, which is where gevent's ``Timeout`` and ``kill()`` land;
- an OS thread (:func:`in_thread`): ``KeyboardInterrupt`` (what an OS thread can be interrupted by)
  raised as it enters its k-th wait on the server: psycopg's ``Connection.wait``, its cancel's
  ``wait_conn``, or the wait for a sent reset's answer (:func:`hybridpool.steps._wait_socket`);
- an asyncio task (:func:`in_task`): ``CancelledError`` thrown into the coroutine at its k-th
  suspension, exactly where ``Task.cancel()`` throws it.

:func:`every_point` runs an operation interrupted at its first wait, then at its second, and so on,
until a run completes without reaching the point, calling ``after_each`` after every run.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import psycopg
import psycopg.waiting

from hybridpool import steps

#: Longest a single interrupted run may take (s).
RUN_SECONDS = 20.0


def in_greenlet(operation: Callable[[], Any], k: int, exception: BaseException) -> bool:
    """Run ``operation`` in a new greenlet and throw ``exception`` into it at its ``k``-th switch
    away (a wait). Return True if the point was reached (the exception was thrown)."""
    import gevent
    import greenlet

    reached = False
    switches = 0
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            operation()
        except BaseException as ex:  # noqa: BLE001 - the interruption itself, or a real failure
            outcome.append(ex)

    borrower = gevent.Greenlet(run)

    def trace(event: str, args: tuple[Any, Any]) -> None:
        nonlocal switches, reached
        if event in ("switch", "throw") and args[0] is borrower and not reached:
            switches += 1
            if switches == k:
                reached = True
                borrower.kill(exception, block=False)  # thrown where it waits, as gevent.Timeout is
        if previous is not None:
            previous(event, args)

    previous = greenlet.settrace(trace)
    try:
        borrower.start()
        borrower.join(RUN_SECONDS)
    finally:
        greenlet.settrace(previous)
    assert borrower.dead, "the interrupted borrower did not finish"
    if outcome and not reached:
        raise outcome[0]
    return reached


#: The functions a borrower thread enters to wait on the server.
THREAD_WAITS = {psycopg.Connection.wait.__code__, psycopg.waiting.wait_conn.__code__, steps._wait_socket.__code__}


def in_thread(operation: Callable[[], Any], k: int, exception: BaseException | None = None) -> bool:
    """Run ``operation`` in a new thread and raise ``exception`` (default ``KeyboardInterrupt``) as
    it enters its ``k``-th wait on the server. Return True if the point was reached."""
    reached = False
    waits = 0
    outcome: list[BaseException] = []

    def trace(frame: Any, event: str, arg: Any) -> Any:
        nonlocal waits, reached
        if event == "call" and frame.f_code in THREAD_WAITS and not reached:
            waits += 1
            if waits == k:
                reached = True
                raise exception or KeyboardInterrupt()
        return None

    def run() -> None:
        sys.settrace(trace)
        try:
            operation()
        except BaseException as ex:  # noqa: BLE001 - the interruption itself, or a real failure
            outcome.append(ex)
        finally:
            sys.settrace(None)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(RUN_SECONDS)
    assert not thread.is_alive(), "the interrupted borrower did not finish"
    if outcome and not reached:
        raise outcome[0]
    return reached


class _Interrupted:
    """Await a coroutine, throwing ``CancelledError`` into it at its ``k``-th suspension."""

    def __init__(self, coro: Coroutine[Any, Any, Any], k: int) -> None:
        self.coro, self.k, self.reached = coro, k, False

    def __await__(self) -> Generator[Any, Any, Any]:
        suspensions = 0
        send: Any = None
        throw: BaseException | None = None
        while True:
            try:
                yielded = self.coro.throw(throw) if throw is not None else self.coro.send(send)
            except StopIteration as stop:
                return stop.value
            throw = None
            suspensions += 1
            if suspensions == self.k:
                self.reached = True
                throw = asyncio.CancelledError()
                if isinstance(yielded, asyncio.Future):
                    yielded.cancel()  # what Task.cancel() does to the future it waits on
                continue
            try:
                send = yield yielded
            except BaseException as ex:  # noqa: BLE001 - passed on into the coroutine
                throw = ex


async def in_task(operation: Callable[[], Awaitable[Any]], k: int) -> bool:
    """Await ``operation()`` and cancel it at its ``k``-th suspension. Return True if the point
    was reached."""
    interrupted = _Interrupted(operation(), k)  # type: ignore[arg-type]
    try:
        await asyncio.wait_for(interrupted, RUN_SECONDS)
    except asyncio.CancelledError:
        if not interrupted.reached:
            raise
    return interrupted.reached


def every_point(run: Callable[[int], bool], after_each: Callable[[], None], limit: int = 200) -> int:
    """Call ``run(k)`` for k = 1, 2, ... until it returns False (the operation ended before its
    k-th wait), calling ``after_each()`` after every run. Return how many points were interrupted."""
    for k in range(1, limit):
        reached = run(k)
        after_each()
        if not reached:
            return k - 1
    raise AssertionError(f"the operation still waited after {limit} interruptions")


async def aevery_point(run: Callable[[int], Awaitable[bool]], after_each: Callable[[], Awaitable[None]],
                       limit: int = 200) -> int:
    """:func:`every_point` for an async ``run`` and ``after_each``."""
    for k in range(1, limit):
        reached = await run(k)
        await after_each()
        if not reached:
            return k - 1
    raise AssertionError(f"the operation still waited after {limit} interruptions")
