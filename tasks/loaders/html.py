"""HTML loader: boilerplate out, structure kept as Markdown-like text.

BeautifulSoup + lxml, with rules for the common documentation generators and one generic rule:

- dropped everywhere: scripts, styles, forms, ``<nav>``/``<aside>``, ARIA navigation/banner/
  contentinfo/search roles, page-level ``<header>``/``<footer>``, and each generator's own chrome
  (:data:`GENERATOR_CHROME`): Sphinx ``related``/``sphinxsidebar``/``footer``/RTD prev-next buttons,
  DocBook ``navheader``/``navfooter`` tables and in-page ``toc`` lists, Javadoc top/sub/bottom nav,
  MkDocs (Material, readthedocs, mkdocs themes) header/sidebars/footers, Docusaurus breadcrumbs,
  pagination and doc footer, plus generic breadcrumbs and prev/next blocks;
- generic: a list, table or ``div`` whose text is almost all link text (>= ``preprocess.
  html_link_density`` with at least 5 links) is navigation, whatever its class names;
- pages that are only lists of links are recognised and *skipped* (reported as a Rejection with
  the reason, kinds chosen by ``preprocess.html_skip_pages``): ``index`` (genindex, bookindex,
  Javadoc index-all/allclasses/class-use/tree pages, or a body that is nearly all links),
  ``contents`` (contents.html, a DocBook chapter page that is only its table of contents) and
  ``search`` (search.html, a search form with an empty results area).

The main content (``<main>``, ``[role=main]``, ``<article>``, else ``<body>``) is rendered as text
whose headings become ``#`` lines (so the markdown chunker can carry a heading path), ``<pre>``
becomes a fenced block, list items become ``-`` lines, and each table row becomes one
header-labelled line ("Col: value; Col2: value"), optionally preceded by a ``Table: caption`` line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
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
# each generator's page chrome (navigation, breadcrumbs, prev/next, headers, footers)
GENERATOR_CHROME: dict[str, str] = {
    "sphinx": ".rst-footer-buttons, .wy-nav-side, .wy-breadcrumbs, .wy-nav-top, [role=contentinfo], "
              ".bd-sidebar, .bd-header, .prev-next-area, .footer-article",
    "docbook": "div.navheader, div.navfooter, table[summary='Navigation header'], "
               "table[summary='Navigation footer'], div.toc, div.list-of-tables, div.list-of-figures, "
               "div.list-of-examples",
    "javadoc": ".top-nav, .sub-nav, .bottom-nav, .topNav, .subNav, .bottomNav, .skip-nav, "
               ".flex-header, .legal-copy, .legalCopy, #navbar-top, #navbar-bottom",
    "mkdocs": ".md-header, .md-sidebar, .md-footer, .md-nav, .md-tabs, .md-source-file, .wy-nav-side, "
              ".rst-versions, .navbar, footer, [role=navigation]",
    "docusaurus": ".theme-doc-breadcrumbs, .breadcrumbs, .pagination-nav, .theme-doc-footer, "
                  ".theme-doc-toc-mobile, .theme-doc-toc-desktop, .table-of-contents, .theme-edit-this-page, "
                  ".theme-last-updated",
    "generic": ".breadcrumb, [aria-label=breadcrumb], [aria-label=breadcrumbs], .prev-next, .pager, "
               ".pagination, .page-nav, .edit-this-page, #toc, .site-header, .site-footer",
}
_CHROME = ", ".join(GENERATOR_CHROME.values())
_LINK_BLOCKS = ("ul", "ol", "dl", "table", "div", "p", "td")
# file names of pages that are lists of links: (kind, pattern)
_PAGE_NAMES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("index", re.compile(r"(^|/)(genindex[^/]*|bookindex|py-modindex|modindex|index-all|allclasses[^/]*"
                         r"|allpackages-index|overview-tree|package-tree|index-files/index-\d+|deprecated-list"
                         r"|class-use/[^/]+|package-use)\.x?html?$")),
    ("contents", re.compile(r"(^|/)(contents|toc|overview-summary|sitemap)\.x?html?$")),
    ("search", re.compile(r"(^|/)search\.x?html?$")),
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
        page = extract_page(raw, rel, params.html_link_density)
        if page.kind in params.html_skip_pages:
            raise RejectedInput(RejectReason(f"{page.kind}_page"), page.why)
        text, title = page.text, page.title
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


@dataclass(frozen=True)
class Page:
    text: str
    title: str
    kind: str = "content"  # content | index | contents | search
    why: str = ""


def html_to_text(html: str) -> tuple[str, str]:
    """(markdown-like text, title) of an HTML page."""
    page = extract_page(html)
    return page.text, page.title


def _link_ratio(el: Any) -> tuple[float, int]:
    """(share of the element's text inside links, number of links)."""
    text = len(_WS.sub("", el.get_text()))
    links = el.find_all("a")
    linked = sum(len(_WS.sub("", a.get_text())) for a in links)
    return (linked / text if text else 0.0), len(links)


def _drop_link_lists(root: Any, density: float) -> None:
    """Remove blocks that are (nearly) all links: navigation whatever the generator calls it."""
    for el in root.find_all(_LINK_BLOCKS):
        if el.decomposed or (el.find(["pre", "code", "h1", "h2", "h3"]) is not None and el.name == "div"):
            continue
        ratio, n = _link_ratio(el)
        if n >= 5 and ratio >= density:
            el.decompose()


def _page_kind(rel: str, soup: Any, root: Any, density: float) -> tuple[str, str]:
    for kind, pattern in _PAGE_NAMES:
        if pattern.search(rel.replace("\\", "/").lower()):
            return kind, f"{Path(rel).name}: the file name of {'an' if kind == 'index' else 'a'} {kind} page"
    if soup.select_one("#search-results, #search-documentation, .search-results") is not None:
        return "search", "search page (a search-results area)"
    ratio, n = _link_ratio(root)
    if n >= 20 and ratio >= density:
        return "index", f"{n} links make {ratio:.0%} of the text: a list of links"
    if soup.select_one("div.toc, .toctree-wrapper") is not None:
        body = root.get_text(" ", strip=True)
        toc = " ".join(t.get_text(" ", strip=True) for t in soup.select("div.toc, .toctree-wrapper"))
        rest = len(body) - len(toc)
        if len(toc) > 0 and rest < 200:
            return "contents", "the page is only a table of contents"
    return "content", ""


def extract_page(html: str, rel: str = "", link_density: float = 0.8) -> Page:
    """The main content of an HTML page as markdown-like text, its title and its kind."""
    import warnings

    from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning

    warnings.filterwarnings("ignore", category=XMLParsedAsHTMLWarning)  # XHTML (DocBook) parses fine
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
    if soup.head:
        soup.head.decompose()
    root = soup.select_one("main, [role=main], article") or soup.body or soup
    nav_free = BeautifulSoup(str(root), "lxml")  # page kind is judged without the page chrome
    for el in nav_free.select(_DROP_SELECTORS + ", div.navheader, div.navfooter, .top-nav, .bottom-nav"):
        el.decompose()
    kind, why = _page_kind(rel, nav_free, nav_free.body or nav_free, link_density)
    for el in soup.select(_DROP_SELECTORS + ", " + _CHROME):
        el.decompose()
    _drop_link_lists(root, link_density)
    out: list[str] = []
    pres: list[str] = []
    _render(root, out, pres)
    text = "".join(out)
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    text = _PRE_SLOT.sub(lambda m: pres[int(m.group(1))], text)  # <pre> keeps its indentation
    text = text.replace("\x01", "  ")
    h1 = root.find("h1") or root.find("h2")
    heading = h1.get_text(" ", strip=True) if h1 else ""
    title = title or heading
    return Page(text, title, kind, why)


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
            if not child.get_text(strip=True):
                continue  # an empty item (Javadoc's inheritance tree scaffolding)
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
