from django.urls import path

from . import views

urlpatterns = [
    path("query/", views.query),
    path("araw/", views.araw),
    path("sleep/", views.sleep),
    path("dirty/", views.dirty),
    path("state/", views.state),
    path("stray/", views.stray),
    path("stats/", views.stats),
]
