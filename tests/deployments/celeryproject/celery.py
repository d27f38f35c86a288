"""The Celery app, as Django's Celery recipe writes it; its Django fix-up is Celery's own (it
closes the task's connections around every task, and in prefork workers calls ``close_pool()``)."""

import os

from celery import Celery
from celery.signals import worker_process_shutdown

import hybridpool

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.deployments.celeryproject.settings")

app = Celery("celeryproject")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_shutdown.connect
def close_pools(**kwargs: object) -> None:
    """A prefork child ends with ``os._exit()``, which runs no ``atexit`` hook: close its pools
    here, so each connection ends with a terminate message."""
    hybridpool.close_all()
