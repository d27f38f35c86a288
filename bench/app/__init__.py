"""The Django project the end-to-end benchmark serves: settings, a model, four views, WSGI and ASGI entry points."""
