"""Sphinx configuration of hybridpool's documentation site.

Build it with ``scripts/docs`` (a virtualenv with the ``docs`` extra, then ``sphinx-build -W
--keep-going -n``): every warning, an unresolved reference included, fails the build.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

import hybridpool  # noqa: E402 - installed (scripts/docs: pip install -e .)

project = "hybridpool"
author = "the hybridpool authors"
copyright = "the hybridpool authors, BSD-3-Clause"  # noqa: A001 - Sphinx's name
release = hybridpool.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",  # the pages are Markdown
    "sphinx.ext.autodoc",  # the API reference, from the docstrings
    "sphinxcontrib.mermaid",  # the diagrams
    "poolsettings",  # docs/_ext: the settings reference, from PoolConfig's docstring
    "repofiles",  # docs/_ext: {repo} and {test}, citations of the repository checked at build time
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"

# MyST: ::: fences for admonitions, and anchors for headings down to ### so that pages can link
# to a section (page.md#section).
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc: members in source order, type hints in the signatures.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

# No intersphinx: fetching the inventories of Python's, Django's and psycopg's documentation at
# every build would make the build depend on those sites. References to their names (in the
# docstrings and the signatures) are left unresolved, and only those: any other unresolved
# reference fails the build (-n -W).
nitpick_ignore_regex = [
    ("py:.*", r"(psycopg|psycopg_pool|django|asgiref|gevent|celery|prometheus_client|opentelemetry)(\..*)?"),
    ("py:.*", r"(typing|collections|contextlib|concurrent\.futures|types|weakref|abc)\..*"),
    ("py:.*", r"(Any|Callable|Iterator|AsyncIterator|Awaitable|MutableMapping|TypeVar)"),
    # Type variables, and the modules of hybridpool's internals, which the reference leaves out
    # (docs/design.md describes them).
    ("py:.*", r"hybridpool\.(orm\.F|pool\.CT|pool\.ACT)"),
    ("py:.*", r"hybridpool\.(leases|migration|asgi\.budget|asgi\.application|asgi\.pool|registry|steps|reset"
              r"|lifecycle|capacity|cursors|stats|runtime|process)(\..*)?"),
    ("py:.*", r"(ImproperlyConfigured|OperationalError)"),
    ("py:.*", r"(None|True|False|bool|int|float|str|bytes|dict|list|tuple|type|object|BaseException|Exception"
              r"|ValueError|TypeError|RuntimeError|KeyboardInterrupt)"),
]

html_theme = "furo"
html_title = f"hybridpool {release}"
html_static_path: list[str] = []


#: psycopg_pool's exceptions, which hybridpool re-exports: a docstring's reference to
#: ``psycopg_pool.PoolTimeout`` links to ``hybridpool.PoolTimeout``.
REEXPORTED = {f"psycopg_pool.{name}": f"hybridpool.{name}" for name in ("PoolTimeout", "TooManyRequests", "PoolClosed")}


def _reexported(app, env, node, contnode):  # type: ignore[no-untyped-def]
    target = REEXPORTED.get(node.get("reftarget", ""))
    if node.get("refdomain") != "py" or target is None:
        return None
    return env.get_domain("py").resolve_xref(env, node["refdoc"], app.builder, "exc", target, node, contnode)


def _every_public_name_documented(app, env):  # type: ignore[no-untyped-def]
    """Fail the build (a warning, under -W) for a name of ``hybridpool.__all__`` that the API
    reference does not document, under its public name or where it is defined."""
    from sphinx.util import logging

    documented = env.get_domain("py").objects
    for name in hybridpool.__all__:
        obj = getattr(hybridpool, name)
        defined = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', name)}"
        if f"hybridpool.{name}" not in documented and defined not in documented:
            logging.getLogger(__name__).warning(
                "hybridpool.%s is public (hybridpool.__all__) and not in the API reference (docs/api.md)", name)


def setup(app):  # type: ignore[no-untyped-def]
    app.connect("missing-reference", _reexported)
    app.connect("env-check-consistency", _every_public_name_documented)
