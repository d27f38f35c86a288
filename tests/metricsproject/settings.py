"""Settings of the metrics tests' Django project, served by gunicorn (``wsgi``, gevent workers) and
uvicorn (``asgi``), several workers each, prometheus_client in multiprocess mode.

From the environment: ``DATABASE_URL``, ``METRICS_APPLICATION_NAME`` (what ``pg_stat_activity``
shows for the pool's connections), ``METRICS_MIN_SIZE``, ``METRICS_MAX_SIZE`` and
``METRICS_TIMEOUT`` (the pool's, seconds); ``PROMETHEUS_MULTIPROC_DIR`` (set by the test).
"""

import os

from hybridpool.embedded import django_settings

SECRET_KEY = "hybridpool-metrics-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
INSTALLED_APPS: list[str] = []
ROOT_URLCONF = "tests.metricsproject.urls"
MIDDLEWARE = ["hybridpool.middleware.PoolUnavailableMiddleware"]  # PoolTimeout: 503

DATABASES = {
    "default": django_settings(
        os.environ["DATABASE_URL"],
        OPTIONS={
            "application_name": os.environ["METRICS_APPLICATION_NAME"],
            "pool": {
                "min_size": int(os.environ.get("METRICS_MIN_SIZE", "1")),
                "max_size": int(os.environ.get("METRICS_MAX_SIZE", "3")),
                "timeout": float(os.environ.get("METRICS_TIMEOUT", "5")),
            },
        },
    )
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "hybridpool": {"handlers": ["stderr"], "level": "WARNING"},
        "django.request": {"handlers": ["stderr"], "level": "CRITICAL", "propagate": False},  # 503s expected
    },
}
