"""The core's bookkeeping on fake connections, with a failure or an interruption injected at each step.

Beside the real-server tests: what a pool does to a connection on checkout and return is a set of
sans-I/O procedures (:mod:`hybridpool.steps`), so a connection that only records what it is asked
to do can drive them, and a failure can be thrown in at every op they wait for, by the same
runners the pools use (blocking and async). The libpq side of the fake has a real socket (one end of
a ``socketpair``), so the waits are real waits. ``Capacity`` is driven through random sequences of
what its drivers do, its invariants checked after every step.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.pq import ExecStatus, TransactionStatus

from hybridpool import lifecycle, reset, steps
from hybridpool.capacity import Capacity

IDLE, INTRANS, ACTIVE = TransactionStatus.IDLE, TransactionStatus.INTRANS, TransactionStatus.ACTIVE


class FakeResult:
    status = ExecStatus.COMMAND_OK
    nfields = 0
    error_message = b""


class FakePGconn:
    """libpq's side: ``send_query`` is answered at once, on a real socket, read by ``consume_input``."""

    def __init__(self, status: TransactionStatus) -> None:
        self.transaction_status = status
        self._server, self._client = socket.socketpair()
        self.socket = self._client.fileno()
        self.sent: list[bytes] = []
        self.finished = False
        self._client.setblocking(False)
        self._busy = False
        self._results: list[FakeResult] = []
        self.answers = True  # False: the server says nothing (gone, or slow)

    def send_query(self, query: bytes) -> None:
        self.sent.append(query)
        self._busy = True
        if self.answers:
            self._server.send(b"!")

    def flush(self) -> int:
        return 0

    def consume_input(self) -> None:
        try:
            self._client.recv(1)
        except BlockingIOError:
            return
        self._busy, self._results = False, [FakeResult()]

    def is_busy(self) -> bool:
        return self._busy

    def get_result(self) -> FakeResult | None:
        return self._results.pop(0) if self._results else None

    def notifies(self) -> None:
        return None

    def finish(self) -> None:
        self.finished = True

    def close(self) -> None:
        self._server.close()
        self._client.close()


class FakeConnection:
    """psycopg's side: records the ops it is asked to do."""

    closed = False

    def __init__(self, status: TransactionStatus = IDLE, *, autocommit: bool = True) -> None:
        self.pgconn = FakePGconn(status)
        self.autocommit, self.isolation_level, self.read_only, self.deferrable = autocommit, None, None, None
        self.done: list[str] = []

    def execute(self, query: Any, prepare: bool | None = None) -> None:
        self.done.append(f"execute {query!r}")

    def rollback(self) -> None:
        self.done.append("rollback")
        self.pgconn.transaction_status = IDLE

    def cancel_safe(self, timeout: float) -> None:
        self.done.append("cancel")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("autocommit", "isolation_level") and hasattr(self, "done"):
            self.done.append(f"{name}={value}")
        super().__setattr__(name, value)


class AsyncFakeConnection(FakeConnection):
    async def execute(self, query: Any, prepare: bool | None = None) -> None:  # type: ignore[override]
        FakeConnection.execute(self, query)

    async def rollback(self) -> None:  # type: ignore[override]
        FakeConnection.rollback(self)

    async def cancel_safe(self, timeout: float) -> None:  # type: ignore[override]
        FakeConnection.cancel_safe(self, timeout)

    async def set_autocommit(self, value: bool) -> None:
        self.autocommit = value


def run_sync(procedure: steps.Steps[Any], conn: FakeConnection) -> Any:
    return steps.run(procedure, conn)  # type: ignore[arg-type]


def run_async(procedure: steps.Steps[Any], conn: FakeConnection) -> Any:
    return asyncio.run(steps.arun(procedure, conn))  # type: ignore[arg-type]


RUNNERS = {"run": (run_sync, FakeConnection), "arun": (run_async, AsyncFakeConnection)}


def failing_at(k: int, error: BaseException, procedure: steps.Steps[Any]) -> steps.Steps[Any]:
    """``procedure``, but its ``k``-th op (from 1) raises ``error`` instead of running."""
    value: Any = None
    thrown: BaseException | None = None
    done = 0
    while True:
        try:
            op = procedure.send(value) if thrown is None else procedure.throw(thrown)
        except StopIteration as stop:
            return stop.value
        done += 1
        if done == k:
            value, thrown = None, error
            continue
        try:
            value, thrown = (yield op), None
        except BaseException as ex:  # noqa: BLE001 - a real op's failure, passed on
            value, thrown = None, ex


