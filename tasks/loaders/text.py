"""Plain text, Markdown and source-code loaders."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from embedline.tasks.config import PreprocessParams
from embedline.tasks.loaders.base import make_document, read_text
from embedline.tasks.records import Document, Rejection

# extension -> language (the language picks the comment syntax and, for Python, the ast chunker)
CODE_LANGUAGES: dict[str, str] = {
    ".py": "python",
    ".pyi": "python",
    ".pyw": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".tsx": "typescript",
    ".mts": "typescript",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".kt": "kotlin",
    ".kts": "kotlin",
    ".scala": "scala",
    ".swift": "swift",
    ".cs": "csharp",
    ".php": "php",
    ".c": "c",
    ".h": "c",
    ".cpp": "cpp",
    ".cc": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".hh": "cpp",
    ".sh": "shell",
    ".bash": "shell",
    ".zsh": "shell",
    ".ksh": "shell",
    ".rb": "ruby",
    ".pl": "perl",
    ".pm": "perl",
    ".r": "r",
    ".lua": "lua",
    ".hs": "haskell",
    ".sql": "sql",
    ".css": "css",
    ".scss": "css",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
}
_SHEBANG = re.compile(r"^#!\s*(?:/usr)?(?:/local)?/bin/(?:env\s+)?(\w+)")
_SHEBANG_LANGS = {
    "python": "python",
    "python3": "python",
    "sh": "shell",
    "bash": "shell",
    "zsh": "shell",
    "node": "javascript",
    "ruby": "ruby",
    "perl": "perl",
}


def shebang_language(head: str) -> str | None:
    m = _SHEBANG.match(head)
    return _SHEBANG_LANGS.get(m.group(1)) if m else None


# ---- man pages rendered by `man` (plain text) -------------------------------------------------------
# running header "CP(1)   User Commands   CP(1)"; the footer ends with the same "CP(1)"
_MAN_HEADER = re.compile(r"^(\S+)\(([0-9][\w]*)\)(?:[ \t]{2,}.*)?[ \t]{2,}\1\(\2\)[ \t]*$")
_MAN_SECTION = re.compile(r"^([A-Z][A-Z0-9 ,/&-]*[A-Z0-9])[ \t]*$")
_OVERSTRIKE = re.compile(r".\x08")


def man_page(text: str) -> tuple[str, str] | None:
    """(markdown-like text, title) of a man page as `man` prints it, or None when ``text`` is not
    one. Running headers and footers (every line that repeats "NAME(SECTION)" at both ends, and the
    footer line ending in it) are dropped, overstrike bold/underline is undone, section names
    (NAME, SYNOPSIS, ...) become ``##`` headings, and the title is the NAME line ("cp - copy files")."""
    text = _OVERSTRIKE.sub("", text.replace("\r\n", "\n"))
    lines = text.split("\n")
    first = next((ln for ln in lines if ln.strip()), "")
    m = _MAN_HEADER.match(first.strip())
    if not m:
        return None
    mark = f"{m.group(1)}({m.group(2)})"
    out: list[str] = []
    for ln in lines:
        bare = ln.strip()
        if _MAN_HEADER.match(bare) or (bare.endswith(mark) and len(bare) > len(mark) + 2 and "  " in bare):
            continue  # running header / footer (also repeated at page breaks)
        sec = _MAN_SECTION.match(ln)
        out.append(f"## {sec.group(1)}" if sec else ln[7:] if ln.startswith(" " * 7) else ln)
    body = "\n".join(out)
    title = ""
    name = re.search(r"^## NAME\n+((?:(?!## )\S.*\n?)+)", body, re.MULTILINE)
    if name:
        title = " ".join(name.group(1).split())
    return body, title or mark


class TextLoader:
    """Plain text (.txt, .text, .rst, and other text/* files); man pages as `man` prints them are
    recognised (format ``man``: running headers/footers dropped, sections as headings)."""

    name = "txt"

    def load(
        self, path: Path, rel: str, params: PreprocessParams
    ) -> Iterator[Document | Rejection]:
        text, encoding = read_text(path, params)
        man = man_page(text)
        if man is not None:
            yield make_document(
                source=rel, text=man[0], fmt="man", params=params, mode="markdown", title=man[1],
                metadata={"encoding": encoding},
            )
            return
        yield make_document(
            source=rel,
            text=text,
            fmt=self.name,
            params=params,
            mode="prose",
            metadata={"encoding": encoding},
        )


_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n(?:---|\.\.\.)\n", re.DOTALL)
_FM_TITLE = re.compile(r"^title:\s*['\"]?(.*?)['\"]?\s*$", re.MULTILINE)
_ATX_H1 = re.compile(r"^ {0,3}#[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)


def strip_html_comments(text: str) -> str:
    """Markdown without its HTML comments (``<!-- YAML added: v1.0 -->``); fenced code is kept as is."""
    parts = re.split(r"(^ {0,3}(?:```|~~~).*$)", text, flags=re.MULTILINE)
    out, fence = [], ""
    for i, part in enumerate(parts):
        if i % 2:  # a fence line
            tick = part.strip()[:3]
            fence = "" if fence == tick else (fence or tick)
            out.append(part)
        else:
            out.append(part if fence else _HTML_COMMENT.sub("", part))
    return "".join(out)


class MarkdownLoader:
    """Markdown: YAML front matter becomes metadata (title), the body keeps its structure."""

    name = "markdown"

    def load(
        self, path: Path, rel: str, params: PreprocessParams
    ) -> Iterator[Document | Rejection]:
        text, encoding = read_text(path, params)
        text = text.replace("\r\n", "\n")
        title, meta = "", {"encoding": encoding}
        fm = _FRONT_MATTER.match(text)
        if fm:
            t = _FM_TITLE.search(fm.group(1))
            title = t.group(1) if t else ""
            meta["front_matter"] = fm.group(1)
            text = text[fm.end() :]
        if not title:
            h1 = _ATX_H1.search(text)
            title = h1.group(1) if h1 else ""
        text = strip_html_comments(text)
        yield make_document(
            source=rel,
            text=text,
            fmt=self.name,
            params=params,
            mode="markdown",
            title=title,
            metadata=meta,
        )


class CodeLoader:
    """Source code: indentation kept; the language (by extension or shebang) goes to metadata."""

    name = "code"

    def load(
        self, path: Path, rel: str, params: PreprocessParams
    ) -> Iterator[Document | Rejection]:
        text, encoding = read_text(path, params)
        language = CODE_LANGUAGES.get(path.suffix.lower()) or shebang_language(text[:200]) or "text"
        yield make_document(
            source=rel,
            text=text,
            fmt=self.name,
            params=params,
            mode="code",
            title=path.name,
            metadata={"language": language, "encoding": encoding},
        )
