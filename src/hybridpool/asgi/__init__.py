"""The psycopg_pool driver: ``ThreadPool`` for code on threads, ``LoopPool`` for asyncio code."""

from .pool import LoopPool, ThreadPool

__all__ = ["LoopPool", "ThreadPool"]
