"""Exhaustion as HTTP: ``PoolUnavailableMiddleware`` answers 503 with ``Retry-After``."""

from __future__ import annotations

import threading

from django.db import connections
from django.http import HttpResponse
from django.test import Client, override_settings
from django.urls import path

import hybridpool


def count_items(request):
    with connections["tiny"].cursor() as cursor:  # "tiny": max_size=1, timeout=0.3 s
        cursor.execute("SELECT 1")
    connections["tiny"].close()
    return HttpResponse("ok")


urlpatterns = [path("items/", count_items)]


@override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=["hybridpool.middleware.PoolUnavailableMiddleware"])
def test_an_exhausted_pool_answers_503_with_retry_after():
    responses = []

    def get():
        responses.append(Client(raise_request_exception=False).get("/items/"))

    with hybridpool.connection("tiny"):  # the only connection is taken
        request = threading.Thread(target=get)
        request.start()
        request.join(5)
    request = threading.Thread(target=get)  # free again
    request.start()
    request.join(5)
    busy, served = responses
    assert (busy.status_code, busy["Retry-After"]) == (503, "1")
    assert served.status_code == 200
