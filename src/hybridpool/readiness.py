"""Whether a socket has something to read right now: one zero-timeout ``poll(2)``, holding the GIL.

The checkout of a recently used connection polls its socket (:func:`hybridpool.lifecycle.needs_check`).
``select.select`` and ``select.poll`` release the GIL around the system call, as CPython does for
every call that may block; one that cannot block gains nothing from it, and with a dozen request
threads waiting for the GIL (Django's ORM calls under ASGI run each in a thread of asgiref's) the
calling thread must queue again to get it back. Measured with ``python -m bench.breakdown`` at 10
clients: the check took 58 µs of CPU (290 µs of wall time) per checkout with ``select.select``,
26 µs holding the GIL. libc's ``poll`` is called through a :class:`ctypes.PyDLL`, the ctypes
library type that keeps the GIL; where libc has no ``poll`` (not Linux, macOS or a BSD), gevent's
unpatched ``select.select`` is used instead.
"""

from __future__ import annotations

import ctypes
import select
from collections.abc import Callable
from typing import Any

from .process import unpatched

__all__ = ["readable_now"]


class _PollFd(ctypes.Structure):
    """``struct pollfd`` of ``<poll.h>``."""

    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


def _libc_poll() -> Callable[..., int] | None:
    try:
        poll = ctypes.PyDLL(None).poll
    except (AttributeError, OSError, TypeError):
        return None
    poll.restype = ctypes.c_int
    return poll


_poll = _libc_poll()
#: ``poll``'s ``nfds`` and ``timeout``, typed once: declaring ``argtypes`` instead would cost each
#: call a third more in conversions.
_ONE_FD, _NO_WAIT = ctypes.c_ulong(1), ctypes.c_int(0)
#: Not gevent's ``select``: a zero-timeout poll never blocks, and gevent's would yield to the hub.
_select = unpatched("select", "select")


#: ``poll``'s argument for each descriptor polled so far: a ``struct pollfd`` holds nothing but the
#: descriptor's number and the events asked (``revents`` is the kernel's answer, written by each
#: call), so one per number serves whatever socket has it now. Built once: a new structure and
#: its ``byref`` per call cost as much as the system call itself (``bench.micro``).
_pollfds: dict[int, Any] = {}


def readable_now(fd: int) -> bool:
    """True if ``fd`` has data, EOF or an error to read now; never waits.

    :raises OSError: ``fd`` is not an open file descriptor (``select`` fallback only; ``poll``
        reports that as readable).
    """
    if _poll is None:
        return bool(_select([fd], [], [], 0)[0])
    if (pollfd := _pollfds.get(fd)) is None:
        pollfd = _pollfds[fd] = ctypes.byref(_PollFd(fd, select.POLLIN, 0))  # keeps its structure alive
    return _poll(pollfd, _ONE_FD, _NO_WAIT) != 0
