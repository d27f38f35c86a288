"""Settings of the Celery deployment's project, for its worker processes.

From the environment: ``DATABASE_URL``, ``CELERYPROJECT_APPLICATION_NAME`` (what
``pg_stat_activity`` shows for the pool's connections), ``CELERYPROJECT_MIN_SIZE``,
``CELERYPROJECT_MAX_SIZE`` and ``CELERYPROJECT_TIMEOUT`` (the pool's settings; seconds) and
``CELERYPROJECT_BROKER_URL`` (Redis: the broker, and the result backend on its database 1).
"""

import os

from hybridpool.embedded import django_settings

SECRET_KEY = "hybridpool-celery-not-a-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["tests.deployments.celeryproject"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": django_settings(
        os.environ["DATABASE_URL"],
        OPTIONS={
            "application_name": os.environ["CELERYPROJECT_APPLICATION_NAME"],
            "pool": {
                "min_size": int(os.environ.get("CELERYPROJECT_MIN_SIZE", "1")),
                "max_size": int(os.environ.get("CELERYPROJECT_MAX_SIZE", "4")),
                "timeout": float(os.environ.get("CELERYPROJECT_TIMEOUT", "10")),
            },
        },
    )
}

# Read by celery.py: app.config_from_object("django.conf:settings", namespace="CELERY").
CELERY_BROKER_URL = os.environ["CELERYPROJECT_BROKER_URL"]
CELERY_RESULT_BACKEND = CELERY_BROKER_URL.rsplit("/", 1)[0] + "/1"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"hybridpool": {"handlers": ["stderr"], "level": "INFO", "propagate": False}},
}
