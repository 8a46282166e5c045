"""HTML loader: boilerplate out, structure kept as Markdown-like text.

lxml (and a one-pass matcher for the small CSS subset below), with rules for the common documentation generators and one generic rule:

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

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
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


_SIMPLE = re.compile(r"^([a-z][a-z0-9]*)?((?:[.#][\w-]+|\[[\w-]+=(?:'[^']*'|[\w-]+)\])*)$")
_NO_CLASSES: set[str] = set()
_PART = re.compile(r"([.#])([\w-]+)|\[([\w-]+)=(?:'([^']*)'|([\w-]+))\]")


@dataclass(frozen=True)
class _Simple:
    """One compound selector of the small CSS subset the chrome rules use: ``tag``, ``.class``,
    ``#id`` and ``[attr=value]``, combined (``div.toc``, ``table[summary='...']``)."""

    tag: str | None
    classes: frozenset[str]
    attrs: tuple[tuple[str, str], ...]  # (name, exact value); #id is ("id", value)

    def matches(self, el: Any, classes: set[str]) -> bool:
        return ((self.tag is None or el.tag == self.tag) and self.classes <= classes
                and all(el.get(k) == v for k, v in self.attrs))


class Selector:
    """Selector groups (``a, b.c, [d=e]``) matched in one pass over a tree, in document order.

    libxml2's XPath for a class test (``contains(concat(' ', @class, ' '), ' x ')``) walks the
    whole tree once per selector; with ~70 chrome selectors that was most of an HTML page's cost.
    Here every element is looked at once: its classes, id and attributes pick the few candidate
    selectors, which are then checked in full. Several named groups (:meth:`of`) share that one
    pass (:meth:`match`); ``Selector(css)`` is a single group, called for its list of matches."""

    def __init__(self, css: str | dict[str, str]):
        groups = css if isinstance(css, dict) else {"": css}
        self.names = list(groups)
        Keyed = list[tuple[str, _Simple]]
        self.by_class: dict[str, Keyed] = {}
        self.by_attr: dict[tuple[str, str], Keyed] = {}
        self.by_tag: dict[str, Keyed] = {}
        for group, text in ((g, t.strip()) for g, css_ in groups.items() for t in css_.split(",")):
            m = _SIMPLE.match(text)
            if m is None or not text:
                raise ValueError(f"unsupported selector {text!r}")
            classes, attrs = [], []
            for dot, name, attr, quoted, bare in _PART.findall(m.group(2)):
                if dot == ".":
                    classes.append(name)
                elif dot == "#":
                    attrs.append(("id", name))
                else:
                    attrs.append((attr, quoted or bare))
            simple = (group, _Simple(m.group(1), frozenset(classes), tuple(attrs)))
            if classes:
                self.by_class.setdefault(classes[0], []).append(simple)
            elif attrs:
                self.by_attr.setdefault(attrs[0], []).append(simple)
            else:
                self.by_tag.setdefault(m.group(1), []).append(simple)
        self.attr_names = {k for k, _ in self.by_attr}
        self._by_value: dict[str, tuple[set[str], Keyed]] = {}

    @classmethod
    def of(cls, **groups: str) -> Selector:
        return cls(groups)

    def _for_class(self, value: str) -> tuple[set[str], list[tuple[str, _Simple]]]:
        """(classes, the selectors keyed by one of them) of a class attribute value (memoised:
        a page repeats a few dozen distinct values thousands of times)."""
        hit = self._by_value.get(value)
        if hit is None:
            if len(self._by_value) > 4096:  # bounded on a corpus of ever-new class names
                self._by_value.clear()
            classes = set(value.split())
            hit = self._by_value[value] = (classes, [s for c in classes for s in self.by_class.get(c, ())])
        return hit

    def match(self, top: Any) -> dict[str, list[Any]]:
        """group name -> every element of ``top`` (itself included) matching it, in document order."""
        from lxml import etree

        found: dict[str, list[Any]] = {name: [] for name in self.names}
        by_attr, by_tag, attr_names = self.by_attr, self.by_tag, self.attr_names
        for el in top.iter(etree.Element):  # elements only (no comments, processing instructions)
            items = el.items()  # one call for all attributes (most elements have none or a class)
            cands: list[tuple[str, _Simple]] = by_tag.get(el.tag, [])
            if not items and not cands:
                continue
            classes = _NO_CLASSES
            for name, value in items:
                if name == "class":
                    classes, keyed = self._for_class(value)
                    cands = [*cands, *keyed] if keyed else cands
                elif name in attr_names and (name, value) in by_attr:
                    cands = [*cands, *by_attr[(name, value)]]
            if not cands:
                continue
            hit: set[str] = set()
            for group, simple in cands:
                if group not in hit and simple.matches(el, classes):
                    hit.add(group)
                    found[group].append(el)
        return found

    def __call__(self, top: Any) -> list[Any]:
        """Every element of ``top`` (itself included) matching the (first) group, in document order."""
        return self.match(top)[self.names[0]]


