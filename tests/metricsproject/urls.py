from django.urls import path

from hybridpool.metrics.views import metrics  # imports hybridpool.metrics: the pools' metrics are installed

from . import views

urlpatterns = [
    path("work/", views.work),
    path("stats/", views.stats),
    path("metrics/", metrics),
]
