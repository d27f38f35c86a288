"""Facts of the running process read on every checkout, without a system call or a gevent wrapper,
and the one fork hook of the package.

:data:`pid`: every checkout and return asks whether the pool belongs to the running process (a
forked child never touches its parent's connections: :class:`hybridpool.pool.Owned`), and
``os.getpid()`` is a system call (about 1 µs in a virtual machine); the fork hook renews this
module attribute in the child instead. Read it as ``process.pid``, never ``from hybridpool.process
import pid``, which would copy it.

:func:`after_fork_in_child`: what other modules do in a forked child (forget the parent's pools,
let go of its connections, unblock a signal), called by that one hook once :data:`pid` is the
child's, in the order the modules registered it.

:func:`unpatched`: a function as it was before gevent monkey-patched it, for the calls that never
block (a zero-timeout ``select``, a lock held across no I/O): gevent's versions cost more and may
switch greenlets.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("hybridpool")

#: The id of the running process.
pid = os.getpid()

_child_hooks: list[Callable[[], None]] = []


def after_fork_in_child(hook: Callable[[], None]) -> Callable[[], None]:
    """Call ``hook()`` in every child forked from now on, after :data:`pid` is renewed, in
    registration order; return ``hook``. A hook that raises is logged, and the next ones still
    run (as ``os.register_at_fork`` runs its callbacks)."""
    _child_hooks.append(hook)
    return hook


def _in_child() -> None:
    global pid
    pid = os.getpid()
    for hook in _child_hooks:
        try:
            hook()
        except Exception:  # the child goes on, as after a failed os.register_at_fork callback
            logger.exception("hybridpool's fork hook %r failed in child %s", hook, pid)


os.register_at_fork(after_in_child=_in_child)


def unpatched(module: str, name: str) -> Any:
    """Return ``module.name`` as it was before gevent patched it (as it is, if gevent did not)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None:
        return getattr(importlib.import_module(module), name)
    return monkey.get_original(module, name)
