"""How hybridpool retires a public name or setting: it warns for at least one minor release first.

The public surface is ``hybridpool.__all__``, the ENGINEs, the submodules the API reference documents
(``hybridpool.asgi.get_asgi_application``, ``hybridpool.middleware``, this module) and the
settings of ``OPTIONS["pool"]``. A name or setting that is renamed or removed keeps working, with
a warning, in at least one minor release before the one that removes it (deprecated in 0.3, removed
in 0.4 at the earliest): each use raises :class:`HybridpoolDeprecationWarning`, which names the old
name, its replacement and the release that removes it, attributed to the caller's line. ``CHANGELOG.md``
lists each deprecation under the release that makes it, and each removal under the release that
makes that.

A :class:`DeprecationWarning`, so Python shows it by default only in ``__main__``; test runners
(pytest, Django's) show it, and ``python -W error::hybridpool.deprecation.HybridpoolDeprecationWarning``
turns each into an error, to find every use before upgrading.
"""

from __future__ import annotations

import warnings


class HybridpoolDeprecationWarning(DeprecationWarning):
    """A public name or setting of hybridpool that a later release removes; the message says what
    replaces it and which release removes it."""


def deprecation_message(old: str, new: str | None, removed_in: str) -> str:
    """The warning's text: ``old`` is deprecated, removed in ``removed_in``; use ``new`` (if any)."""
    instead = f"; use {new} instead" if new else ""
    return f"{old} is deprecated and will be removed in hybridpool {removed_in}{instead}"


def warn_deprecated(old: str, new: str | None, removed_in: str, *, stacklevel: int = 2) -> None:
    """Warn that ``old`` is deprecated: replaced by ``new`` (None: nothing replaces it), removed in
    release ``removed_in``.

    :param stacklevel: which frame the warning points at, counted from the function that calls
        this one: 1 is that function, 2 (the default) its caller, the user's code for a deprecated
        function or a module ``__getattr__`` (importlib's frames of a ``from ... import`` are skipped
        by :func:`warnings.warn`). Add one per hybridpool frame in between.
    """
    if type(stacklevel) is not int or stacklevel < 1:
        raise ValueError(f"stacklevel = {stacklevel!r}: must be an int >= 1")
    warnings.warn(deprecation_message(old, new, removed_in), HybridpoolDeprecationWarning,
                  stacklevel=stacklevel + 1)  # + this function's frame