def returned_in_a_transaction(conn: FakeConnection) -> steps.Steps[bool]:
    """Returned inside a transaction, out of autocommit: rollback, autocommit back on, the
    safe reset sent and its answer read."""
    conn.pgconn.transaction_status, conn.autocommit = INTRANS, False
    conn.done.clear()
    return lifecycle.clean_returned(conn, "safe")  # type: ignore[arg-type]


def returned_mid_query(conn: FakeConnection) -> steps.Steps[bool]:
    conn.pgconn.transaction_status = ACTIVE
    return lifecycle.clean_returned(conn, "safe")  # type: ignore[arg-type]


def returned_with_a_callable_reset(conn: FakeConnection) -> steps.Steps[bool]:
    conn.pgconn.transaction_status = INTRANS
    return lifecycle.clean_returned(conn, lambda c: c.done.append("user reset"))  # type: ignore[arg-type]


SCENARIOS: dict[str, Callable[[FakeConnection], steps.Steps[bool]]] = {
    "in a transaction": returned_in_a_transaction,
    "mid-query": returned_mid_query,
    "callable reset": returned_with_a_callable_reset,
}


def ops_of(procedure: steps.Steps[Any], conn: FakeConnection, runner: Callable[..., Any]) -> tuple[list[str], Any]:
    """Run ``procedure`` to its end, recording the ops it waited for."""
    seen: list[str] = []

    def recording() -> steps.Steps[Any]:
        value: Any = None
        while True:
            try:
                op = procedure.send(value)
            except StopIteration as stop:
                return stop.value
            seen.append(type(op).__name__)
            value = yield op

    return seen, runner(recording(), conn)


@pytest.mark.parametrize("runner", RUNNERS)
def test_both_runners_do_the_same_ops_and_reach_the_same_result(runner):
    run, connection_class = RUNNERS[runner]
    conn = connection_class()
    seen, clean = ops_of(returned_in_a_transaction(conn), conn, run)
    assert seen == ["Rollback", "SetAttribute", "WaitSocket"]
    assert clean is True
    assert conn.pgconn.sent == [reset.SAFE_RESET.encode()] and not getattr(conn, reset.RESET_SENT)
    assert conn.autocommit is True and conn.pgconn.transaction_status == IDLE
    seen, clean = ops_of(returned_mid_query(conn), conn, run)
    assert (seen, clean, conn.done[-1]) == (["Cancel"], False, "cancel")


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_failure_at_any_op_of_a_return_means_close_and_an_interruption_goes_through(runner, scenario):
    run, connection_class = RUNNERS[runner]
    procedure = SCENARIOS[scenario]
    conn = connection_class()
    count = len(ops_of(procedure(conn), conn, run)[0])
    assert count >= 1
    for k in range(1, count + 1):
        conn = connection_class()
        assert run(failing_at(k, psycopg.OperationalError("gone"), procedure(conn)), conn) is False
        for interruption in (KeyboardInterrupt(), asyncio.CancelledError()):
            conn = connection_class()
            with pytest.raises(type(interruption)):
                run(failing_at(k, interruption, procedure(conn)), conn)


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_reset_whose_answer_fails_closes_the_connection(runner):
    run, connection_class = RUNNERS[runner]
    conn = connection_class()
    conn.pgconn.answers = False  # the checkout waits for the answer: that wait fails
    reset.send(conn)  # type: ignore[arg-type]
    with pytest.raises(psycopg.OperationalError, match="gone"):
        run(failing_at(1, psycopg.OperationalError("gone"), lifecycle.check(conn, "never")), conn)  # type: ignore[arg-type]
    assert conn.pgconn.finished  # closed: whoever gets it back discards it
    conn = connection_class()
    conn.pgconn.answers = False  # the checkout waits for the answer: that wait fails
    reset.send(conn)  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        run(failing_at(1, KeyboardInterrupt(), lifecycle.check(conn, "never")), conn)  # type: ignore[arg-type]
    assert not conn.pgconn.finished  # interrupted: its caller closes it, as after any interruption


def test_a_wait_past_its_deadline_fails_in_both_runners():
    for run, connection_class in RUNNERS.values():
        conn = connection_class()
        late = steps.WaitSocket(deadline=0.0, what="the reset")

        def waiting() -> steps.Steps[None]:
            yield late

        with pytest.raises(psycopg.OperationalError, match="no answer to the reset in time"):
            run(waiting(), conn)


# -- Capacity: random sequences of what a driver does, the invariants after each step


