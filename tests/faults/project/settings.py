"""Settings of the fault suite's Django project, served by gunicorn (``wsgi``) and uvicorn (``asgi``).

From the environment: ``DATABASE_URL``, ``FAULTS_APPLICATION_NAME`` (what ``pg_stat_activity``
shows for the pool's connections), ``FAULTS_MAX_SIZE`` and ``FAULTS_TIMEOUT`` (the pool's
``max_size`` and ``timeout``, seconds) and ``FAULTS_ROLE`` (the role ``/dirty/`` switches to).
"""

import os

from hybridpool.embedded import django_settings

SECRET_KEY = "hybridpool-faults-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
INSTALLED_APPS: list[str] = []
ROOT_URLCONF = "tests.faults.project.urls"
MIDDLEWARE = ["hybridpool.middleware.PoolUnavailableMiddleware"]

DATABASES = {
    "default": django_settings(
        os.environ["DATABASE_URL"],
        OPTIONS={
            "application_name": os.environ["FAULTS_APPLICATION_NAME"],
            "pool": {
                "min_size": 1,
                "max_size": int(os.environ.get("FAULTS_MAX_SIZE", "4")),
                "timeout": float(os.environ.get("FAULTS_TIMEOUT", "5")),
            },
        },
    )
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "hybridpool": {"handlers": ["stderr"], "level": os.environ.get("FAULTS_LOG_LEVEL", "WARNING")},
        "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
    },
}
