"""The ASGI application as Django ships it (``django.core.asgi.get_asgi_application()``): moving
from Django's pool to hybridpool changes the ENGINE, not ``asgi.py``."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.faults.project.settings")

application = get_asgi_application()
