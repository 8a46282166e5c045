"""Context in every chunk: the document title and heading path rendered into the embedded text.

``chunk.context_template`` (part of the vector-set fingerprint, since it is in ``ChunkParams``)
is a ``str.format`` template (validated by the config) with the fields ``{title}``, ``{headings}`` and ``{text}``. Lines of
the rendered header (everything before ``{text}``) that come out empty are dropped, so a chunk
without a heading path gets no blank line. An empty template turns context off (embed text =
display text, the pre-issue-15 behaviour).

Redundancy is avoided, not repeated:

- ``{title}`` is left out when the chunk text already starts with the title (a Markdown H1 that is
  the title, a BEIR record whose text repeats its title) or when the heading path starts with it;
- ``{headings}`` is left out when the display text already carries the heading path (the Markdown
  chunker's ``chunk.heading_prefix``); otherwise it is the path joined with `` > ``.

The display text (``Chunk.text``) never changes here: search shows the heading path on its own.
"""

from __future__ import annotations

import re

_WS = re.compile(r"\s+")
_MD_HEADING = re.compile(r"^\s*#+[ \t]*")  # a leading Markdown heading marker


def _norm(s: str) -> str:
    return _WS.sub(" ", s).strip().casefold()


def headings_text(path: tuple[str, ...], title: str) -> str:
    """The heading path as one line; a first heading equal to the title is not repeated."""
    parts = list(path)
    if parts and title and _norm(parts[0]) == _norm(title):
        parts = parts[1:]
    return " > ".join(p for p in parts if p.strip())


def render(template: str, *, title: str, path: tuple[str, ...], text: str, path_in_text: bool) -> str:
    """``text`` with its context (see module doc). Pure: the same inputs give the same bytes."""
    if not template:
        return text
    head_norm = _norm(_MD_HEADING.sub("", text[: max(len(title) * 2, 200)]))
    show_title = bool(title.strip()) and not head_norm.startswith(_norm(title))
    headings = "" if path_in_text else headings_text(path, title if show_title else "")
    if headings and show_title and _norm(headings).startswith(_norm(title)):
        show_title = False
    before, _, after = template.partition("{text}")
    header = before.format(title=title.strip() if show_title else "", headings=headings)
    tail = after.format(title="", headings="") if after else ""
    lines = [ln for ln in header.split("\n") if ln.strip()]
    if not lines:
        return text + tail
    sep = "\n\n" if before.endswith("\n\n") else ("\n" if before.endswith("\n") else "")
    return "\n".join(lines) + sep + text + tail


def context_budget(template: str, *, title: str, path: tuple[str, ...], path_in_text: bool) -> str:
    """The longest header :func:`render` may add for this title/path (to reserve its tokens)."""
    if not template:
        return ""
    return render(template, title=title, path=path, text="", path_in_text=path_in_text)
