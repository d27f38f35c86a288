from django.urls import path

from . import views

urlpatterns = [
    path("write/", views.write),
    path("read/", views.read),
    path("pool/", views.pool),
    path("sweep/", views.sweep),
    path("stats/", views.stats),
]
