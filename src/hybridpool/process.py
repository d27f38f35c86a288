"""Facts of the running process read on every checkout, without a system call or a gevent wrapper.

:data:`pid`: every checkout and return asks whether the pool belongs to the running process (a
forked child never touches its parent's connections), and ``os.getpid()`` is a system call (about
1 µs in a virtual machine); a fork hook renews this module attribute in the child instead. Read it
as ``process.pid``, never ``from hybridpool.process import pid``, which would copy it.

:func:`unpatched`: a function as it was before gevent monkey-patched it, for the calls that never
block (a zero-timeout ``select``, a lock held across no I/O): gevent's versions cost more and may
switch greenlets.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

#: The id of the running process.
pid = os.getpid()


def _renew() -> None:
    global pid
    pid = os.getpid()


os.register_at_fork(after_in_child=_renew)


def unpatched(module: str, name: str) -> Any:
    """Return ``module.name`` as it was before gevent patched it (as it is, if gevent did not)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None:
        return getattr(importlib.import_module(module), name)
    return monkey.get_original(module, name)
