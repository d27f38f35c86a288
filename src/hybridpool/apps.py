"""``INSTALLED_APPS += ["hybridpool"]``: registers hybridpool's system checks at start-up."""

from django.apps import AppConfig


class HybridpoolConfig(AppConfig):
    name = "hybridpool"
    verbose_name = "hybridpool"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the checks
