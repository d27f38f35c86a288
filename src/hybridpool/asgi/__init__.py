"""The psycopg_pool driver (``ThreadPool`` for code on threads, ``LoopPool`` for asyncio code), and
hybridpool's ASGI application: Django's, with reused request threads and the lifespan protocol."""

from .application import Application, get_asgi_application
from .pool import LoopPool, ThreadPool

__all__ = ["Application", "LoopPool", "ThreadPool", "get_asgi_application"]
