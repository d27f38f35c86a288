"""Who holds each lent connection: strays are reclaimed, long holders reported (docs/design.md invariant 5).

A borrower is the greenlet or thread that took a connection. Code that forgets to give one back
(a spawned greenlet or a thread using the ORM outside a request, never calling ``close()``) would
keep its slot forever, and a pool that loses a few slots this way serves nobody: psycopg_pool,
like Django's pool built on it, keeps no reference to a lent connection. :class:`Leases` keeps one,
with a weak reference to the borrower, so that a pool's periodic maintenance can give back the
connections of borrowers that have ended (:func:`reclaim`), at once when the borrower's end is
told by a sentinel in its local storage (:class:`_Sentinel`). With ``leak_timeout`` set, it also
keeps the stack that took each connection and reports, once, those held longer.

The table does no I/O and never waits. Lending and ending a lease are one dictionary operation
each, atomic in CPython (with or without the GIL), so the checkout path takes no lock; the rarer
scans (:meth:`Leases.pop_strays`, :meth:`Leases.overdue`) work on a copy of the table, under a
lock that is an unpatched one even under gevent, since no greenlet can switch while it is held.
"""

from __future__ import annotations

import logging
import threading
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, cast

from .process import unpatched
from .runtime import current_borrower

logger = logging.getLogger("hybridpool")

#: Frames of the borrower's stack kept for a ``leak_timeout`` report.
STACK_LIMIT = 12


def has_ended(borrower: weakref.ref[Any]) -> bool:
    """True if the greenlet or thread behind ``borrower`` has finished, or if ``borrower`` (any
    other object, e.g. a Django connection shared between threads) is gone."""
    obj = borrower()
    if obj is None:
        return True
    dead: bool | None = getattr(obj, "dead", None)  # a greenlet
    if dead is not None:
        return dead
    is_alive = getattr(obj, "is_alive", None)  # a thread
    return is_alive is not None and not is_alive()


@dataclass(slots=True)
class Lease:
    """One lent connection: its borrower, when it was lent, and (with ``leak_timeout``) where.

    ``holder``, if set, is the object through which the borrower holds the connection (a Django
    connection wrapper): the connection is a stray once either is gone. ``ended_borrower`` is the
    borrower whose sentinel told that it ended (:meth:`Leases._ended`): a thread is still alive
    while its local storage is cleared, so its end is known from the sentinel before
    ``is_alive()`` says it; compared by identity, so that it no longer counts once the lease is
    reassigned to a shared holder (:meth:`Leases.assign`).
    """

    conn: Any
    borrower: weakref.ref[Any]
    lent_at: float
    stack: list[str] | None = None
    reported: bool = field(default=False)
    holder: weakref.ref[Any] | None = None
    ended_borrower: weakref.ref[Any] | None = None

    def ended(self) -> bool:
        """True if the borrower has ended, or the holder is gone."""
        return (self.ended_borrower is self.borrower or has_ended(self.borrower)
                or (self.holder is not None and self.holder() is None))


class _Sentinel:
    """Lives in a borrower's thread-local storage, which CPython clears when a thread exits (in
    its teardown, before ``is_alive()`` turns false) and gevent when a greenlet dies: its
    ``__del__`` tells the table, held weakly (a borrower that lives on, the main thread, does not
    keep a closed pool's table alive). A ``__del__`` rather than a ``weakref.finalize``: a
    borrower's first lease, per request thread under Django's own ASGI handler, makes one.

    Its storage is cleared for no other reason while the table lives: CPython clears a thread's
    ``_thread._local`` dictionaries when the thread ends (in a forked child, those of the threads
    that did not follow), or all of them when the local object dies, and the table's local dies
    with the table, whose weak reference is dead by then; gevent's, when the greenlet is gone.
    Nothing deletes the sentinel before."""

    __slots__ = ("leases", "borrower")

    def __init__(self, leases: weakref.ref[Leases], borrower: weakref.ref[Any]) -> None:
        self.leases = leases
        self.borrower = borrower

    def __del__(self) -> None:
        if (leases := self.leases()) is not None:
            leases._ended(self.borrower)