@lru_cache(maxsize=1)
def _selectors() -> dict[str, Selector]:
    return {
        # matched on the whole page in one pass
        "page": Selector.of(
            root="main, [role=main], article",
            nav_free=_DROP_SELECTORS + ", div.navheader, div.navfooter, .top-nav, .bottom-nav",
            chrome=_DROP_SELECTORS + ", " + _CHROME,
        ),
        # matched on the main content without its navigation, to judge the page kind
        "kind": Selector.of(
            search="#search-results, #search-documentation, .search-results",
            toc="div.toc, .toctree-wrapper",
        ),
    }


def _in_copy(top: Any, copied: Any, elements: list[Any]) -> list[Any]:
    """The elements of ``copied`` (a deep copy of ``top``) at the places of ``elements`` (those
    under ``top``; others are skipped), in the same order."""
    originals = list(top.iter())  # held: lxml keeps one proxy per node while it is referenced
    place = {id(el): i for i, el in enumerate(originals)}
    copies = list(copied.iter())
    return [copies[place[id(el)]] for el in elements if id(el) in place]


def _drop(el: Any) -> None:
    """Remove an element and its subtree, keeping the text after it as a separate string: it is
    replaced by an empty comment (skipped everywhere), so the words before and after it are not
    glued together by ``get_text(" ")``-style joins."""
    from lxml import etree

    parent = el.getparent()
    if parent is None:  # the top of a (copied) tree: nothing left of it
        for child in list(el):
            el.remove(child)
        el.text = None
        return
    placeholder = etree.Comment("")
    placeholder.tail = el.tail
    parent.replace(el, placeholder)


def _attached(el: Any, top: Any) -> bool:
    """Whether ``el`` is still in the tree under ``top`` (not inside a dropped subtree)."""
    node = el
    while node is not None:
        if node is top:
            return True
        node = node.getparent()
    return False


def _text(el: Any, sep: str = "", strip: bool = False) -> str:
    """The element's text (comments skipped), its strings joined with ``sep``."""
    if strip:
        return sep.join(t for t in (s.strip() for s in el.itertext()) if t)
    return sep.join(el.itertext())


def _first(el: Any, *tags: str) -> Any:
    return next(el.iterdescendants(*tags), None)


def _visible_len(text: str) -> int:
    """Characters of ``text`` that are not whitespace (``len(_WS.sub("", text))``: ``str.split``
    and ``\\s`` both split at exactly the characters ``str.isspace`` names)."""
    return sum(map(len, text.split()))


def _link_ratio(el: Any) -> tuple[float, int]:
    """(share of the element's text inside links, number of links)."""
    text = _visible_len(_text(el))
    links = list(el.iterdescendants("a"))
    linked = sum(_visible_len(_text(a)) for a in links)
    return (linked / text if text else 0.0), len(links)


def _drop_link_lists(root: Any, density: float) -> None:
    """Remove blocks that are (nearly) all links: navigation whatever the generator calls it."""
    for el in list(root.iterdescendants(*_LINK_BLOCKS)):
        if not _attached(el, root) or (el.tag == "div" and _first(el, "pre", "code", "h1", "h2", "h3")
                                       is not None):
            continue
        ratio, n = _link_ratio(el)
        if n >= 5 and ratio >= density:
            _drop(el)


def _kind_by_name(rel: str) -> tuple[str, str] | None:
    for kind, pattern in _PAGE_NAMES:
        if pattern.search(rel.replace("\\", "/").lower()):
            return kind, f"{Path(rel).name}: the file name of {'an' if kind == 'index' else 'a'} {kind} page"
    return None


def _page_kind(rel: str, root: Any, density: float) -> tuple[str, str]:
    if (named := _kind_by_name(rel)) is not None:
        return named
    found = _selectors()["kind"].match(root)
    if found["search"]:
        return "search", "search page (a search-results area)"
    ratio, n = _link_ratio(root)
    if n >= 20 and ratio >= density:
        return "index", f"{n} links make {ratio:.0%} of the text: a list of links"
    if tocs := found["toc"]:
        body = _text(root, " ", strip=True)
        toc = " ".join(_text(t, " ", strip=True) for t in tocs)
        rest = len(body) - len(toc)
        if len(toc) > 0 and rest < 200:
            return "contents", "the page is only a table of contents"
    return "content", ""


