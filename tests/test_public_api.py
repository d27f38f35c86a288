"""The public surface, pinned: a change to it fails here on purpose.

Adding, removing or renaming a public name is a decision for the changelog (CHANGELOG.md) and,
for a removal or a rename, for a deprecation first (``hybridpool.deprecation``): update the lists
below in the same change. The public surface is ``hybridpool.__all__`` (the names the package
imports on first use included), the version, the ENGINEs and the submodules the README documents.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import hybridpool

ROOT = Path(__file__).resolve().parent.parent

#: hybridpool.__all__, exactly.
PUBLIC = [
    "AsyncPool",
    "NativeQuerySet",
    "Pool",
    "PoolClosed",
    "PoolConfig",
    "PoolSettingError",
    "PoolTimeout",
    "TooManyRequests",
    "aconnection",
    "aget_pool",
    "close_all",
    "close_connection",
    "connection",
    "create_pool",
    "get_pool",
]

#: The names ``import hybridpool`` does not import (they need Django's database layer, or the
#: registry of every driver's pools), and the module each comes from.
LAZY = {
    "NativeQuerySet": "native",
    "aconnection": "orm",
    "aget_pool": "orm",
    "close_all": "registry",
    "close_connection": "orm",
    "connection": "orm",
    "get_pool": "orm",
}

#: The documented submodules and the names they export (README and docs/api.md: the ENGINE, the
#: deployments, the drivers' table, NativeQuerySet's stats, the middleware; CHANGELOG.md: the
#: deprecation policy).
SUBMODULES = {
    "hybridpool.backends.postgresql.base": ["DatabaseWrapper"],
    "hybridpool.asgi": ["Application", "LoopPool", "ThreadPool", "get_asgi_application"],
    "hybridpool.green": ["GreenPool"],
    "hybridpool.middleware": ["PoolUnavailableMiddleware"],
    "hybridpool.apps": ["HybridpoolConfig"],  # INSTALLED_APPS += ["hybridpool"]: the system checks
    "hybridpool.native": ["NativeQuerySet", "stats", "why_not_native"],
    "hybridpool.deprecation": ["HybridpoolDeprecationWarning", "warn_deprecated"],
}

#: Subpackages with an ``__all__`` of their own, pinned as hybridpool's is.
SUBPACKAGE_ALL = {
    "hybridpool.asgi": ["Application", "LoopPool", "ThreadPool", "get_asgi_application"],
    "hybridpool.green": ["GreenPool"],
}

#: psycopg_pool's interface that the README documents for ``get_pool()``'s pools.
POOL_METHODS = ["check", "close", "connection", "get_stats", "getconn", "open", "putconn"]


def test_all_is_the_pinned_list() -> None:
    assert hybridpool.__all__ == PUBLIC, "the public surface changed: update PUBLIC, CHANGELOG.md (and deprecate a removal)"


def test_every_public_name_resolves() -> None:
    for name in sorted(hybridpool.__all__):
        assert getattr(hybridpool, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from hybridpool import *", namespace)  # goes through __all__ and the lazy names too
    assert sorted(name for name in namespace if name != "__builtins__") == sorted(PUBLIC)


def test_lazy_names_are_pinned_and_public() -> None:
    assert hybridpool._LAZY == LAZY
    assert LAZY.keys() <= set(PUBLIC)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        hybridpool.no_such_name  # noqa: B018


FRESH = r"""
import json, sys
name = sys.argv[1]

def loaded():
    return sorted(m for m in sys.modules if m == "django.db" or m.startswith("django.db.")
                  or m in ("hybridpool.orm", "hybridpool.native", "hybridpool.registry"))

import hybridpool
before = {"loaded": loaded(), "bound": name in vars(hybridpool)}
eager = [getattr(hybridpool, n) for n in hybridpool.__all__ if n not in hybridpool._LAZY]
before["after_eager"] = loaded()
value = getattr(hybridpool, name)
module = sys.modules["hybridpool." + hybridpool._LAZY[name]]
print(json.dumps({**before, "after": loaded(), "same": value is getattr(module, name),
                  "cached": vars(hybridpool).get(name) is value}))
