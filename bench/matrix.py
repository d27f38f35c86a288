"""What the end-to-end benchmark runs: which views, at how many clients, with which engines, under
which servers. The default is :data:`DEFAULTS`; each command-line choice replaces one dimension in
every group of it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from .engines import ENGINES, ONLY_ON, runs_on
from .servers import SERVERS

#: The views: name -> (path, HTTP method). ``async``, ``afirst`` and ``native`` need an ASGI server.
#: ``async`` and ``afirst`` read through NativeQuerySet for the engines of
#: :data:`bench.engines.NATIVE`, through Django's manager for the others; ``native`` always
#: through NativeQuerySet (natively only with a hybridpool engine under hybridpool's application).
VIEWS: dict[str, tuple[str, str]] = {
    "one": ("/one/", "GET"),
    "five": ("/five/", "GET"),
    "async": ("/async/", "GET"),
    "afirst": ("/afirst/", "GET"),
    "native": ("/native/", "GET"),
    "write": ("/write/", "POST"),
}
ASGI_ONLY = {"async", "afirst", "native"}
ASGI_SERVERS = {"uvicorn"}


@dataclass(frozen=True)
class Group:
    """Every view at every client count with every engine, under one server."""

    server: str
    views: tuple[str, ...]
    clients: tuple[int, ...]
    engines: tuple[str, ...]


#: The default matrix: about 12 minutes on the 2-core development machine with the default times.
DEFAULTS = (
    Group("gevent", ("one", "five"), (10, 100, 500), ("hybridpool", "hybridpool-rollback", "builtin", "geventpool")),
    # Unpooled, 100 clients or more want as many server connections: about max_connections (100
    # by default), where requests fail. At 10 clients: the reference for the targets.
    Group("gevent", ("one", "five"), (10,), ("max-age-0", "max-age-none")),
    Group("gevent", ("write",), (100,), ("hybridpool", "hybridpool-rollback", "builtin")),
    Group("uvicorn", ("async", "one"), (100,), ("hybridpool", "hybridpool-rollback", "builtin", "max-age-0", "max-age-none")),
    # One afirst() per request: the ENGINE switch alone, + hybridpool's ASGI application,
    # + NativeQuerySet, against the built-in pool under Django's application.
    Group("uvicorn", ("afirst",), (10, 100), ("hybridpool", "hybridpool-asgi", "hybridpool-native", "builtin")),
    Group("gthread", ("one",), (10, 100), ("hybridpool", "builtin", "max-age-0", "max-age-none")),
)

#: server -> engine -> [(view, clients)], in the order they run.
Plan = dict[str, dict[str, list[tuple[str, int]]]]


def choose(names: Sequence[str] | None, allowed: Sequence[str], option: str) -> tuple[str, ...] | None:
    """Check command-line ``names`` against ``allowed``.

    :raises ValueError: naming ``option`` and the unknown value.
    """
    if names is None:
        return None
    for name in names:
        if name not in allowed:
            raise ValueError(f"{option} {name!r}: not one of {', '.join(allowed)}")
    return tuple(names)


def plan(servers: Sequence[str] | None = None, engines: Sequence[str] | None = None,
         views: Sequence[str] | None = None, clients: Sequence[int] | None = None) -> tuple[Plan, list[str]]:
    """The cells to run: :data:`DEFAULTS`, narrowed to ``servers`` and with ``engines``, ``views``,
    ``clients`` (each None: the default's) in place of each group's.

    Per server the engines run in :data:`bench.engines.ENGINES` order (interleaved rounds: A B C
    A B C), and each engine's cells by client count, then view: the lightest load first.

    :returns: the plan, and what was left out because it cannot run (geventpool off gevent,
        hybridpool's ASGI application or an async view under WSGI).
    :raises ValueError: an unknown server, engine or view, or a client count < 1.
    """
    servers = choose(servers, SERVERS, "--servers")
    engines = choose(engines, ENGINES, "--engines")
    views = choose(views, tuple(VIEWS), "--views")
    if clients is not None and min(clients) < 1:
        raise ValueError(f"--clients {min(clients)}: a load needs at least 1 client")
    groups = [group for group in DEFAULTS if servers is None or group.server in servers]
    cells: Plan = {}
    skipped: list[str] = []
    for group in groups:
        group = replace(group, engines=engines or group.engines, views=views or group.views,
                        clients=tuple(clients or group.clients))
        for engine in group.engines:
            if not runs_on(engine, group.server):
                skipped.append(f"{engine} under {group.server}: it runs under {', '.join(ONLY_ON[engine])} only")
                continue
            for view in group.views:
                if view in ASGI_ONLY and group.server not in ASGI_SERVERS:
                    skipped.append(f"view {view} under {group.server}: it needs an ASGI server")
                    continue
                cells.setdefault(group.server, {}).setdefault(engine, []).extend(
                    (view, count) for count in group.clients)
    ordered = {server: {engine: sorted(set(by_engine[engine]), key=lambda cell: (cell[1], tuple(VIEWS).index(cell[0])))
                        for engine in ENGINES if engine in by_engine}
               for server, by_engine in cells.items()}
    return ordered, sorted(set(skipped))
