"""The Django ENGINE ``hybridpool.backends.postgresql``: Django's PostgreSQL backend, pooled.

Only documented backend methods are overridden. ``get_new_connection`` takes a connection from the
pool that serves the calling code (the green driver under gevent, psycopg_pool's otherwise) instead
of connecting; every other step of Django's ``connect()`` runs as in the stock backend, so
``isolation_level``, ``assume_role``, ``server_side_binding``, time zones and ``atomic`` behave the
same. Returning is psycopg's own protocol: a pooled connection's ``close()`` gives it back to its
pool (psycopg_pool's ``close_returns``), so Django's ``connection.close()`` and
``close_old_connections()`` at ``request_finished`` return it, and the pool rolls it back and resets
it before anyone else gets it.
"""

from __future__ import annotations

import logging
import sys
import weakref
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base as postgresql
from django.db.backends.postgresql.psycopg_any import IsolationLevel
from django.utils.asyncio import async_unsafe

from ... import checks, factory, process, registry, runtime  # noqa: F401 - checks registers the system checks
from ...config import PoolConfig
from ...cursors import PooledConnection, ResettingCursor
from ...migration import PEER_KEYS, translate
from ...pool import Pool
from .creation import DatabaseCreation

logger = logging.getLogger("hybridpool")

if TYPE_CHECKING:  # the wrappers it is mixed into: Django's PostgreSQL one and its PostGIS subclass
    _WrapperBase = postgresql.DatabaseWrapper
else:
    _WrapperBase = object

