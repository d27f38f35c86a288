"""The green driver: ``GreenPool``, for gevent (gunicorn ``-k gevent``, spawned greenlets)."""

from .pool import GreenPool

__all__ = ["GreenPool"]
