"""URLs of the gevent deployment."""

from django.urls import path

from . import views

urlpatterns = [
    path("notes/", views.notes),
    path("stats/", views.stats),
]
