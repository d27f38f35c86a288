"""The settings reference, generated from :class:`hybridpool.PoolConfig`'s docstring.

``PoolConfig`` is a dataclass whose fields are the pool settings, each documented by a ``:param
name:`` entry of the class docstring. The ``pool-settings`` directive renders one table row per
field, in the order of the fields: the ``OPTIONS["pool"]`` key (a link target for the ``setting``
role: ``{setting}`max_size``` in a page), its type, the default of ``PoolConfig()``, and the
docstring's text, parsed as reStructuredText. A field without a ``:param:`` entry, or an entry
without a field, is a build error: the table cannot drift from the code.

In the API reference the same docstring's ``:param:`` entries are replaced by a pointer to the
table, so the settings are described in one place.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docstrings import prepare_docstring
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

#: The start of one docstring field: ``:param name: text``, ``:raises X: text``, ...
FIELD = re.compile(r"^:(?P<kind>\w+)(?: (?P<name>[\w.]+))?:\s?(?P<text>.*)$")


def docstring_params(doc: str) -> dict[str, list[str]]:
    """The ``:param name:`` entries of ``doc``: name -> the lines of its text, dedented."""
    params: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in prepare_docstring(doc):
        if match := FIELD.match(line):
            current = None
            if match["kind"] == "param" and match["name"]:
                current = params[match["name"]] = [match["text"]]
        elif current is not None:
            if line and not line.startswith(" "):  # the field list ended
                current = None
            else:
                current.append(line.strip())
    return params


def _cell(content: nodes.Node | list[nodes.Node]) -> nodes.entry:
    entry = nodes.entry()
    if isinstance(content, list):
        entry.extend(content)
    else:
        entry += content
    return entry


class PoolSettings(SphinxDirective):
    """``pool-settings``: the table of ``PoolConfig``'s settings."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from hybridpool import PoolConfig

        params = docstring_params(PoolConfig.__doc__ or "")
        fields = dataclasses.fields(PoolConfig)
        names = [field.name for field in fields]
        for name in names:
            if name not in params:
                logger.warning("PoolConfig field %r has no ':param %s:' entry in its docstring", name, name,
                               location=self.get_location())
        for name in params.keys() - set(names):
            logger.warning("PoolConfig's docstring documents ':param %s:', which is not a field", name,
                           location=self.get_location())
        defaults = PoolConfig()  # the effective defaults: validation fills min_size and max_size

        table = nodes.table(classes=["pool-settings"])
        group = nodes.tgroup(cols=4)
        table += group
        for width in (18, 14, 10, 58):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        group += head
        row = nodes.row()
        for title in ('``OPTIONS["pool"]`` key', "type", "default", "meaning"):
            row += _cell(self.parse_inline_text(title))
        head += row
        body = nodes.tbody()
        group += body
        std = self.env.get_domain("std")
        for field in fields:
            if field.name not in params:
                continue
            row = nodes.row()
            node_id = f"setting-{field.name}"
            target = nodes.target("", "", ids=[node_id])
            std.note_object("setting", field.name, node_id, location=self.get_location())
            row += _cell([target, nodes.literal(text=field.name)])
            row += _cell(nodes.literal(text=str(field.type)))
            row += _cell(nodes.literal(text=repr(getattr(defaults, field.name))))
            row += _cell(self.parse_rst(params[field.name]))
            body += row
        return [table]

    def parse_rst(self, lines: list[str]) -> list[nodes.Node]:
        """Parse docstring text as reStructuredText, whatever the page's own markup (MyST parses
        a Markdown page's nested content as Markdown): as MyST's ``eval-rst`` does."""
        from docutils.parsers.rst import Parser, roles
        from docutils.utils import new_document

        document = new_document(self.state.document["source"], self.state.document.settings)
        document.reporter = self.state.document.reporter
        blank_role = roles._roles.get("")  # docutils caches the default role there while parsing
        Parser().parse("\n".join(lines), document)
        if blank_role is not None:
            roles._roles[""] = blank_role
        return list(document.children)

    def parse_inline_text(self, text: str) -> list[nodes.Node]:
        parsed, _ = self.state.inline_text(text, self.lineno)
        return [nodes.paragraph("", "", *parsed)]


def _point_to_table(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """autodoc: in ``PoolConfig``'s docstring, the ``:param:`` entries give way to a pointer to the
    settings reference (the table above renders them)."""
    if what != "class" or name not in ("hybridpool.PoolConfig", "hybridpool.config.PoolConfig"):
        return
    kept: list[str] = []
    in_param = False
    for line in lines:
        match = FIELD.match(line)
        if match:
            in_param = match["kind"] == "param"
        elif line and not line.startswith(" "):
            in_param = False
        if not in_param:
            kept.append(line)
    first_field = next((i for i, line in enumerate(kept) if FIELD.match(line)), len(kept))
    kept[first_field:first_field] = [
        "Its fields are the pool settings: each is a key of ``OPTIONS[\"pool\"]`` and a keyword of",
        ":func:`hybridpool.create_pool`, described in :doc:`/settings`.",
        "",
    ]
    lines[:] = kept


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_object_type("setting", "setting", indextemplate="pair: %s; pool setting")
    app.add_directive("pool-settings", PoolSettings)
    app.connect("autodoc-process-docstring", _point_to_table)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
