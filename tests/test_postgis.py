"""The ENGINE ``hybridpool.backends.postgis``: GeoDjango works on pooled connections, at every checkout.

Django's PostGIS backend registers the geometry dumpers and loaders on a connection in
``get_new_connection``; with the pool that is each checkout of a server connection that lives on.
The ``gis`` alias (see ``tests/gis.py``) has ``min_size=1, max_size=2``, so consecutive checkouts
come back to the same server connections. Run for the driver of the process (see conftest).
"""

from __future__ import annotations

import collections
import threading

import psycopg
import pytest

from . import gis

if gis.status["skip"]:
    pytest.skip(gis.status["skip"], allow_module_level=True)

from django.contrib.gis.db.backends.postgis.adapter import PostGISAdapter  # noqa: E402
from django.contrib.gis.db.models.functions import Distance  # noqa: E402
from django.contrib.gis.geos import GEOSGeometry, Point, Polygon  # noqa: E402
from django.contrib.gis.measure import D  # noqa: E402
from django.db import connections, transaction  # noqa: E402
from psycopg.adapt import PyFormat  # noqa: E402

import hybridpool  # noqa: E402
from hybridpool.backends.postgresql.base import DatabaseWrapperMixin  # noqa: E402
from tests.gisapp.models import Place  # noqa: E402

from .conftest import GEVENT, run_concurrently, wait_for  # noqa: E402

ALIAS = gis.ALIAS
places = Place.objects.using(ALIAS)


# Geometries are made per test: a GEOS object still alive at interpreter exit (a module global)
# frees itself through GEOS's thread-local context, which gevent can no longer serve then.
def berlin() -> Point:
    return Point(13.4050, 52.5200, srid=4326)


def potsdam() -> Point:
    return Point(13.0645, 52.3906, srid=4326)  # about 27 km from Berlin


def paris() -> Point:
    return Point(2.3522, 48.8566, srid=4326)  # about 880 km from Berlin


def brandenburg() -> Polygon:
    return Polygon(((11.0, 51.0), (15.0, 51.0), (15.0, 54.0), (11.0, 54.0), (11.0, 51.0)), srid=4326)


@pytest.fixture(scope="module", autouse=True)
def _table():
    with connections[ALIAS].schema_editor() as editor:
        editor.create_model(Place)
    connections[ALIAS].close()
    yield
    with connections[ALIAS].schema_editor() as editor:
        editor.delete_model(Place)
    connections[ALIAS].close()


@pytest.fixture(autouse=True)
def _clean():
    yield
    places.all().delete()
    connections.close_all()


def in_use() -> int:
    stats = hybridpool.get_pool(ALIAS).get_stats()
    return stats["pool_size"] - stats["pool_available"]


def checkout() -> tuple[int, psycopg.Connection]:
    """Check out a connection for the ``gis`` alias; return its server pid and psycopg connection."""
    with connections[ALIAS].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    return pid, connections[ALIAS].connection


def has_geometry_adapters(conn: psycopg.Connection) -> bool:
    """True if ``conn`` can send GeoDjango's geometries (the dumper Django's backend registers)."""
    try:
        conn.adapters.get_dumper(PostGISAdapter, PyFormat.AUTO)
    except psycopg.ProgrammingError:  # "cannot adapt type 'PostGISAdapter'"
        return False
    return True


def test_the_gis_alias_is_pooled_postgis():
    wrapper = connections[ALIAS]
    assert wrapper.settings_dict["ENGINE"] == "hybridpool.backends.postgis"
    assert isinstance(wrapper, DatabaseWrapperMixin)
    _, conn = checkout()
    assert conn._pool is hybridpool.get_pool(ALIAS)
    assert type(conn._pool).__name__ == ("GreenPool" if GEVENT else "ThreadPool")  # the driver under test
    assert has_geometry_adapters(conn)
    with connections[ALIAS].cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'postgis'")
        assert cursor.fetchone() is not None


def test_geometries_are_saved_and_read_back_with_their_srid():
    places.create(name="berlin", point=berlin(), area=brandenburg(), location=Point(13.4050, 52.5200))
    connections[ALIAS].close()  # read back on a new checkout
    place = places.get(name="berlin")
    assert isinstance(place.point, Point)
    assert place.point == berlin() and place.point.srid == 4326
    assert place.point.equals_exact(berlin(), tolerance=1e-9)
    assert isinstance(place.area, Polygon)
    assert place.area == brandenburg() and place.area.srid == 4326
    assert place.location.srid == 4326  # geography: WGS 84 by default
    assert place.location.equals_exact(berlin(), tolerance=1e-9)


def test_geometry_in_another_srid_is_transformed_on_save():
    mercator = berlin().transform(3857, clone=True)
    places.create(name="mercator", point=mercator)
    place = places.get(name="mercator")
    assert place.point.srid == 4326
    assert place.point.equals_exact(berlin(), tolerance=1e-6)


