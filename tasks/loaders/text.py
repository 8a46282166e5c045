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


class TextLoader:
    """Plain text (.txt, .text, .rst, and other text/* files)."""

    name = "txt"

    def load(
        self, path: Path, rel: str, params: PreprocessParams
    ) -> Iterator[Document | Rejection]:
        text, encoding = read_text(path, params)
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
