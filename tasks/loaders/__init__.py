"""Document loaders: one :class:`Loader` per format, picked by extension, then MIME type, then sniffing.

Add a format by writing a class with ``name`` and ``load(path, rel, params)`` and registering it in
:data:`LOADERS` (by extension) or :data:`MIME_LOADERS` (by MIME type).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from embedline.tasks.loaders.base import (
    Loader,
    RejectedInput,
    RejectReason,
    decode_bytes,
    make_document,
    reject,
)
from embedline.tasks.loaders.html import HtmlLoader, html_to_text
from embedline.tasks.loaders.jsonl import JsonlLoader, JsonLoader
from embedline.tasks.loaders.pdf import PdfLoader
from embedline.tasks.loaders.text import (
    CODE_LANGUAGES,
    CodeLoader,
    MarkdownLoader,
    TextLoader,
    shebang_language,
)

_TEXT, _MD, _HTML, _CODE = TextLoader(), MarkdownLoader(), HtmlLoader(), CodeLoader()

LOADERS: dict[str, Loader] = {
    ".txt": _TEXT,
    ".text": _TEXT,
    ".rst": _TEXT,
    ".md": _MD,
    ".markdown": _MD,
    ".mdown": _MD,
    ".mkd": _MD,
    ".html": _HTML,
    ".htm": _HTML,
    ".xhtml": _HTML,
    ".json": JsonLoader(),
    ".jsonl": JsonlLoader(),
    ".ndjson": JsonlLoader(),
    ".pdf": PdfLoader(),
    **dict.fromkeys(CODE_LANGUAGES, _CODE),
}

MIME_LOADERS: dict[str, Loader] = {
    "text/html": _HTML,
    "application/xhtml+xml": _HTML,
    "text/markdown": _MD,
    "application/json": LOADERS[".json"],
    "application/pdf": LOADERS[".pdf"],
}


def loader_for(path: Path) -> Loader | None:
    """The loader for ``path``: by extension, else MIME type (text/* -> plain text), else by sniffing
    the first bytes of extension-less files (``%PDF-`` -> PDF, a shebang -> code, ``<html`` -> HTML,
    anything else -> plain text, which rejects binary content itself). None: unsupported."""
    loader = LOADERS.get(path.suffix.lower())
    if loader is not None:
        return loader
    mime, _ = mimetypes.guess_type(path.name)
    if mime in MIME_LOADERS:
        return MIME_LOADERS[mime]
    if mime is not None and mime.startswith("text/"):
        return _TEXT
    if path.suffix:  # a known-unknown extension (.png, .docx, .bin...): not guessed from content
        return None
    with path.open("rb") as fh:
        head = fh.read(512)
    if head.startswith(b"%PDF-"):
        return LOADERS[".pdf"]
    if head.startswith(b"#!") and shebang_language(head.decode("latin-1")):
        return _CODE
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return _HTML
    return _TEXT  # README, LICENSE, NOTES...


__all__ = [
    "LOADERS",
    "MIME_LOADERS",
    "Loader",
    "RejectReason",
    "RejectedInput",
    "decode_bytes",
    "html_to_text",
    "loader_for",
    "make_document",
    "reject",
]
