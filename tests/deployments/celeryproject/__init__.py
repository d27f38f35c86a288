"""The Celery deployment's Django project (``tests/deployments/test_celery.py``): a Celery app
(``celery.py``), its tasks (``tasks.py``) and a model (``models.py``) on the hybridpool ENGINE.

Django's layout for Celery: the package imports its app, so ``celery -A
tests.deployments.celeryproject worker`` finds it.
"""

from .celery import app as celery_app

__all__ = ["celery_app"]
