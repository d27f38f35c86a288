"""The Django project the end-to-end benchmark serves: settings, a model, its views, WSGI and ASGI entry points (Django's and hybridpool's)."""
