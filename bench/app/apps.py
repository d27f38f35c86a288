"""The benchmark app's configuration."""

from django.apps import AppConfig


class BenchConfig(AppConfig):
    name = "bench.app"
    label = "app"
