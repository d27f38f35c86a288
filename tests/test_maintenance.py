"""The maintenance task every driver runs, the end of borrowers it acts on, and the fork hook of
:mod:`hybridpool.process` (no database needed)."""

from __future__ import annotations

import gc
import logging
import os
import threading
import weakref
from collections.abc import Callable

import pytest

from hybridpool import process
from hybridpool.leases import Leases
from hybridpool.maintenance import MaintenanceTask
from tests.conftest import wait_for


class _AliveForever:
    """A borrower whose ``is_alive()`` never turns false: as a thread while CPython clears its
    locals, or a thread started with ``_thread`` (``threading``'s dummy thread)."""

    def is_alive(self) -> bool:
        return True


def test_a_borrower_s_lease_is_a_stray_as_soon_as_its_locals_are_cleared():
    woken = threading.Event()
    borrower = _AliveForever()
    leases = Leases(leak_timeout=0, borrower=lambda: weakref.ref(borrower), wake=woken.set)
    conn = object()
    thread = threading.Thread(target=leases.lend, args=(conn,))
    thread.start()
    thread.join(5)
    assert woken.wait(5)
    # Certain without waiting for is_alive(): the sentinel told that the borrower ended.
    assert [lease.conn for lease in leases.pop_strays()] == [conn]


def test_a_lease_given_to_a_shared_holder_outlives_the_thread_that_took_it():
    woken = threading.Event()
    leases = Leases(leak_timeout=0, wake=woken.set)
    conn, holder = object(), _AliveForever()

    def take_and_share() -> None:
        leases.lend(conn)
        leases.assign(conn, weakref.ref(holder), shared=True)

    thread = threading.Thread(target=take_and_share)
    thread.start()
    thread.join(5)
    assert not woken.wait(0.3)  # the ended thread holds nothing now: the holder does
    assert leases.pop_strays() == [] and len(leases) == 1


class _Pool:
    """What the task reads of a pool."""

    name = "maintained"

    def __init__(self) -> None:
        self.closed = False
        self.forked = False
        self.leases: list[object] = []
        self.passes = 0


class _Task(MaintenanceTask[_Pool]):
    def __init__(self, pool: _Pool, *, fail: bool = False) -> None:
        super().__init__(pool, 60.0, threading.Event())  # passes only when woken
        self.fail = fail
        self.passed = threading.Event()
        self.threads: list[threading.Thread] = []

    def spawn(self, run: Callable[[], None]) -> None:
        self.threads.append(thread := threading.Thread(target=run, daemon=True))
        thread.start()

    def maintain(self, pool: _Pool) -> None:
        pool.passes += 1
        self.passed.set()
        if self.fail:
            raise RuntimeError("the pass failed")

    def pass_now(self) -> None:
        self.passed.clear()
        self.wake()
        assert self.passed.wait(5)

    def assert_ends_when_woken(self) -> None:
        self.wake()
        self.threads[0].join(5)
        assert not self.threads[0].is_alive()


def test_the_task_starts_once_and_runs_a_pass_when_woken():
    pool = _Pool()
    task = _Task(pool)
    task.start()
    task.start()
    assert len(task.threads) == 1
    task.pass_now()
    task.pass_now()
    assert pool.passes == 2
    assert "maintained" in repr(task)
    pool.closed = True
    task.assert_ends_when_woken()


def test_the_task_runs_on_after_the_close_while_the_pool_still_lends():
    pool = _Pool()
    pool.leases.append(object())
    task = _Task(pool)
    task.start()
    pool.closed = True
    task.pass_now()  # taken back and closed by the pass, in a driver
    pool.leases.clear()
    task.assert_ends_when_woken()


def test_the_task_ends_in_a_forked_child():
    pool = _Pool()
    task = _Task(pool)
    task.start()
    pool.forked = True
    task.assert_ends_when_woken()
    assert pool.passes == 0


def test_the_task_holds_its_pool_weakly_and_ends_once_it_is_gone():
    pool = _Pool()
    task = _Task(pool)
    task.start()
    task.pass_now()
    del pool
    gc.collect()
    assert task.pool() is None
    assert "<pool is gone>" in repr(task)
    task.assert_ends_when_woken()


def test_a_failed_pass_is_logged_and_the_next_one_runs(caplog):
    pool = _Pool()
    task = _Task(pool, fail=True)
    def logged() -> int:
        return [r.getMessage() for r in caplog.records].count("maintenance of pool 'maintained' failed")

    with caplog.at_level(logging.ERROR, logger="hybridpool"):
        task.start()
        task.pass_now()
        assert wait_for(lambda: logged() == 1, timeout=5)  # logged after the pass raised
        task.pass_now()
        assert wait_for(lambda: logged() == 2, timeout=5)
    assert pool.passes == 2
    pool.closed = True
    task.assert_ends_when_woken()


_seen_in_child: list[tuple[str, int]] = []


@process.after_fork_in_child
def _first() -> None:
    _seen_in_child.append(("first", process.pid))


@process.after_fork_in_child
def _second() -> None:
    _seen_in_child.append(("second", process.pid))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_the_fork_hook_renews_the_pid_then_runs_the_hooks_in_order():
    child = os.fork()
    if child == 0:
        code = 99
        try:
            pid = os.getpid()
            code = 0 if process.pid == pid and _seen_in_child == [("first", pid), ("second", pid)] else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _seen_in_child == [] and process.pid == os.getpid()
