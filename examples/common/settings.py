"""Django settings shared by the example deployments (``examples/gevent``, ``examples/asgi``).

The database comes from the environment: ``DATABASE_URL`` (a URL or libpq conninfo),
``HYBRIDPOOL_MAX_SIZE`` (the pool's ``max_size``, default 10) and ``HYBRIDPOOL_APPLICATION_NAME``
(what ``pg_stat_activity`` shows for the pool's connections). Each project's ``settings`` adds its
URLs and entry point. Not for production: the secret key is in the source and DEBUG is off only so
that the example runs as it would deployed.
"""

import os

from hybridpool.embedded import django_settings

SECRET_KEY = "hybridpool-example-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True

INSTALLED_APPS = ["examples.common.notes"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]

DATABASES = {
    "default": django_settings(
        os.environ["DATABASE_URL"],
        OPTIONS={
            "application_name": os.environ.get("HYBRIDPOOL_APPLICATION_NAME", "hybridpool-example"),
            "pool": {"min_size": 2, "max_size": int(os.environ.get("HYBRIDPOOL_MAX_SIZE", "10")), "timeout": 10},
        },
    )
}

# The pool's warnings (broken connections, failed connects) and the tracebacks of failed requests
# go to stderr; Django shows the latter only with DEBUG otherwise.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "hybridpool": {"handlers": ["stderr"], "level": "WARNING"},
        "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
    },
}
