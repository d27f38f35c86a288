"""The ASGI application, for ``uvicorn project.asgi:application``: Django's, with the ASGI
lifespan protocol, so the pools are closed when uvicorn shuts down
(:func:`hybridpool.asgi.get_asgi_application`)."""

import os

from hybridpool.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

application = get_asgi_application()
