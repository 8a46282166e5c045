"""Shared pieces of the loaders: the Loader protocol, reject reasons, byte decoding, Document building."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from embedline.tasks.config import PreprocessParams
from embedline.tasks.normalize import TextMode, clean_text
from embedline.tasks.records import Document, Rejection, content_hash, display_path, doc_id_for


class RejectReason(StrEnum):
    """Why an input did not become a document (the ``reason`` of a Rejection)."""

    binary = "binary"
    undecodable = "undecodable"
    empty = "empty"
    too_large = "too_large"
    symlink_escape = "symlink_escape"
    broken_symlink = "broken_symlink"
    symlink_loop = "symlink_loop"
    unreadable = "unreadable"
    not_a_file = "not_a_file"
    malformed_json = "malformed_json"
    missing_field = "missing_field"
    duplicate_id = "duplicate_id"
    malformed_html = "malformed_html"
    malformed_pdf = "malformed_pdf"
    unsupported_format = "unsupported_format"
    load_error = "load_error"


class Loader(Protocol):
    """Turns one file into documents (JSONL yields many) or rejections; never raises for bad input."""

    name: str  # Document.format of what it produces

    def load(
        self, path: Path, rel: str, params: PreprocessParams
    ) -> Iterable[Document | Rejection]: ...


class RejectedInput(Exception):
    """Raised inside a loader to turn the current input into a Rejection."""

    def __init__(self, reason: RejectReason, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def reject(rel: str, reason: RejectReason, detail: str = "") -> Rejection:
    return Rejection(path=rel, reason=str(reason), detail=detail)


# ---- bytes -> str ----------------------------------------------------------------------------------
_SNIFF = 8192
_TEXT_CONTROLS = {7, 8, 9, 10, 12, 13, 27}
_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
# languages whose legacy files are most likely Windows-1252 / Latin-1: prefer that decoding when
# charset-normalizer finds it about as plausible as its own (it often guesses cp1250/cp437 on
# short Western text and turns "naïve" into "naďve")
_WESTERN = {
    "en",
    "fr",
    "de",
    "es",
    "it",
    "pt",
    "nl",
    "sv",
    "da",
    "no",
    "nb",
    "fi",
    "is",
    "ca",
    "ga",
}
_MAX_CHAOS = 0.3


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except PermissionError as exc:
        raise RejectedInput(RejectReason.unreadable, f"permission denied: {exc.strerror}") from None
    except OSError as exc:
        raise RejectedInput(
            RejectReason.unreadable, f"{type(exc).__name__}: {exc.strerror}"
        ) from None


def looks_binary(data: bytes) -> bool:
    """NUL bytes or many non-text control bytes in the first 8 KiB (after any UTF-16/32 BOM)."""
    sample = data[:_SNIFF]
    if any(sample.startswith(bom) for bom, enc in _BOMS if enc != "utf-8-sig"):
        return False
    if b"\x00" in sample:
        return True
    controls = sum(1 for b in sample if b < 32 and b not in _TEXT_CONTROLS)
    return bool(sample) and controls / len(sample) > 0.1


def decode_bytes(data: bytes, language: str = "en") -> tuple[str, str]:
    """Decode text bytes; returns (text, encoding). Raises RejectedInput (binary / undecodable)."""
    for bom, enc in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(enc), enc
            except UnicodeDecodeError as exc:
                raise RejectedInput(
                    RejectReason.undecodable, f"{enc} BOM but {exc.reason}"
                ) from None
    if looks_binary(data):
        raise RejectedInput(RejectReason.binary, "NUL or control bytes in the first 8 KiB")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        utf8_error = f"not UTF-8 ({exc.reason} at byte {exc.start})"
    from charset_normalizer import from_bytes
    from charset_normalizer.md import mess_ratio

    best = from_bytes(data).best()
    if language in _WESTERN:
        for enc in ("cp1252", "latin_1"):
            try:
                text = data.decode(enc)
            except UnicodeDecodeError:
                continue
            if mess_ratio(text[:100_000], 1.0) <= (best.chaos if best else 0.0) + 0.1:
                return text, enc
    if best is None or best.chaos > _MAX_CHAOS:
        raise RejectedInput(RejectReason.undecodable, f"{utf8_error}; no plausible encoding found")
    return str(best), best.encoding


def read_text(path: Path, params: PreprocessParams) -> tuple[str, str]:
    return decode_bytes(read_bytes(path), params.language)


# ---- Document building -----------------------------------------------------------------------------
def make_document(
    *,
    source: str,
    text: str,
    fmt: str,
    params: PreprocessParams,
    mode: TextMode = "prose",
    title: str = "",
    metadata: dict[str, Any] | None = None,
) -> Document:
    """Clean ``text`` into display text and build the Document (RejectedInput if nothing is left).

    ``source`` may hold a non-UTF-8 file name (surrogate escapes): the doc id hashes its raw bytes,
    the stored source shows them as ``\\xNN``. Lone surrogates in text or metadata (from JSON
    ``\\udXXX`` escapes) become U+FFFD; metadata fields are capped at ``preprocess.max_metadata_bytes``.
    """
    cleaned = clean_text(_valid_text(text), params, mode)
    if not cleaned.strip():
        raise RejectedInput(
            RejectReason.empty, "no text after cleanup" if text.strip() else "no text"
        )
    return Document(
        doc_id=doc_id_for(source),
        source=display_path(source),
        title=_valid_text(title.strip() or first_line(cleaned) or Path(display_path(source)).name)[:300],
        text=cleaned,
        content_hash=content_hash(cleaned),
        format=fmt,
        metadata=cap_metadata(metadata or {}, params.max_metadata_bytes),
    )


_SURROGATE = re.compile("[\ud800-\udfff]")
TRUNCATED_FIELDS = "truncated_fields"


def _valid_text(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)


def cap_metadata(meta: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """``meta`` with every field whose JSON is longer than ``max_bytes`` cut to that many bytes (as
    a string ending in "…"); the cut fields and their original sizes go to ``truncated_fields``."""
    out: dict[str, Any] = {}
    cut: dict[str, int] = {}
    for key, value in meta.items():
        data = _valid_text(json.dumps(value, ensure_ascii=False, default=str))
        name = _valid_text(str(key))
        size = len(data.encode("utf-8"))
        if max_bytes and size > max_bytes:
            text = value if isinstance(value, str) else data
            out[name] = _valid_text(text).encode("utf-8")[:max_bytes].decode("utf-8", "ignore") + "…"
            cut[name] = size
        else:
            out[name] = json.loads(data)
    if cut:
        out[TRUNCATED_FIELDS] = cut
    return out


def first_line(text: str, limit: int = 120) -> str:
    for line in text.splitlines():
        s = line.strip().lstrip("#").strip()
        if s:
            return s[:limit]
    return ""
