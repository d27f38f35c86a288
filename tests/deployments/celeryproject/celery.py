"""The Celery app, as Django's Celery recipe writes it; its Django fix-up is Celery's own (it
closes the task's connections around every task, and in prefork workers calls ``close_pool()``).
Nothing of hybridpool's: the ENGINE closes a prefork child's pools at its exit itself."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.deployments.celeryproject.settings")

app = Celery("celeryproject")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

