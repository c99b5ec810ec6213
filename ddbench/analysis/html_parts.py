"""The HTML building blocks of report.html (report_html.py, report_gallery.py): every value escaped where it is
written unless it is markup built here (`Raw`), plain tables the page's script can sort, data: URIs for images.
"""
from __future__ import annotations

import base64
import html
from typing import Any, Iterable


VOID = {"img", "br", "meta"}


class Raw(str):
    """Markup this module built from escaped parts; every other value is escaped where it is written."""


def esc(value: Any) -> str:
    return value if isinstance(value, Raw) else html.escape(str(value), quote=True)


def tag(name: str, content: Any = "", **attrs: Any) -> Raw:
    """`<name attrs>content</name>`; attribute values escaped, `cls` -> class, `data_x` -> data-x."""
    parts = [name] + [f'{k.rstrip("_").replace("_", "-") if k != "cls" else "class"}="{esc(v)}"'
                      for k, v in attrs.items() if v is not None]
    if name in VOID:
        return Raw(f"<{' '.join(parts)}>")
    return Raw(f"<{' '.join(parts)}>{esc(content)}</{name}>")


def join(items: Iterable[Any], sep: str = "") -> Raw:
    return Raw(sep.join(esc(i) for i in items))


def data_uri_png(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def html_table(header: list[Any], body: list[list[Any]], sort_keys: list[list[Any]] | None = None,
               cls: str = "sortable", row_header: bool = True) -> Raw:
    """A plain HTML table (sortable by the page's script when `cls` says so); `sort_keys[i][j]`, when not None,
    is what cell (i, j) sorts by instead of its text (dates)."""
    head = tag("thead", tag("tr", join(tag("th", h, scope="col") for h in header)))
    rows = []
    for i, row in enumerate(body):
        cells = []
        for j, value in enumerate(row):
            key = sort_keys[i][j] if sort_keys and sort_keys[i] and j < len(sort_keys[i]) else None
            cells.append(tag("th" if j == 0 and row_header else "td", value, scope="row" if j == 0 and row_header
                             else None, data_sort=key))
        rows.append(tag("tr", join(cells)))
    return tag("table", join([head, tag("tbody", join(rows))]), cls=cls)


def code(text: str) -> Raw:
    return tag("code", text)


def inline(text: str) -> Raw:
    """Text whose `backticked` spans (report_text.py and scores_text.py write markdown) become <code>; all of it
    escaped."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: plain text
        return Raw(esc(text))
    return join(code(p) if i % 2 else p for i, p in enumerate(parts))
