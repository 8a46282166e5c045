"""Text normalisation: the display text of a document, and the text that gets embedded.

Two different jobs, kept apart on purpose:

- :func:`clean_text` produces ``Document.text``, the text users see and chunk spans index into:
  Unicode normal form (``preprocess.unicode_form``), control and invisible characters removed,
  whitespace tidied without losing paragraph breaks (or code indentation), and words broken across
  lines re-joined ("infor-\\nmation" -> "information"). Casing is never touched here.
- :class:`EmbedTransform` turns a chunk's display text into ``Chunk.embed_text``: optional code-comment
  stripping (code documents only), spaCy lookup lemmatisation and NLTK stemming (prose only: they
  mangle identifiers), and lowercasing. With the defaults it is the identity.

spaCy (``spacy.blank(lang)`` + the lookup lemmatizer, whose tables come from ``spacy-lookups-data``,
so it works offline) and the NLTK stemmers are loaded lazily, once per process.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from typing import Any

from embedline.tasks import resources
from embedline.tasks.config import PreprocessParams

# ---- display text --------------------------------------------------------------------------------
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u2060\ufeff"), None)  # soft hyphen, ZWSP, WJ, BOM
# C0/C1 controls except tab and newline (form feed / vertical tab become paragraph breaks first)
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_HSPACE = re.compile(r"[^\S\n]+")  # horizontal whitespace (incl. NBSP and friends after NFKC)
_TRAILING = re.compile(r"[^\S\n]+\n")
_BLANK_RUNS = re.compile(r"\n[^\S\n]*\n(?:[^\S\n]*\n)+")  # 3+ newlines (maybe with spaces) -> 2
# a word broken at a line end: letter + hyphen + newline + letter (joined when that one is lower case).
# Hyphens used at line ends: ASCII '-', U+2010 HYPHEN (what `man` prints), U+00AD SOFT HYPHEN.
LINE_END_HYPHENS = "-\u2010\u00ad"
_HYPHEN_BREAK = re.compile(r"([^\W\d_])([-\u2010\u00ad])[^\S\n]*\n[^\S\n]*(?=([^\W\d_]))")

TextMode = str  # "prose" | "markdown" | "code"


def clean_text(text: str, params: PreprocessParams, mode: TextMode = "prose") -> str:
    """Display-text cleanup; ``mode`` decides how much whitespace may change.

    - ``prose``: runs of spaces/tabs become one space, lines are stripped, blank-line runs collapse
      to one paragraph break; single newlines are kept (lists, addresses and verse rely on them).
    - ``markdown``: like prose, but leading indentation is kept (nested lists, indented code).
    - ``code``: only trailing spaces and excess blank lines go; no de-hyphenation.
    """
    if params.unicode_form != "none":
        text = unicodedata.normalize(params.unicode_form, text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\f", "\n\n").replace("\v", "\n")
    text = text.replace("\u2028", "\n").replace("\u2029", "\n\n")
    if mode != "code" and params.dehyphenate:
        text = dehyphenate(text)  # before the soft hyphens go: they mark where words were broken
    text = text.translate(_INVISIBLE)
    text = _CONTROL.sub("", text)
    if mode != "code":
        if mode == "markdown":
            lines = _markdown_lines(text.split("\n"))
        else:
            lines = [_HSPACE.sub(" ", line).strip() for line in text.split("\n")]
        text = "\n".join(lines)
    text = _TRAILING.sub("\n", text)
    text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip("\n").rstrip()


_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def _markdown_lines(lines: list[str]) -> list[str]:
    """Collapse inner whitespace outside fenced code blocks; keep indentation everywhere."""
    out, fence = [], ""
    for line in lines:
        m = _FENCE.match(line)
        if m and (not fence or m.group(1) == fence):
            fence = "" if fence else m.group(1)
            out.append(line.rstrip())
        else:
            out.append(line.rstrip() if fence else _collapse_inner(line))
    return out


def _collapse_inner(line: str) -> str:
    body = line.lstrip(" \t")
    indent = line[: len(line) - len(body)]
    return indent + _HSPACE.sub(" ", body).rstrip()


def dehyphenate(text: str) -> str:
    """Re-join words hyphenated at a line break when the continuation starts in lower case.

    "infor-\\nmation" -> "information"; U+2010 (``man``'s hyphen) and a soft hyphen at a line end
    always join ("DI\u2010\\n   RECTORY" -> "DIRECTORY"); "Anglo-\\nSaxon" and "2019-\\n2020" are left alone.
    """
    return _HYPHEN_BREAK.sub(_join_break, text)


def _join_break(m: re.Match[str]) -> str:
    # U+2010 / soft hyphen at a line end are typesetters' breaks ("DI\u2010\nRECTORY" in man output);
    # an ASCII '-' before an upper-case continuation is more likely a real compound ("Anglo-Saxon")
    if m.group(2) != "-" or m.group(3).islower():
        return m.group(1)
    return m.group(0)


# ---- code comments -------------------------------------------------------------------------------
# (line comment markers, block comment pairs, string delimiters) per language family
_HASH = (("#",), (), ('"""', "'''", '"', "'"))
_C_LIKE = (("//",), (("/*", "*/"),), ('"', "'", "`"))
COMMENT_SYNTAX: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...], tuple[str, ...]]] = {
    "python": _HASH,
    "shell": (("#",), (), ('"', "'")),
    "ruby": (("#",), (), ('"', "'")),
    "r": (("#",), (), ('"', "'")),
    "perl": (("#",), (), ('"', "'")),
    "yaml": (("#",), (), ('"', "'")),
    "toml": (("#",), (), ('"""', "'''", '"', "'")),
    "javascript": _C_LIKE,
    "typescript": _C_LIKE,
    "go": _C_LIKE,
    "rust": (("//",), (("/*", "*/"),), ('"',)),
    "java": _C_LIKE,
    "kotlin": _C_LIKE,
    "scala": _C_LIKE,
    "swift": _C_LIKE,
    "c": _C_LIKE,
    "cpp": _C_LIKE,
    "csharp": _C_LIKE,
    "php": (("//", "#"), (("/*", "*/"),), ('"', "'")),
    "css": ((), (("/*", "*/"),), ('"', "'")),
    "sql": (("--",), (("/*", "*/"),), ("'", '"')),
    "lua": (("--",), (("--[[", "]]"),), ('"', "'")),
    "haskell": (("--",), (("{-", "-}"),), ('"',)),
}


