"""HTML loader: boilerplate out, structure kept as Markdown-like text.

BeautifulSoup + lxml. Scripts, styles, navigation, sidebars, page headers/footers and Sphinx's
"related"/"sphinxsidebar" blocks are dropped; the main content (``<main>``, ``[role=main]``,
``<article>``, else ``<body>``) is rendered as text whose headings become ``#`` lines (so the
markdown chunker can carry a heading path), ``<pre>`` becomes a fenced block, list items become
``-`` lines, and each table row becomes one header-labelled line ("Col: value; Col2: value"),
optionally preceded by a ``Table: caption`` line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from embedline.tasks.config import PreprocessParams
from embedline.tasks.loaders.base import RejectedInput, RejectReason, make_document, read_text
from embedline.tasks.records import Document, Rejection

_DROP_TAGS = [
    "script",
    "style",
    "noscript",
    "template",
    "nav",
    "aside",
    "form",
    "iframe",
    "svg",
    "button",
    "canvas",
    "object",
    "embed",
    "select",
    "input",
]
_DROP_SELECTORS = (
    "[role=navigation], [role=banner], [role=contentinfo], [role=complementary], [role=search], "
    ".sphinxsidebar, .related, .footer, .navbar, .breadcrumbs, .toc-backref, a.headerlink, "
    "[aria-hidden=true], .skip-link"
)
_CONTENT_SCOPES = {"article", "main", "section"}
_BLOCKS = {
    "p",
    "div",
    "section",
    "article",
    "main",
    "blockquote",
    "dl",
    "dd",
    "dt",
    "figure",
    "figcaption",
    "address",
    "details",
    "summary",
    "body",
    "header",
    "footer",
    "hr",
    "ul",
    "ol",
    "center",
    "fieldset",
    "caption",
}
_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_WS = re.compile(r"\s+")
_TAG = re.compile(r"<[^>]*>")
_PRE_SLOT = re.compile(r"\x00(\d+)\x00")


class HtmlLoader:
    name = "html"

    def load(
        self, path: Path, rel: str, params: PreprocessParams
    ) -> Iterator[Document | Rejection]:
        raw, encoding = read_text(path, params)
        text, title = html_to_text(raw)
        if not text.strip():
            visible = _WS.sub(" ", _TAG.sub(" ", raw)).strip()
            if len(visible) >= 40:
                raise RejectedInput(
                    RejectReason.malformed_html,
                    "the markup hides all text (unclosed comment or script?)",
                )
        yield make_document(
            source=rel,
            text=text,
            fmt=self.name,
            params=params,
            mode="markdown",
            title=title,
            metadata={"encoding": encoding},
        )


def html_to_text(html: str) -> tuple[str, str]:
    """(markdown-like text, title) of an HTML page."""
    from bs4 import BeautifulSoup

    try:
        soup = BeautifulSoup(html, "lxml")
    except Exception as exc:  # noqa: BLE001 bs4/lxml raise parser-specific errors for markup they cannot parse: a rejection, not a crash
        raise RejectedInput(RejectReason.malformed_html, f"{type(exc).__name__}: {exc}") from None
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup(_DROP_TAGS):
        tag.decompose()
    for tag in soup(["header", "footer"]):  # page chrome, unless it belongs to an article
        if not any(p.name in _CONTENT_SCOPES for p in tag.parents):
            tag.decompose()
    for el in soup.select(_DROP_SELECTORS):
        el.decompose()
    if soup.head:
        soup.head.decompose()
    root = soup.select_one("main, [role=main], article") or soup.body or soup
    out: list[str] = []
    pres: list[str] = []
    _render(root, out, pres)
    text = "".join(out)
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    text = _PRE_SLOT.sub(lambda m: pres[int(m.group(1))], text)  # <pre> keeps its indentation
    text = text.replace("\x01", "  ")
    if not title:
        h1 = root.find("h1")
        title = h1.get_text(" ", strip=True) if h1 else ""
    return text, title


def _render(node: Any, out: list[str], pres: list[str], list_depth: int = 0) -> None:  # noqa: C901 one flat branch per tag kind (a dispatch table would hide the recursion)
    from bs4 import Comment, NavigableString, Tag

    for child in node.children:
        if isinstance(child, Comment):
            continue
        if isinstance(child, NavigableString):
            out.append(_WS.sub(" ", str(child)))
            continue
        if not isinstance(child, Tag):
            continue
        name = child.name
        if name in _HEADINGS:
            text = _WS.sub(" ", child.get_text(" ")).strip()
            if text:
                out.append(f"\n\n{'#' * _HEADINGS[name]} {text}\n\n")
        elif name == "pre":
            code = child.get_text().strip("\n")
            if code.strip():
                out.append(f"\n\n\x00{len(pres)}\x00\n\n")
                pres.append(f"```\n{code}\n```")
        elif name == "br":
            out.append("\n")
        elif name == "table":
            rows = table_lines(child)
            if rows:
                out.append("\n\n" + "\n".join(rows) + "\n\n")
        elif name == "li":
            marker = "- "
            if child.parent is not None and child.parent.name == "ol":
                marker = f"{len(child.find_previous_siblings('li')) + 1}. "
            out.append("\n" + "\x01" * list_depth + marker)  # indentation survives the cleanup
            _render(child, out, pres, list_depth + 1)
        elif name in ("ul", "ol") and list_depth:  # a nested list: no blank lines around it
            _render(child, out, pres, list_depth)
        elif name in _BLOCKS:
            out.append("\n\n")
            _render(child, out, pres, list_depth)
            out.append("\n\n")
        else:
            _render(child, out, pres, list_depth)


def _cell_text(cell: Any) -> str:
    return str(_WS.sub(" ", cell.get_text(" ")).strip())


def table_lines(table: Any) -> list[str]:
    """A table as lines: an optional ``Table: caption`` line, then one header-labelled line per row."""
    rows = [tr for tr in table.find_all("tr") if tr.find_parent("table") is table]
    grid = [[_cell_text(c) for c in tr.find_all(["th", "td"], recursive=False)] for tr in rows]
    grid = [r for r in grid if any(r)]
    if not grid:
        return []
    header: list[str] = []
    first = rows[0]
    if first.find("th") is not None and first.find("td") is None:
        header, grid = grid[0], grid[1:]
    lines: list[str] = []
    caption = table.find("caption")
    if caption is not None and caption.get_text(strip=True):
        lines.append("Table: " + _WS.sub(" ", caption.get_text(" ")).strip())
    for cells in grid:
        if header:
            parts = [f"{h}: {v}" if h else v for h, v in zip(header, cells, strict=False) if v]
            parts += [v for v in cells[len(header) :] if v]
            lines.append("; ".join(parts))
        else:
            lines.append(" | ".join(cells))
    if header and not grid:  # a header-only table still says something
        lines.append("; ".join(header))
    return lines
