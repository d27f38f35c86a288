"""Roles that cite the repository's files, checked at build time.

``{repo}`path``` names a file or folder of the repository (relative to its root); ``{test}`path::name```
names a test (a function or class ``name`` defined in the file ``path``), and ``{test}`::name```
another test of the file the page cited last. A path that does not exist, or a test that is not
defined in its file, is a build error: the pages that say which test proves what cannot drift from
the tests.

The citation renders as the path in code style; with ``repo_source_url`` set in ``conf.py`` (or the
environment variable ``HYBRIDPOOL_SOURCE_URL``), e.g. ``https://example.org/hybridpool/blob/main``,
it links to the file there.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxRole

logger = logging.getLogger(__name__)


def _root(app: Sphinx) -> Path:
    return Path(app.srcdir).parent


class RepoRole(SphinxRole):
    """``{repo}`path```: a file or folder of the repository."""

    def run(self) -> tuple[list[nodes.Node], list[nodes.system_message]]:
        path = self.text.strip()
        if not (_root(self.env.app) / path.rstrip("/")).exists():
            logger.warning("%s: no such file or folder in the repository", path, location=self.get_location())
        return [_cite(self.env.app, self.text, path)], []


class TestRole(SphinxRole):
    """``{test}`path::name``` or ``{test}`::name```: a test of the repository."""

    def run(self) -> tuple[list[nodes.Node], list[nodes.system_message]]:
        path, _, name = self.text.strip().partition("::")
        if not path:
            path = self.env.temp_data.get("repofiles_last_test_file", "")
            if not path:
                logger.warning("%s: which file? name it once on the page first", self.text,
                               location=self.get_location())
        self.env.temp_data["repofiles_last_test_file"] = path
        file = _root(self.env.app) / path
        if not file.is_file():
            logger.warning("%s: no such test file in the repository", path, location=self.get_location())
        elif name:
            defined = re.compile(rf"^\s*(?:async\s+)?(?:def|class)\s+{re.escape(name)}\b", re.MULTILINE)
            if not defined.search(file.read_text(encoding="utf-8")):
                logger.warning("%s: no test %r in %s", self.text, name, path, location=self.get_location())
        return [_cite(self.env.app, self.text.strip(), path)], []


def _cite(app: Sphinx, text: str, path: str) -> nodes.Node:
    literal = nodes.literal(text=text)
    base = app.config.repo_source_url
    if not base:
        return literal
    reference = nodes.reference("", "", refuri=f"{base.rstrip('/')}/{path}", internal=False)
    reference += literal
    return reference


def setup(app: Sphinx) -> dict[str, Any]:
    import os

    app.add_config_value("repo_source_url", os.environ.get("HYBRIDPOOL_SOURCE_URL", ""), "html", str)
    app.add_role("repo", RepoRole())
    app.add_role("test", TestRole())
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
