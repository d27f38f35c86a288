"""The psycopg_pool driver (``ThreadPool`` for code on threads, ``LoopPool`` for asyncio code), and
the ASGI application wrapper that closes the pools when the server shuts down."""

from .lifespan import Lifespan, get_asgi_application
from .pool import LoopPool, ThreadPool

__all__ = ["Lifespan", "LoopPool", "ThreadPool", "get_asgi_application"]
