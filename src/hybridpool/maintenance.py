"""A pool's maintenance task: one loop, woken early when a borrower ends, holding its pool weakly.

Modelled on psycopg_pool's ``MaintenanceTask``: the task keeps a weak reference to its pool, so a
pool its owner forgets is collected, and the task then stops. The loop and its stop rule are
written once here; a driver says only how to start the loop (a greenlet, a thread), which event
wakes it (gevent's, ``threading``'s) and what one pass does (:meth:`MaintenanceTask.maintain`).

The loop runs a pass every ``interval`` seconds, and at once when woken (:meth:`~MaintenanceTask.wake`:
the pool's :class:`~hybridpool.leases.Leases` calls it when a borrower holding a connection ends,
and the pool at ``close()``), while the pool is open, and on after its close while it still lends
some: taken back, they are closed (a borrower that outlives the close would otherwise keep its
connection open). It stops when the pool is gone, belongs to another process (a forked child
never touches its parent's connections), or is closed and lends nothing.
"""

from __future__ import annotations

import abc
import logging
import weakref
from collections.abc import Callable, Sized
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from .config import PoolConfig

logger = logging.getLogger("hybridpool")


class Event(Protocol):
    """What the task needs of an event: ``threading.Event``'s or ``gevent.event.Event``'s."""

    def set(self) -> None: ...

    def clear(self) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Maintained(Protocol):
    """What the task reads of its pool (:class:`hybridpool.pool.Pool`'s)."""

    @property
    def name(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    @property
    def forked(self) -> bool: ...

    @property
    def leases(self) -> Sized: ...


P = TypeVar("P", bound=Maintained)


class MaintenanceTask(abc.ABC, Generic[P]):
    """The maintenance loop of one pool, started once (:meth:`start`) when the pool opens.

    :param pool: the pool, held weakly.
    :param interval: seconds between two passes (:func:`maintenance_interval`).
    :param event: the event that wakes the loop early: a ``threading.Event``, or gevent's for a
        loop in a greenlet.
    """

    def __init__(self, pool: P, interval: float, event: Event) -> None:
        self.pool = weakref.ref(pool)
        self.interval = interval
        self.event = event
        self.started = False

    def __repr__(self) -> str:
        pool = self.pool()
        name = repr(pool.name) if pool is not None else "<pool is gone>"
        return f"<{type(self).__name__} {name} at 0x{id(self):x}>"

    def wake(self) -> None:
        """Run a pass now, not at the end of the interval; from any thread or greenlet."""
        self.event.set()

    def start(self) -> None:
        """Start the loop, once (a second call does nothing)."""
        if not self.started:
            self.started = True
            self.spawn(self.run)

    def run(self) -> None:
        """The loop: a pass at each wake-up or interval, until the pool is gone, forked, or closed
        with nothing lent. A pass that fails is logged, and the next one tries again."""
        while True:
            if self.event.wait(self.interval):
                self.event.clear()
            pool = self.pool()
            if pool is None or pool.forked or (pool.closed and not len(pool.leases)):
                return
            try:
                self.maintain(pool)
            except Exception:  # logged; the next pass tries again
                logger.exception("maintenance of pool %r failed", pool.name)
            del pool  # not held while the loop waits: a forgotten pool can be collected

    @abc.abstractmethod
    def spawn(self, run: Callable[[], None]) -> None:
        """Start ``run`` in the background, returning at once: a greenlet, a thread."""

    @abc.abstractmethod
    def maintain(self, pool: P) -> None:
        """One pass over ``pool``."""


def maintenance_interval(config: PoolConfig) -> float:
    """Seconds between two maintenance passes of a pool: at most 1, so that a stray connection is
    back within a second or two, and shorter for short ``max_idle``, ``max_lifetime`` or
    ``leak_timeout``."""
    return min(1.0, config.max_idle / 2, config.max_lifetime / 2, config.leak_timeout / 2 or 1.0)