class Model:
    """A driver's view of one pool: what is lent, being opened, waiting; every Capacity call as the
    green driver makes it."""

    def __init__(self, rng: random.Random, min_size: int, max_size: int, max_waiting: int) -> None:
        self.rng = rng
        self.cap: Capacity[str, str] = Capacity(min_size, max_size, max_waiting)
        self.lent: set[str] = set()
        self.opening: list[bool] = []  # one entry a connection being opened: is it the growth step?
        self.names = iter(f"c{n}" for n in range(10**6))
        self.waiters = iter(f"w{n}" for n in range(10**6))
        self.queue: list[str] = []  # the callers waiting, in the order they came
        self.expiring: set[str] = set()  # lent above a lowered max_size: closed when returned

    def grow(self) -> None:
        before = self.cap.nconns
        self.opening += [False] * self.cap.fill()
        if self.cap.grow():
            self.opening.append(True)
        assert self.cap.nconns == before or self.cap.nconns <= self.cap.max_size, "opened past max_size"

    def hand_over(self, conn: str) -> None:
        waiter = self.cap.put(conn)
        if waiter is not None:
            assert waiter == self.queue.pop(0), "a caller served before one that came earlier"
            self.lent.add(conn)

    def close(self) -> None:
        self.cap.closed()
        self.grow()

    def step(self) -> None:
        action = self.rng.choice(["getconn", "timeout", "putconn", "connected", "connect_failed", "give_up",
                                  "close_lent", "shrink", "expire", "resize", "check"])
        if action == "getconn":
            conn = self.cap.take()
            if conn is not None:
                self.lent.add(conn)
            elif self.cap.enqueue(waiter := next(self.waiters)):
                self.queue.append(waiter)
                self.grow()
        elif action == "timeout" and self.queue:
            waiter = self.rng.choice(self.queue)
            assert self.cap.cancel(waiter)
            self.queue.remove(waiter)
        elif action == "putconn" and self.lent:
            conn = self.rng.choice(sorted(self.lent))
            self.lent.discard(conn)
            if conn in self.expiring:
                self.expiring.discard(conn)
                self.close()
            else:
                self.hand_over(conn)
        elif action == "close_lent" and self.lent:  # broken on return, or interrupted mid-return
            conn = self.rng.choice(sorted(self.lent))
            self.lent.discard(conn)
            self.expiring.discard(conn)
            self.close()
        elif action in ("connected", "connect_failed") and self.opening:
            growing = self.opening.pop(self.rng.randrange(len(self.opening)))
            if action == "connected":
                self.cap.connected()
                self.hand_over(next(self.names))
                if growing and self.cap.growth_ended():
                    self.opening.append(True)
            else:  # its attempts gave up
                self.cap.connect_failed(growing)
        elif action == "give_up":
            self.cap.stop_filling()
        elif action == "shrink":
            if self.cap.shrink() is not None:
                self.cap.closed(release=False)  # shrink() freed the slot
        elif action == "expire":
            for _ in self.cap.remove_idle(lambda conn: self.rng.random() < 0.5):
                self.cap.closed()
            self.grow()
        elif action == "resize":
            min_size = self.rng.randrange(0, 4)
            for _ in self.cap.resize(min_size, self.rng.randrange(max(min_size, 1), 6)):
                self.cap.closed()
            self.expiring = set(sorted(self.lent)[:max(self.cap.nconns - self.cap.max_size, 0)])
            self.grow()
        elif action == "check":  # check() refills, also after reconnecting gave up
            self.cap.resume_filling()
            self.grow()

    def check(self) -> None:
        cap = self.cap
        idle = set(cap.idle)
        assert len(idle) == len(cap.idle), "a connection is twice in the idle stack"
        assert not idle & self.lent, "a connection is both idle and lent"
        assert cap.nconns == len(idle) + len(self.lent) + len(self.opening), "a slot is lost or counted twice"
        assert cap.opened == len(idle) + len(self.lent), "an established connection is not counted as open"
        assert not (cap.idle and cap.waiting), "a connection idles while callers wait"
        assert sum(self.opening) <= 1, "more than one growth step at a time"
        assert len(cap.waiting) <= cap.max_waiting or not cap.max_waiting
        assert list(cap.waiting) == self.queue


@pytest.mark.parametrize("seed", range(40))
def test_capacity_never_loses_a_slot_nor_lends_a_connection_twice(seed):
    rng = random.Random(seed)
    model = Model(rng, min_size=rng.randrange(0, 3), max_size=rng.randrange(3, 6), max_waiting=rng.randrange(0, 4))
    model.grow()
    for _ in range(400):
        model.step()
        model.check()
