"""The pools' metrics, named after OpenTelemetry's semantic conventions for database client
connection pools. ``import hybridpool.metrics`` installs them (:func:`install`).

With ``prometheus_client`` installed (``pip install 'hybridpool[prometheus]'``), the metrics are
registered on its default registry, so ``prometheus_client.generate_latest()`` and any existing
``/metrics`` view include them, in one process or in several (its multiprocess mode:
:mod:`hybridpool.metrics.prometheus`); :mod:`hybridpool.metrics.views` has a view and an ASGI
route. Otherwise, with ``opentelemetry-api`` (``pip install 'hybridpool[otel]'``), they are
instruments of the meter ``hybridpool`` (:mod:`hybridpool.metrics.otel`).

Names: :mod:`hybridpool.metrics.names`; what each gauge reads from ``get_stats()``:
:mod:`hybridpool.metrics.readings`. The user documentation is ``docs/metrics.md``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from .pools import track

__all__ = ["install", "track"]


def install(exporter: str = "auto", **options: Any) -> Any:
    """Install an exporter of the pools' metrics (once: a second call returns the same one).

    :param exporter: ``"prometheus"`` (prometheus_client), ``"otel"`` (OpenTelemetry's API), or
        ``"auto"``: prometheus_client if it is installed, else OpenTelemetry's API.
    :param options: the exporter's: ``meter_provider`` for ``"otel"`` (default: the global one).
    :returns: the :class:`~hybridpool.metrics.prometheus.PrometheusExporter` or
        :class:`~hybridpool.metrics.otel.OpenTelemetryExporter`.
    :raises ImportError: the exporter's library is not installed (for ``"auto"``: neither is).
    :raises ValueError: an unknown ``exporter``.
    """
    if exporter == "auto":
        if _installed("prometheus_client"):
            exporter = "prometheus"
        elif _installed("opentelemetry.metrics"):
            exporter = "otel"
        else:
            raise ImportError("hybridpool.metrics needs prometheus_client or opentelemetry-api: "
                              "pip install 'hybridpool[prometheus]' or 'hybridpool[otel]'")
    if exporter == "prometheus":
        from . import prometheus

        return prometheus.install(**options)
    if exporter == "otel":
        from . import otel

        return otel.install(**options)
    raise ValueError(f"unknown metrics exporter {exporter!r}: 'prometheus', 'otel' or 'auto'")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or blocked (sys.modules[name] = None)
        return False


install()
