"""The two table renderers every report section uses: aligned plain text for the terminal, markdown for report.md.

They take a header and rows of strings and know nothing of runs or scores, so the report and the scores
(which both draw tables) share them without depending on each other.
"""
from __future__ import annotations

from typing import Any


def plain_table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header] + body) for i in range(len(header))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in body]
    return "\n".join(lines)


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    def esc(x: Any) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


__all__ = ["plain_table", "markdown_table"]
