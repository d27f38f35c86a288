"""The ASGI application, for uvicorn: Django's, with the lifespan protocol that closes the pools
at shutdown (:func:`hybridpool.asgi.get_asgi_application`)."""

import os

from hybridpool.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.faults.project.settings")

application = get_asgi_application()
