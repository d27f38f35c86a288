"""The benchmark app's configuration: counts requests in flight (:mod:`bench.app.inflight`)."""

from django.apps import AppConfig
from django.core.signals import request_finished, request_started


class BenchConfig(AppConfig):
    name = "bench.app"
    label = "app"

    def ready(self) -> None:
        from . import inflight

        request_started.connect(inflight.started, dispatch_uid="bench-inflight-started")
        request_finished.connect(inflight.finished, dispatch_uid="bench-inflight-finished")