def test_spatial_lookups():
    places.create(name="berlin", point=berlin(), area=brandenburg())
    places.create(name="potsdam", point=potsdam())
    places.create(name="paris", point=paris())
    assert list(places.filter(area__contains=potsdam()).values_list("name", flat=True)) == ["berlin"]
    assert not places.filter(area__contains=paris()).exists()
    assert set(places.filter(point__within=brandenburg()).values_list("name", flat=True)) == {"berlin", "potsdam"}
    near = places.filter(point__distance_lte=(berlin(), D(km=50))).order_by("name")
    assert list(near.values_list("name", flat=True)) == ["berlin", "potsdam"]
    by_distance = places.annotate(distance=Distance("point", berlin())).order_by("distance")
    assert [p.name for p in by_distance] == ["berlin", "potsdam", "paris"]
    assert [round(p.distance.km, -1) for p in by_distance] == [0, 30, 880]


def test_raw_sql_through_the_orm_cursor_returns_and_takes_geometries():
    places.create(name="berlin", point=berlin(), area=brandenburg())
    with connections[ALIAS].cursor() as cursor:
        cursor.execute("SELECT point, area FROM gisapp_place WHERE name = %s", ["berlin"])
        point, area = (GEOSGeometry(value) for value in cursor.fetchone())  # hex EWKB
        assert point == berlin() and point.srid == 4326
        assert area == brandenburg() and area.srid == 4326
        # a geometry parameter goes through the dumper the backend registered
        cursor.execute("SELECT ST_AsEWKT(%s), ST_Contains(%s, %s)",
                       [PostGISAdapter(potsdam()), PostGISAdapter(brandenburg()), PostGISAdapter(potsdam())])
        ewkt, contains = cursor.fetchone()
        assert ewkt.startswith("SRID=4326;POINT(13.0645 52.3906") and contains is True
    raw = list(places.raw("SELECT * FROM gisapp_place WHERE ST_DWithin(point, %s, 1)", [PostGISAdapter(berlin())]))
    assert [place.name for place in raw] == ["berlin"]
    assert raw[0].point == berlin() and raw[0].point.srid == 4326


def test_every_checkout_of_a_pooled_server_connection_works_with_geometries():
    pids = collections.Counter()
    for i in range(6):
        pid, conn = checkout()
        pids[pid] += 1
        assert conn._pool is hybridpool.get_pool(ALIAS)
        assert has_geometry_adapters(conn)
        place = places.create(name=f"round {i}", point=Point(i, i, srid=4326))
        assert places.get(pk=place.pk).point == Point(i, i, srid=4326)
        assert places.filter(point__distance_lte=(Point(i, i, srid=4326), D(m=1))).count() == 1
        with connections[ALIAS].cursor() as cursor:
            cursor.execute("SELECT point FROM gisapp_place WHERE id = %s", [place.pk])
            assert GEOSGeometry(cursor.fetchone()[0]) == Point(i, i, srid=4326)
        assert connections[ALIAS].connection is conn  # the whole round on one checkout
        connections[ALIAS].close()  # back to the pool, which resets it (DISCARD ALL)
        assert not conn.closed
        assert wait_for(lambda: in_use() == 0)
    assert sum(pids.values()) == 6 and len(pids) <= 2  # max_size=2: server connections were reused
    assert max(pids.values()) >= 3  # so one was checked out at least 3 times


def test_atomic_and_connection_blocks():
    with hybridpool.connection(ALIAS) as conn:
        assert has_geometry_adapters(conn)
        places.create(name="block", point=berlin())
    with pytest.raises(ZeroDivisionError), transaction.atomic(using=ALIAS):
        places.create(name="dropped", point=paris())
        1 / 0
    with transaction.atomic(using=ALIAS):
        places.create(name="kept", point=potsdam())
    assert set(places.values_list("name", flat=True)) == {"block", "kept"}


def test_connections_checked_out_at_once_each_have_the_adapters():
    barrier = threading.Barrier(2, timeout=10)

    @hybridpool.close_connection
    def request(i):
        pid, conn = checkout()
        barrier.wait()  # both connections (max_size=2) are out at once
        places.create(name=f"at once {i}", point=Point(i, 0, srid=4326))
        return pid, has_geometry_adapters(conn), places.get(name=f"at once {i}").point == Point(i, 0, srid=4326)

    results = run_concurrently(request, 2)
    assert len({pid for pid, _, _ in results}) == 2
    assert [ok for _, *ok in results] == [[True, True]] * 2


def test_concurrent_workers_share_the_pooled_connections():
    @hybridpool.close_connection
    def request(i):
        with transaction.atomic(using=ALIAS):
            point = Point(10 + i / 100, 50, srid=4326)
            place = places.create(name=f"w{i}", point=point)
            found = places.get(pk=place.pk).point
            return found == point, places.filter(point__distance_lte=(point, D(m=1))).count()

    assert run_concurrently(request, 20) == [(True, 1)] * 20
    assert wait_for(lambda: in_use() == 0)


def test_a_replaced_server_connection_gets_the_adapters_too():
    pid, _ = checkout()
    connections[ALIAS].close()
    assert wait_for(lambda: in_use() == 0)
    conninfo = gis.status["conninfo"]
    app = connections[ALIAS].settings_dict["OPTIONS"]["application_name"]
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = %s", [app])
    # the pool finds them dead at checkout and opens new ones, which Django's backend prepares
    for _ in range(3):
        new_pid, conn = checkout()
        assert new_pid != pid
        assert has_geometry_adapters(conn)
        places.create(name="after", point=berlin())
        assert places.filter(name="after", point__distance_lte=(berlin(), D(m=1))).exists()
        connections[ALIAS].close()
        assert wait_for(lambda: in_use() == 0)
