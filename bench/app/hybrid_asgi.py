"""hybridpool's ASGI application (reused request threads, the lifespan protocol), for
``uvicorn bench.app.hybrid_asgi:application --lifespan on``: the engines of
:data:`bench.engines.HYBRID_ASGI`. Its ``lifespan.startup`` marks uvicorn's loop as serving, which
``NativeQuerySet`` needs to read on the loop."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.app.settings")

from hybridpool.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
