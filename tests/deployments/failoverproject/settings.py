"""Settings of the failover tests' project: a primary and a standby behind libpq's multi-host syntax.

From the environment: ``FAILOVER_HOST`` and ``FAILOVER_PORT`` (both nodes, comma-separated, in the
same order), ``FAILOVER_APPLICATION_NAME`` (what ``pg_stat_activity`` shows for the pools'
connections), ``FAILOVER_MAX_SIZE``, ``FAILOVER_TIMEOUT`` and ``FAILOVER_RECONNECT_TIMEOUT`` (each pool's
``max_size``, ``timeout`` and ``reconnect_timeout``, seconds).

``default`` connects with ``target_session_attrs=read-write``: to whichever node is the primary.
``replica`` connects with ``target_session_attrs=prefer-standby``: to a standby while there is one,
else to the primary, so reads keep being served while the cluster has no standby (after a
promotion, until the old primary rejoins). :class:`~.routers.ReplicaRouter` sends reads there.
"""

import os

SECRET_KEY = "hybridpool-failover-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
INSTALLED_APPS = ["tests.deployments.failoverproject"]
ROOT_URLCONF = "tests.deployments.failoverproject.urls"
MIDDLEWARE = ["hybridpool.middleware.PoolUnavailableMiddleware"]
DATABASE_ROUTERS = ["tests.deployments.failoverproject.routers.ReplicaRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def database(target_session_attrs: str) -> dict:
    return {
        "ENGINE": "hybridpool.backends.postgresql",
        "NAME": "postgres",
        "USER": "postgres",
        "HOST": os.environ["FAILOVER_HOST"],  # "127.0.0.1,127.0.0.1"
        "PORT": os.environ["FAILOVER_PORT"],  # "p1,p2"
        "CONN_MAX_AGE": 0,
        "OPTIONS": {
            "target_session_attrs": target_session_attrs,
            "connect_timeout": 5,
            "application_name": os.environ["FAILOVER_APPLICATION_NAME"],
            "pool": {
                "min_size": 2,
                "max_size": int(os.environ.get("FAILOVER_MAX_SIZE", "4")),
                "timeout": float(os.environ.get("FAILOVER_TIMEOUT", "10")),
                "reconnect_timeout": float(os.environ.get("FAILOVER_RECONNECT_TIMEOUT", "300")),
            },
        },
    }


DATABASES = {
    "default": database("read-write"),
    "replica": database("prefer-standby"),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "hybridpool": {"handlers": ["stderr"], "level": os.environ.get("FAILOVER_LOG_LEVEL", "WARNING")},
        "django.request": {"handlers": ["stderr"], "level": "CRITICAL", "propagate": False},
    },
}