_GONE = "\x00"  # marks where a comment was (display text never holds NUL)


def strip_comments(code: str, language: str | None) -> str:
    """Remove comments from ``code`` (string literals respected); unknown languages are unchanged.

    A small scanner rather than a parser: it works on fragments (chunks) that would not parse.
    Lines left empty by a removed comment are dropped.
    """
    syntax = COMMENT_SYNTAX.get(language or "")
    if syntax is None:
        return code
    line_marks, blocks, quotes = syntax
    out: list[str] = []
    i, n = 0, len(code)
    while i < n:
        quote = next((q for q in quotes if code.startswith(q, i)), None)
        if quote is not None:
            j = i + len(quote)
            while j < n and not code.startswith(quote, j):
                if code[j] == "\n" and len(quote) == 1 and quote != "`":
                    break  # unterminated single-line string: stop at the line end
                j += 2 if code[j] == "\\" else 1
            j = min(n, j + len(quote)) if code.startswith(quote, j) else j
            out.append(code[i:j])
            i = j
            continue
        block = next((b for b in blocks if code.startswith(b[0], i)), None)
        if block is not None:
            j = code.find(block[1], i + len(block[0]))
            i = n if j < 0 else j + len(block[1])
            out.append(_GONE)
            continue
        if any(code.startswith(m, i) for m in line_marks) and not (
            i == 0 and code.startswith("#!")
        ):
            j = code.find("\n", i)
            i = n if j < 0 else j
            out.append(_GONE)
            continue
        out.append(code[i])
        i += 1
    lines = "".join(out).split("\n")
    # drop lines that held nothing but comments; keep lines that were blank to begin with
    kept = [
        ln.replace(_GONE, "").rstrip()
        for ln in lines
        if not (_GONE in ln and not ln.replace(_GONE, "").strip())
    ]
    return "\n".join(kept).strip("\n")


# ---- lemmatiser and stemmer (lazy, once) -----------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _spacy_lemmatizer(language: str) -> Any:
    import spacy

    try:
        nlp = spacy.blank(language)
        nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
        nlp.initialize()
    except Exception as exc:  # missing language or lookup tables: a config problem, fail clearly
        raise ValueError(
            f"preprocess.lemmatize needs spaCy lookup tables for language '{language}' "
            f"(package spacy-lookups-data): {exc}"
        ) from exc
    return nlp


def lemmatize(text: str, language: str) -> str:
    """Lookup lemmas; a capitalised word missing from the table is looked up in lower case
    ("Children" -> "Child"), all-caps words (acronyms) are left alone."""
    nlp = _spacy_lemmatizer(language)
    table = nlp.get_pipe("lemmatizer").lookups.get_table("lemma_lookup")
    parts = []
    for tok in nlp(text):
        lemma = tok.lemma_ or tok.text
        if lemma == tok.text and tok.text.istitle() and len(tok.text) > 1:
            low = table.get(tok.lower_, tok.lower_)
            lemma = low.capitalize() if low != tok.lower_ else tok.text
        parts.append(lemma + tok.whitespace_)
    return "".join(parts)


_STEMMER_LANGS = {
    "en": "english",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
    "nl": "dutch",
    "sv": "swedish",
    "da": "danish",
    "no": "norwegian",
    "fi": "finnish",
    "ru": "russian",
}


@functools.lru_cache(maxsize=8)
def _stemmer(kind: str, language: str) -> Callable[[str], str]:
    if kind == "porter":
        from nltk.stem import PorterStemmer

        return PorterStemmer().stem
    from nltk.stem import SnowballStemmer

    lang = _STEMMER_LANGS.get(language, language)
    if lang not in SnowballStemmer.languages:
        raise ValueError(f"preprocess.stem=snowball has no stemmer for language '{language}'")
    return SnowballStemmer(lang).stem


_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


class EmbedTransform:
    """Display text -> embed text, per chunk. ``identity`` is True when nothing would change."""

    def __init__(self, params: PreprocessParams):
        self.params = params
        self.identity = not (
            params.lowercase
            or params.lemmatize
            or params.stem != "none"
            or params.strip_code_comments
        )

    def __call__(self, text: str, code_language: str | None = None) -> str:
        if self.identity:
            return text
        p = self.params
        out = text
        if code_language is not None and p.strip_code_comments:
            stripped = strip_comments(out, code_language)
            out = stripped if stripped.strip() else out  # an all-comment chunk keeps its comments
        if code_language is None:
            if p.lemmatize:
                out = lemmatize(out, p.language)
            if p.stem != "none":
                stem = _stemmer(p.stem, p.language)
                out = _WORD.sub(lambda m: stem(m.group(0)), out)
        if p.lowercase:
            out = out.lower()
        return out


def _clear_caches() -> None:
    _spacy_lemmatizer.cache_clear()
    _stemmer.cache_clear()


resources.on_close("normalize", _clear_caches)
