"""The ASGI application, for ``uvicorn bench.app.asgi:application``."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.app.settings")

application = get_asgi_application()