class Leases:
    """The connections a pool has lent, by borrower.

    :param leak_timeout: seconds after which a held connection is reported (0: never).
    :param borrower: returns a weak reference to the calling greenlet or thread; called at a
        borrower's first lease only, the reference is kept in its local storage.
    :param wake: called when a borrower that took a connection ends (from its own teardown), so
        that the pool reclaims at once rather than at its next maintenance pass. It is told
        through a sentinel in the borrower's local storage, which CPython clears when a thread
        exits, and gevent when a greenlet dies.
    :param local: the class of that storage: one per borrower, as ``borrower`` sees them
        (``threading.local``, per greenlet once gevent has patched it; ``gevent.local.local``).
    """

    def __init__(self, leak_timeout: float, borrower: Callable[[], weakref.ref[Any]] = current_borrower,
                 wake: Callable[[], None] | None = None, local: Callable[[], Any] = threading.local) -> None:
        self.leak_timeout = leak_timeout
        self._borrower = borrower
        self._wake = wake
        self._local = local()
        self._lock = unpatched("threading", "Lock")()  # held across no I/O: gevent's would only cost
        self._leases: dict[int, Lease] = {}

    def __len__(self) -> int:
        return len(self._leases)

    def lend(self, conn: Any) -> None:
        """Record that the caller now holds ``conn``."""
        stack = traceback.format_stack(limit=STACK_LIMIT)[:-2] if self.leak_timeout else None
        borrower = getattr(self._local, "borrower", None)  # no exception raised and caught per new thread
        if borrower is None:
            borrower = self._first_lease()
        self._leases[id(conn)] = Lease(conn, borrower, monotonic(), stack)

    def _first_lease(self) -> weakref.ref[Any]:
        """Keep the calling borrower in its local storage, with the sentinel that tells ``wake``."""
        self._local.borrower = borrower = self._borrower()
        if self._wake is not None:
            self._local.sentinel = _Sentinel(weakref.ref(self), borrower)
        return borrower

    def _ended(self, borrower: weakref.ref[Any]) -> None:
        """A borrower ended (called from its teardown): mark the leases it still holds as strays,
        then ``wake`` the pool, which takes them back at once. Most end with none (under ASGI,
        asgiref's thread of each request) and wake nobody.

        Attribute sets on a copy of the table, no lock: an ended borrower takes no new lease, and
        one of its leases ended meanwhile (:meth:`end`, from another thread) is out of the table,
        where nobody reads its mark."""
        held = [lease for lease in list(self._leases.values()) if lease.borrower is borrower]
        for lease in held:
            lease.ended_borrower = borrower
        if held:
            cast("Callable[[], None]", self._wake)()  # set: a sentinel is planted only with wake

    def assign(self, conn: Any, holder: weakref.ref[Any], *, shared: bool = False) -> None:
        """Record that lent ``conn`` is held through ``holder`` (a Django connection wrapper): it
        is a stray once its borrower ends or the holder is gone. With ``shared``, the holder is the
        borrower too: the wrapper is shared between threads (``inc_thread_sharing()``), and the
        thread or greenlet that took the connection may end while others use it.

        A wrapper dropped with its connection (collected) gives it back, rolled back, as the stock
        backend's connection is closed then. One dictionary look-up and attribute sets: no lock.
        """
        if (lease := self._leases.get(id(conn))) is not None:
            lease.holder = holder
            if shared:
                lease.borrower = holder

    def held_by(self, borrower: Any) -> bool:
        """True if ``borrower`` (a thread or greenlet) holds a connection of this table: a copy of
        the table is read, no lock."""
        return any(lease.borrower() is borrower for lease in list(self._leases.values()))

    def lent(self) -> list[Any]:
        """The connections lent now (a copy)."""
        return [lease.conn for lease in list(self._leases.values())]

    def end(self, conn: Any) -> Lease | None:
        """Record that ``conn`` came back; return its lease (None if it was not lent)."""
        return self._leases.pop(id(conn), None)

    def pop_strays(self) -> list[Lease]:
        """Remove and return the leases whose borrower has ended."""
        with self._lock:
            strays = [lease for lease in list(self._leases.values()) if lease.ended()]
            # Only what is still there: a lease ended meanwhile (end() takes no lock) is not
            # given back twice.
            return [lease for lease in strays if self._leases.pop(id(lease.conn), None) is lease]

    def overdue(self, now: float) -> list[Lease]:
        """Return the leases held longer than ``leak_timeout`` not reported yet, marked reported."""
        if not self.leak_timeout:
            return []
        with self._lock:
            late = [lease for lease in list(self._leases.values())
                    if not lease.reported and now - lease.lent_at > self.leak_timeout]
            for lease in late:
                lease.reported = True
        return late


def reclaim(pool: Any, leases: Leases) -> int:
    """Give back to ``pool`` the connections of ended borrowers; report overdue ones. Return how
    many were given back.

    ``pool.putconn`` rolls back and resets each one as for any return.
    """
    now = monotonic()
    strays = leases.pop_strays()
    for lease in strays:
        logger.warning("pool %r takes back a connection that a greenlet or thread took %.1f s ago and did not"
                       " give back before it ended", pool.name, now - lease.lent_at)
        pool.putconn(lease.conn)
    for lease in leases.overdue(now):
        logger.warning("a connection of pool %r has been held for %.1f s (leak_timeout=%s) by %r, which took it"
                       " at:\n%s", pool.name, now - lease.lent_at, leases.leak_timeout, lease.borrower(),
                       "".join(lease.stack or ()))
    return len(strays)
