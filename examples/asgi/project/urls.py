"""URLs of the ASGI deployment."""

from django.urls import path

from . import views

urlpatterns = [
    path("notes/", views.notes),
    path("raw/", views.raw),
    path("stats/", views.stats),
]
