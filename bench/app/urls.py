"""URLs of the benchmark's views (the driver's names for them: :data:`bench.matrix.VIEWS`)."""

from django.urls import path

from . import views

urlpatterns = [
    path("one/", views.one),
    path("five/", views.five),
    path("async/", views.async_one),
    path("afirst/", views.afirst),
    path("native/", views.native),
    path("write/", views.write),
    path("stats/", views.stats),
]
