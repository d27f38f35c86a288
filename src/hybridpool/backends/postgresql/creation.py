"""Django's test-database steps, with the alias's pools closed around each of them.

PostgreSQL refuses to create a database from a template, or to drop one, while other sessions
use it ("database ... is being accessed by other users"), and a pool built before the test
database existed would connect to the original one. So every step that changes which database
the alias means, or needs it free, first closes the alias's pools in this process; the next query
builds new ones from the current settings.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql.creation import DatabaseCreation as PostgreSQLCreation


class DatabaseCreation(PostgreSQLCreation):
    """Django's PostgreSQL ``DatabaseCreation``; each step starts with ``close_pool()``."""

    def create_test_db(self, *args: Any, **kwargs: Any) -> str:
        self.connection.close_pool()
        test_name = super().create_test_db(*args, **kwargs)
        self.connection.close_pool()  # its pools were built for the database named before
        return test_name

    def clone_test_db(self, *args: Any, **kwargs: Any) -> None:
        self.connection.close_pool()  # the template database must have no other session
        super().clone_test_db(*args, **kwargs)

    def destroy_test_db(self, *args: Any, **kwargs: Any) -> None:
        self.connection.close_pool()
        super().destroy_test_db(*args, **kwargs)

    def setup_worker_connection(self, _worker_id: int) -> None:
        super().setup_worker_connection(_worker_id)
        self.connection.close_pool()  # this worker's database is the clone now