"""


@pytest.mark.parametrize("name", sorted(LAZY))
def test_a_lazy_name_is_imported_on_first_access_only(name: str) -> None:
    """In a fresh interpreter: ``import hybridpool`` and its eager names load nothing of Django's
    database layer nor the lazy name's module; the first access does, and binds the name."""
    done = subprocess.run([sys.executable, "-c", FRESH, name], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["loaded"] == [] and seen["after_eager"] == [], seen
    assert not seen["bound"]
    assert f"hybridpool.{LAZY[name]}" in seen["after"]
    if LAZY[name] != "registry":  # the ORM's names need Django's database layer; close_all does not
        assert "django.db" in seen["after"]
    assert seen["same"] and seen["cached"]


@pytest.mark.parametrize("module", sorted(SUBMODULES))
def test_documented_submodules_export_their_names(module: str) -> None:
    imported = importlib.import_module(module)
    for name in SUBMODULES[module]:
        assert hasattr(imported, name), f"{module}.{name}"


def test_subpackages_all_is_pinned() -> None:
    for module, names in SUBPACKAGE_ALL.items():
        assert importlib.import_module(module).__all__ == names, module


def test_the_engines_exist() -> None:
    from hybridpool.backends.postgresql.base import DatabaseWrapper
    from hybridpool.backends.postgresql.base import DatabaseWrapperMixin

    assert issubclass(DatabaseWrapper, DatabaseWrapperMixin)
    # The PostGIS ENGINE imports GDAL when loaded (tests/test_postgis.py runs it where GDAL is): here
    # only that Django will find it.
    assert importlib.util.find_spec("hybridpool.backends.postgis.base") is not None


def test_get_asgi_application_takes_threads_and_thread_timeout() -> None:
    from hybridpool.asgi import get_asgi_application

    assert list(inspect.signature(get_asgi_application).parameters) == ["threads", "thread_timeout"]


def test_pools_have_psycopg_pool_s_interface() -> None:
    for cls in (hybridpool.Pool, hybridpool.AsyncPool):
        for method in POOL_METHODS:
            assert callable(getattr(cls, method, None)), f"{cls.__name__}.{method}"


def test_pool_errors_are_psycopg_pool_s() -> None:
    import psycopg_pool

    assert hybridpool.PoolTimeout is psycopg_pool.PoolTimeout
    assert hybridpool.PoolClosed is psycopg_pool.PoolClosed
    assert hybridpool.TooManyRequests is psycopg_pool.TooManyRequests


# The version: one source, hybridpool.__version__, read by the build without importing the package.


def test_the_version_has_one_source() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"], "the version is hybridpool.__version__ only"
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "hybridpool.__version__"}
    # setuptools reads the attribute without importing the package only if it is a literal.
    tree = ast.parse((ROOT / "src" / "hybridpool" / "__init__.py").read_text())
    literals = [node.value.value for node in tree.body if isinstance(node, ast.Assign)
                and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
                and isinstance(node.value, ast.Constant)]
    assert literals == [hybridpool.__version__]


def test_the_version_is_a_release_number() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?", hybridpool.__version__), hybridpool.__version__


def test_the_installed_distribution_has_the_package_s_version() -> None:
    installed = importlib.metadata.version("hybridpool")
    assert installed == hybridpool.__version__, (
        f"the installed metadata says {installed}, hybridpool.__version__ {hybridpool.__version__}:"
        " reinstall (pip install -e .)")


def test_the_changelog_has_the_version() -> None:
    if ".dev" in hybridpool.__version__:
        pytest.skip("a development version: its changes go under [Unreleased]")
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(hybridpool.__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M), (
        f"CHANGELOG.md has no dated section for {hybridpool.__version__}")
