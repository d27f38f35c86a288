"""The fault suite's fixtures: a PostgreSQL server of its own (:class:`FaultServer`), a database
on it per test module, and a role for ``/dirty/`` to switch to."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest

from .server import FaultServer

ROLE = "hybridpool_faults_role"


@pytest.fixture(scope="session")
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer()
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {ROLE}")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def fault_db(fault_server: FaultServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on the fault server for one test; its conninfo."""
    name = f"faults_{os.getpid()}_{request.node.name}".lower()[:60]
    name = "".join(char if char.isalnum() else "_" for char in name)
    yield fault_server.database(name)
    fault_server.drop(name)
