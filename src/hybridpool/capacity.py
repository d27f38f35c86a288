"""The decisions of a pool that need no I/O: slots, the idle stack, the waiters, expiry.

A driver owns one :class:`Capacity` and does the I/O it asks for (connect, close, wake a waiter).
Every method runs to completion without waiting, so under gevent (one hub, no preemption) a call is
atomic; a driver running on OS threads calls it under a lock. Tests drive it without a database.

The model is psycopg_pool's: a connection returned while callers wait goes straight to the first of
them (first come, first served: nobody arriving later can jump the queue), the pool grows one
connection at a time ("or returning connections might be starved", psycopg_pool), and a slot is
reserved before connecting and freed when the connection is closed or the connect fails, so the
number of connections can never pass ``max_size`` (invariant 1 of docs/design.md).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

C = TypeVar("C")  # a connection
W = TypeVar("W")  # a waiter: whatever the driver wakes up

#: psycopg_pool's jitter on ``max_lifetime``: each connection expires up to 5 % early, so that
#: connections opened together are not all closed together.
LIFETIME_JITTER = 0.05


def expiry(now: float, max_lifetime: float) -> float:
    """Return when a connection opened at ``now`` (monotonic seconds) expires."""
    return now + max_lifetime * (1.0 - LIFETIME_JITTER * random.random())


class Capacity(Generic[C, W]):
    """Slots, idle connections and waiters of one pool.

    :ivar idle: idle connections, a LIFO stack: the most recently returned is taken first, so the
        surplus sinks to the bottom, goes idle and can expire.
    :ivar waiting: callers waiting for a connection, oldest first.
    :ivar nconns: slots taken: connections open, lent, or being opened.
    :ivar opened: connections established and not closed (``nconns`` less those being opened).
    :ivar idle_low: the fewest idle connections since the last :meth:`shrink`.
    :ivar growing: a growth step is under way (:meth:`grow`).
    :ivar filling: refilling to ``min_size`` is on (off after reconnecting gave up).
    """

    def __init__(self, min_size: int, max_size: int, max_waiting: int = 0) -> None:
        self.min_size = min_size
        self.max_size = max_size
        self.max_waiting = max_waiting
        self.idle: list[C] = []
        self.waiting: deque[W] = deque()
        self.nconns = 0
        self.opened = 0
        self.idle_low = 0
        self.growing = False
        self.filling = True
        self.shrunk_at: float | None = None  # when the current max_idle period began

    def take(self, settled: Callable[[C], bool] | None = None) -> C | None:
        """Return an idle connection, unless there is none or callers queued earlier.

        :param settled: says whether a connection is ready to go out without a wait (its reset
            sent on return has had time to be answered). Given, the most recently returned
            settled connection is taken, else the oldest return, the nearest to settling: the
            stack stays LIFO but for the few connections just returned. Without it, the top.
        """
        idle = self.idle
        if not idle or self.waiting:
            return None
        if len(idle) <= self.idle_low:
            self.idle_low = len(idle) - 1
        if settled is not None and not settled(idle[-1]):
            for index in range(len(idle) - 2, -1, -1):
                if settled(idle[index]):
                    return idle.pop(index)
            return idle.pop(0)
        return idle.pop()

    def enqueue(self, waiter: W) -> bool:
        """Queue a caller; False if ``max_waiting`` callers wait already."""
        if self.max_waiting and len(self.waiting) >= self.max_waiting:
            return False
        self.waiting.append(waiter)
        return True

    def cancel(self, waiter: W) -> bool:
        """Remove a caller that gives up; False if it was served already (it holds a connection)."""
        try:
            self.waiting.remove(waiter)
        except ValueError:
            return False
        return True

    def put(self, conn: C) -> W | None:
        """Take back a reusable connection: return the waiter to hand it to, or None if it went idle."""
        if self.waiting:
            return self.waiting.popleft()
        self.idle.append(conn)
        return None

    def resize(self, min_size: int, max_size: int) -> list[C]:
        """Change the sizes; return the idle connections above the new ``max_size``, to close
        (their slots are still taken); a larger ``min_size`` is reached by :meth:`fill`."""
        self.min_size, self.max_size = min_size, max_size
        excess = max(self.nconns - max_size, 0)
        surplus, self.idle = self.idle[:excess], self.idle[excess:]
        return surplus

    def release(self) -> None:
        """Free the slot of a connection that was closed or could not be opened."""
        self.nconns -= 1

    def connected(self) -> None:
        """A connection was established in its reserved slot; refilling to ``min_size`` resumes."""
        self.opened += 1
        self.filling = True

    def connect_failed(self, growing: bool) -> None:
        """A connection will not be opened in its reserved slot (its attempts gave up, or the pool
        closed): free the slot, and end the growth step it was (``growing``)."""
        self.release()
        if growing:
            self.growing = False

    def closed(self, *, release: bool = True) -> None:
        """An established connection was closed: it is no longer open, and its slot is free unless
        it was freed already (``release=False``: :meth:`shrink` frees it)."""
        self.opened -= 1
        if release:
            self.release()

    @property
    def filled(self) -> bool:
        """True while ``min_size`` connections are established (what ``wait()`` waits for)."""
        return self.opened >= self.min_size

    def fill(self) -> int:
        """Reserve the slots needed to reach ``min_size``; return how many connections to open
        (none while filling is stopped)."""
        if not self.filling:
            return 0
        missing = max(self.min_size - self.nconns, 0)
        self.nconns += missing
        return missing

    def stop_filling(self) -> None:
        """Reconnecting failed for ``reconnect_timeout``: stop refilling to ``min_size`` until a
        connection opens again; waiting callers still grow the pool, one connection at a time.
        psycopg_pool does the same: after giving up it connects again only on demand."""
        self.filling = False

    def resume_filling(self) -> None:
        """Refill to ``min_size`` again (``check()``), also after reconnecting gave up."""
        self.filling = True

    def grow(self) -> bool:
        """Reserve a slot for one more connection if callers wait and the cap allows it.

        Only one growth runs at a time; :meth:`growth_ended` says whether it continues.
        """
        if self.growing or not self.waiting or self.nconns >= self.max_size:
            return False
        self.nconns += 1
        self.growing = True
        return True

    def growth_ended(self) -> bool:
        """A growth step ended (its connection was handed over, or failed): reserve the next one?"""
        self.growing = False
        return self.grow()

    def shrink_due(self, now: float, max_idle: float) -> C | None:
        """:meth:`shrink`, once per ``max_idle`` seconds (``now``: monotonic seconds; the first
        call starts the first period)."""
        if self.shrunk_at is None:
            self.shrunk_at = now
        if now - self.shrunk_at < max_idle:
            return None
        self.shrunk_at = now
        return self.shrink()

    def shrink(self) -> C | None:
        """psycopg_pool's rule, applied once per ``max_idle`` seconds: if some connections stayed
        idle through the whole period (the idle stack never emptied) and more than ``min_size`` are
        open, remove one, the longest idle (the bottom of the LIFO stack), and free its slot.
        Return it, to close, or None. One per period: a pool shrinks gradually, as load falls."""
        low, self.idle_low = self.idle_low, len(self.idle)
        if self.nconns <= self.min_size or low <= 0 or not self.idle:
            return None
        self.nconns -= 1
        conn = self.idle.pop(0)
        self.idle_low = len(self.idle)
        return conn

    def remove_idle(self, predicate: Callable[[C], bool]) -> list[C]:
        """Remove and return the idle connections ``predicate`` selects (asked once per connection);
        their slots stay taken."""
        kept: list[C] = []
        removed: list[C] = []
        for conn in self.idle:
            (removed if predicate(conn) else kept).append(conn)
        if removed:
            self.idle = kept
        return removed


class Backoff:
    """When to retry a failed connection attempt: psycopg_pool's scheme.

    The first retry comes after 1 s +/- 10 %, each next one after twice the delay, and the
    attempts stop ``timeout`` seconds after the first failure (``reconnect_timeout``).
    """

    INITIAL_DELAY = 1.0
    JITTER = 0.1
    FACTOR = 2.0

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.delay = 0.0
        self.give_up_at = 0.0

    def failed(self, now: float) -> float | None:
        """Record a failure at ``now``; return the delay before the next try, or None to give up."""
        if self.delay == 0.0:
            self.give_up_at = now + self.timeout
            self.delay = self.INITIAL_DELAY * (1.0 + self.JITTER * (2.0 * random.random() - 1.0))
        elif now >= self.give_up_at:
            return None
        else:
            self.delay *= self.FACTOR
        return min(self.delay, self.give_up_at - now)