def _parse(html: str) -> Any:
    """The lxml HTML tree of a page (the parser BeautifulSoup used here before), None if empty.
    Plain ``etree`` elements: ``lxml.html``'s element classes cost a Python call per node."""
    from lxml import etree

    parser = etree.HTMLParser(encoding="utf-8")
    try:
        return etree.fromstring(html.encode("utf-8", "surrogateescape"), parser=parser)
    except Exception as exc:  # noqa: BLE001 lxml raises parser-specific errors for markup it cannot parse: a rejection, not a crash
        raise RejectedInput(RejectReason.malformed_html, f"{type(exc).__name__}: {exc}") from None


def extract_page(html: str, rel: str = "", link_density: float = 0.8) -> Page:
    """The main content of an HTML page as markdown-like text, its title and its kind."""
    doc = _parse(html)
    if doc is None:
        kind, why = _kind_by_name(rel) or ("content", "")
        return Page("", "", kind, why)
    title_el = next(doc.iter("title"), None)
    title = _text(title_el, " ", strip=True) if title_el is not None else ""
    for tag in list(doc.iter(*_DROP_TAGS)):
        _drop(tag)
    for tag in list(doc.iter("header", "footer")):  # page chrome, unless it belongs to an article
        if not any(p.tag in _CONTENT_SCOPES for p in tag.iterancestors()):
            _drop(tag)
    head = next(doc.iter("head"), None)
    if head is not None:
        _drop(head)
    on_page = _selectors()["page"].match(doc)  # root, nav_free and chrome in one pass
    found = on_page["root"]
    root = found[0] if found else next(doc.iter("body"), doc)
    nav_free = copy.deepcopy(root)  # page kind is judged without the page chrome
    nav_free.tail = None
    for el in _in_copy(root, nav_free, on_page["nav_free"]):
        _drop(el)
    kind, why = _page_kind(rel, nav_free, link_density)
    for el in on_page["chrome"]:  # matched before any drop, as the copy was
        _drop(el)
    if not _attached(root, doc):  # the main content itself was chrome: nothing is left of it
        return Page("", title, kind, why)
    _drop_link_lists(root, link_density)
    out: list[str] = []
    pres: list[str] = []
    _render(root, out, pres)
    text = "".join(out)
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    text = _PRE_SLOT.sub(lambda m: pres[int(m.group(1))], text)  # <pre> keeps its indentation
    text = text.replace("\x01", "  ")
    h1 = _first(root, "h1")
    if h1 is None:
        h1 = _first(root, "h2")
    heading = _text(h1, " ", strip=True) if h1 is not None else ""
    title = title or heading
    return Page(text, title, kind, why)


def _render(node: Any, out: list[str], pres: list[str], list_depth: int = 0) -> None:
    """Append the text of ``node``'s content (not its tail) to ``out``."""
    if node.text:
        out.append(_WS.sub(" ", node.text))
    items = 0
    for child in node:
        if isinstance(child.tag, str):  # an element (comments and processing instructions: skipped)
            if child.tag == "li":
                items += 1
            _render_element(child, node.tag, items, out, pres, list_depth)
        if child.tail:
            out.append(_WS.sub(" ", child.tail))


def _render_element(child: Any, parent: str, item: int, out: list[str], pres: list[str],
                    list_depth: int) -> None:
    name = child.tag
    if name in _HEADINGS:
        text = _WS.sub(" ", _text(child, " ")).strip()
        if text:
            out.append(f"\n\n{'#' * _HEADINGS[name]} {text}\n\n")
    elif name == "pre":
        code = _text(child).strip("\n")
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
        if not _text(child, strip=True):
            return  # an empty item (Javadoc's inheritance tree scaffolding)
        marker = f"{item}. " if parent == "ol" else "- "
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
    return str(_WS.sub(" ", _text(cell, " ")).strip())


def _nearest_table(el: Any) -> Any:
    return next(el.iterancestors("table"), None)


def table_lines(table: Any) -> list[str]:
    """A table as lines: an optional ``Table: caption`` line, then one header-labelled line per row."""
    rows = [tr for tr in table.iterdescendants("tr") if _nearest_table(tr) is table]
    grid = [[_cell_text(c) for c in tr if c.tag in ("th", "td")] for tr in rows]
    grid = [r for r in grid if any(r)]
    if not grid:
        return []
    header: list[str] = []
    first = rows[0]
    if _first(first, "th") is not None and _first(first, "td") is None:
        header, grid = grid[0], grid[1:]
    lines: list[str] = []
    caption = _first(table, "caption")
    if caption is not None and _text(caption, strip=True):
        lines.append("Table: " + _WS.sub(" ", _text(caption, " ")).strip())
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