class DatabaseWrapperMixin(_WrapperBase):
    """The pooling part of the ENGINE, shared by the PostgreSQL and PostGIS wrappers."""

    alias: str
    settings_dict: dict[str, Any]

    #: Test databases are created, cloned and destroyed with this alias's pools closed.
    creation_class = DatabaseCreation

    @cached_property
    def pool_config(self) -> PoolConfig:
        """The validated pool settings of this alias: ``OPTIONS["pool"]`` and the peers' settings,
        kept by the wrapper until :meth:`close_pool`, and read once per alias, not once per wrapper
        (a wrapper per request under ASGI), while they stay the same (``PoolConfig.of_alias()``).

        :raises ImproperlyConfigured: for a wrong pool setting.
        """
        return PoolConfig.of_alias(self.settings_dict["OPTIONS"], alias=self.alias,
                                   health_checks=self.settings_dict["CONN_HEALTH_CHECKS"])

    def get_connection_params(self) -> dict[str, Any]:
        """The connection parameters: for a pooled alias, those its pool connects with (its
        ``kwargs``, built by :meth:`pool_connection_params`); else :meth:`django_connection_params`.

        Django's ``connect()`` asks for them at every checkout and passes them to
        :meth:`get_new_connection`, which takes a connection of the pool instead: they are
        computed once per pool, not once per request.
        """
        if self.pooled:
            return dict(cast("dict[str, Any]", self.get_pool().kwargs))  # a dict: pool_connection_params()
        return self.django_connection_params()

    def django_connection_params(self) -> dict[str, Any]:
        """Django's connection parameters, less the peers' pool settings (not libpq parameters)."""
        params = super().get_connection_params()
        for key in PEER_KEYS & params.keys():
            del params[key]
        return params

    @cached_property
    def isolation_level_option(self) -> IsolationLevel | None:
        """``OPTIONS["isolation_level"]`` as a psycopg ``IsolationLevel``, or None if unset."""
        value = self.settings_dict["OPTIONS"].get("isolation_level")
        if value is None:
            return None
        try:
            return IsolationLevel(value)
        except ValueError:
            raise ImproperlyConfigured(
                f"Invalid transaction isolation level {value} specified. Use one of the psycopg.IsolationLevel values."
            ) from None

    @property
    def pooled(self) -> bool:
        """False for ``OPTIONS["pool"] = False`` (Django's way to turn pooling off: each connection is
        the backend's own, as with Django's stock backend) and for Django's maintenance alias."""
        return self.alias != NO_DB_ALIAS and self.settings_dict["OPTIONS"].get("pool", True) is not False

    @property
    def pool(self) -> Pool | None:
        """This process's pool serving the calling code, or None if not :attr:`pooled`; while a
        pooled connection is checked out, the pool it came from and goes back to.

        Django's attribute for its built-in pool, which Django's own backend code reads (twice per
        checkout and return: the lender answers those without a registry look-up): so
        ``connection.pool`` and ``close_pool()`` work as they do with Django's pool.

        :raises ImproperlyConfigured: when the pool is built: ``CONN_MAX_AGE`` is not 0, or a pool
            setting is wrong.
        """
        lender: Pool | None = getattr(self.connection, "_pool", None)
        if lender is not None:
            return lender
        return self.get_pool() if self.pooled else None

    def check_settings(self) -> None:
        """Django's checks, then the pool settings'; runs at every ``connect()``, so a wrong setting
        fails at first use."""
        super().check_settings()
        self.isolation_level_option  # noqa: B018 - validate
        if self.pooled:
            self.pool_config  # noqa: B018 - validate

    def _check_pool_settings(self) -> None:
        """What a pool needs of the settings; checked when a pool is built, as Django's pool does
        (a test may patch ``CONN_MAX_AGE`` into an alias whose pool exists).

        :raises ImproperlyConfigured: ``CONN_MAX_AGE`` is not 0, or a pool setting is wrong.
        """
        max_age = self.settings_dict["CONN_MAX_AGE"]
        if max_age != 0:
            raise ImproperlyConfigured(
                f"Pooling doesn't support persistent connections. DATABASES[{self.alias!r}]['CONN_MAX_AGE'] ="
                f" {max_age!r} must be 0 with {self.settings_dict['ENGINE']!r}. The pool keeps connections open"
                " and lends one per request; a persistent connection per thread or greenlet is what it replaces."
            )
        self.pool_config  # noqa: B018 - validate

    def get_pool(self) -> Pool:
        """Return this process's pool for this alias and the calling code's driver.

        Kept by the wrapper while it stays open in this process: Django asks for it several
        times per request (:attr:`pool`), and a wrapper serves one thread or greenlet, whose
        driver does not change.
        """
        pool: Pool | None = self.__dict__.get("_kept_pool")
        if pool is not None and not pool.closed and not pool.forked:
            return pool
        driver = runtime.driver_for(self.pool_config)
        self._kept_pool = pool = registry.get_or_create(self.alias, driver, lambda: self.make_pool(driver))
        return pool

    def make_pool(self, driver: str) -> Pool:
        """Build a (closed) pool for this alias from its settings; the registry opens it.

        Logs, once per pool, how the peers' settings in ``OPTIONS`` were read.

        :raises ImproperlyConfigured: ``CONN_MAX_AGE`` is not 0, or a pool setting is wrong.
        """
        self._check_pool_settings()
        where = f"DATABASES[{self.alias!r}]['OPTIONS']"
        for note in translate(self.settings_dict["OPTIONS"], where)[1]:
            logger.info("%s: %s", where, note)
        return factory.pool_class(driver)(kwargs=self.pool_connection_params(), config=self.pool_config,
                                          connection_class=PooledConnection)

    def pool_connection_params(self) -> dict[str, Any]:
        """The connection parameters of this alias's pools: Django's, with its time zone made the
        session default (a startup parameter), so that the reset on return (``RESET ALL``) keeps it
        and Django finds nothing to set on the next checkout: no ``SET TIME ZONE`` round trip per
        request.

        Behind PgBouncer (``OPTIONS["pool"]["pgbouncer"]``) the time zone is not a startup parameter:
        PgBouncer before 1.20 refuses libpq's ``options`` and later ones apply it with a ``SET``,
        which is no session default. Django then sets it at checkout when the session's differs
        (once per connection in transaction mode, where PgBouncer tracks it; at each checkout in
        session mode, whose reset is therefore not carried: Django must see the reset session's
        time zone). Giving PgBouncer the time zone (``timezone=`` in its ``[databases]`` entry)
        spares both."""
        params = self.django_connection_params()
        pgbouncer = self.pool_config.pgbouncer
        if params.get("cursor_factory") is postgresql.Cursor and pgbouncer != "session":
            params["cursor_factory"] = ResettingCursor  # client-side binding: it carries the safe reset
        if (timezone_name := self.timezone_name) and pgbouncer is None:
            params["options"] = f"{params.get('options', '')} -c TimeZone={timezone_name}".strip()
        return params

    def close_pool(self) -> None:
        """Close this process's pools of this alias; the next connection builds new ones.

        Django calls it when ``TIME_ZONE`` or ``USE_TZ`` change (new connections must carry the
        new time zone) and hybridpool's ``DatabaseCreation`` around test-database steps.

        Called while a Celery worker runs a task in the calling thread or greenlet, it keeps the
        pools: Celery's Django fix-up calls it before and after every task of a prefork worker,
        once it has given the task's connections back, so that a child never uses a pool it
        inherited from its parent (celery#9953); hybridpool's pools are per process already (a
        forked child forgets its parent's at fork), and closing them there would open new
        connections for every task (celery#10554).
        """
        if _in_celery_task():
            return
        registry.close_all(self.alias)
        for name in ("pool_config", "configures_each_checkout", "_kept_pool"):  # the next pool reads the settings then
            self.__dict__.pop(name, None)

    @async_unsafe
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        """Take a connection from the pool (``conn_params`` are the pool's, fixed when it was built).

        :raises django.db.OperationalError: ``PoolTimeout``, ``TooManyRequests`` or
            ``PoolClosed``, wrapped by Django.
        """
        if not self.pooled:  # Django's own connection, e.g. its maintenance connection to "postgres"
            return super().get_new_connection(conn_params)
        level = self.isolation_level_option
        # As Django's backend: READ COMMITTED unless OPTIONS say otherwise, set before autocommit.
        self.isolation_level = IsolationLevel.READ_COMMITTED if level is None else level
        pool = self.get_pool()
        connection: Any = pool.getconn()  # Django's IsolationLevel (psycopg_any) is psycopg's, typed apart
        self._hold(connection, pool)
        if level is not None:
            connection.isolation_level = level
        return connection

    def _hold(self, connection: Any, pool: Pool) -> None:
        """Make this wrapper the holder of its lent ``connection``, borrowed by the thread or
        greenlet that owns the wrapper (the one that took it: Django lets no other use a wrapper
        that is not shared), or, while the wrapper is shared between threads
        (``inc_thread_sharing``), by the wrapper itself, until it is closed or collected."""
        holder = weakref.ref(self)
        pool.leases.assign(connection, holder, shared=self.allow_thread_sharing)

    def inc_thread_sharing(self) -> None:
        """Django's; a connection opened before the wrapper is shared is then borrowed by the
        wrapper, as one opened while it is shared: the thread or greenlet that opened it may end
        while others use it."""
        super().inc_thread_sharing()
        if self.pooled and self.connection is not None:
            self._hold(self.connection, cast(Pool, self.pool))  # pooled: a Pool

    def init_connection_state(self) -> None:
        """Django's session set-up, on the checkouts of a pooled connection that need it
        (:attr:`configures_each_checkout`).

        Django sets up a connection of its own pool once, when the pool opens it; a hybridpool
        connection was reset when it was last returned, so the role (``assume_role``) is set again
        here, and the time zone if it differs from the session's (see ``pool_connection_params()``).
        """
        super().init_connection_state()
        if self.configures_each_checkout and self.connection is not None:
            if (self._configure_connection(self.connection)  # type: ignore[attr-defined]  # not in django-stubs
                    and not self.get_autocommit()):
                self.connection.commit()

    @cached_property
    def configures_each_checkout(self) -> bool:
        """Whether Django's session set-up (time zone, ``assume_role``) runs at each checkout.

        Not for a pooled alias with the safe reset, no ``assume_role`` and no PgBouncer: the reset
        takes the session back to its defaults, whose time zone is Django's (a startup parameter,
        ``pool_connection_params()``), before the borrower's first statement (a carried reset
        too: it runs in front of that statement), so Django would find nothing to set. Otherwise
        yes: a role is set again after each reset; another reset keeps what the previous borrower
        set, and behind PgBouncer the time zone is no startup parameter.
        """
        if not self.pooled:
            return False
        config = self.pool_config
        return (config.reset != "safe" or config.pgbouncer is not None
                or bool(self.settings_dict["OPTIONS"].get("assume_role")))

    def close_if_unusable_or_obsolete(self) -> None:
        """Give the connection back to the pool (Django calls this at each request's start and end).

        With ``CONN_MAX_AGE = 0`` Django would close it anyway; Django's health check (a round
        trip after an error) is skipped because the pool checks what it lends.
        """
        if not self.pooled:
            super().close_if_unusable_or_obsolete()
        elif self.connection is not None:
            self.close()


def _in_celery_task() -> bool:
    """True while a Celery worker runs a task in the calling thread or greenlet (between its
    ``task_prerun`` and ``task_postrun`` signals included); Celery is not imported to ask."""
    state = sys.modules.get("celery._state")
    current_task = getattr(state, "get_current_worker_task", None)
    return current_task is not None and current_task() is not None


class DatabaseWrapper(DatabaseWrapperMixin, postgresql.DatabaseWrapper):
    """Django's PostgreSQL ``DatabaseWrapper`` with pooled connections."""


@process.after_fork_in_child
def _drop_inherited_connections() -> None:
    """In a forked child, let go of the connections the forking thread held, without closing them.

    They belong to the parent (gunicorn's ``preload_app``): closing one would end the parent's
    session, using one would mix two processes' traffic on one socket. The child's next query
    takes a connection from a pool of its own.
    """
    if not settings.configured:  # a fork before Django is set up holds no connection
        return
    for wrapper in connections.all(initialized_only=True):
        if isinstance(wrapper, DatabaseWrapperMixin) and wrapper.connection is not None:
            wrapper.connection = None
