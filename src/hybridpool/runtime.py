"""Which driver serves the calling code.

Decided per call from the process's state, never by importing gevent or creating a hub to ask:
gevent is "active" when ``gevent.monkey`` is already imported and has patched ``threading``, which is
what makes Django's per-thread connections per-greenlet (gunicorn's gevent worker does it before
loading the application).
"""

from __future__ import annotations

import sys

from django.core.exceptions import ImproperlyConfigured

from .config import PoolConfig
from .pool import Pool


def gevent_active() -> bool:
    """True if gevent has monkey-patched ``threading`` in this process."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


def driver_for(config: PoolConfig) -> str:
    """Return ``"gevent"`` or ``"thread"``: the ``driver`` setting, or the runtime's for ``"auto"``."""
    if config.driver != "auto":
        return config.driver
    return "gevent" if gevent_active() else "thread"


def pool_class(driver: str) -> type[Pool]:
    """Return the :class:`Pool` class of ``driver`` (``"gevent"`` or ``"thread"``).

    :raises ImproperlyConfigured: ``"gevent"`` without gevent installed.
    """
    if driver == "gevent":
        try:
            from .green import GreenPool
        except ImportError as ex:
            raise ImproperlyConfigured(
                f"hybridpool setting 'driver' = 'gevent' needs gevent, which cannot be imported ({ex});"
                " install it with: pip install 'hybridpool[gevent]'"
            ) from ex
        return GreenPool
    from .asgi import ThreadPool

    return ThreadPool
