"""Code chunker: Python split at top-level functions and classes (``ast``); other languages, and
Python that does not parse, fall back to sliding token windows.

Each top-level ``def``/``class`` (with its decorators and the comments above it) is one chunk when
it fits; module-level statements between them are grouped; groups smaller than
``chunk.min_tokens`` merge into a neighbour. A class over the budget is split at its methods
(heading path ``(Class, method)``); anything still too long is split at line boundaries.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from embedline.tasks.chunkers.base import ChunkBuilder, Packer, TokenBudget, Unit
from embedline.tasks.chunkers.sliding import SlidingChunker
from embedline.tasks.records import Chunk, Document

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass
class Segment:
    start: int  # char offsets
    end: int
    name: str  # "" for module-level statements
    node: ast.AST | None


def _segments(
    text: str, line_starts: list[int], nodes: list[ast.stmt], start: int, end: int
) -> list[Segment]:
    """Partition text[start:end] at the given statements: each segment runs from just after the
    previous statement to the end of its own (so comments above a def belong to it)."""
    segs: list[Segment] = []
    pos = start
    for node in nodes:
        nxt = (node.end_lineno or node.lineno) + 1  # the line after the statement
        stop = line_starts[nxt] if nxt < len(line_starts) else len(text)
        stop = max(pos, min(stop, end))
        if isinstance(node, _DEFS):
            segs.append(Segment(pos, stop, node.name, node))
        elif segs and not segs[-1].name:
            segs[-1].end = stop
        else:
            segs.append(Segment(pos, stop, "", None))
        pos = stop
    if pos < end:
        if segs:
            segs[-1].end = end
        else:
            segs.append(Segment(pos, end, "", None))
    return segs


class CodeChunker:
    name = "code"

    def split(self, doc: Document, budget: TokenBudget) -> Iterator[Chunk]:
        tree = None
        if doc.metadata.get("language") == "python":
            try:
                with warnings.catch_warnings():  # e.g. "invalid escape sequence": still parseable
                    warnings.simplefilter("ignore", SyntaxWarning)
                    tree = ast.parse(doc.text)
            except (SyntaxError, ValueError):
                tree = None
        if tree is None:
            yield from SlidingChunker().split(doc, budget)
            return
        b = ChunkBuilder(doc, budget, self.name)
        text = doc.text
        line_starts = [0, 0]  # 1-based: line_starts[n] = offset of line n
        line_starts += [i + 1 for i, ch in enumerate(text) if ch == "\n"]
        segs = _segments(text, line_starts, tree.body, 0, len(text))
        units = self._merge_small([b.unit(s.start, s.end) for s in segs], segs, b)
        for unit, seg in units:
            if not text[unit.start : unit.end].strip():
                continue
            path = (seg.name,) if seg.name else ()
            kind = type(seg.node).__name__ if seg.node is not None else "module"
            meta = {"symbol": seg.name, "kind": kind} if seg.name else {"kind": kind}
            items: list[Unit] = [unit]
            if unit.tokens > budget.max_tokens and isinstance(seg.node, ast.ClassDef):
                inner = _segments(text, line_starts, seg.node.body, seg.start, seg.end)
                items = [b.unit(s.start, s.end) for s in inner]
                yield from self._class_parts(b, inner, items, path, meta)
                continue
            yield from Packer(b, heading_path=path, meta=meta).pack(items)

    @staticmethod
    def _class_parts(
        b: ChunkBuilder,
        inner: list[Segment],
        items: list[Unit],
        path: tuple[str, ...],
        meta: dict[str, str],
    ) -> Iterator[Chunk]:
        for seg, unit in zip(inner, items, strict=True):
            sub = (*path, seg.name) if seg.name else path
            yield from Packer(b, heading_path=sub, meta=meta, overlap=0).pack([unit])

    @staticmethod
    def _merge_small(
        units: list[Unit], segs: list[Segment], b: ChunkBuilder
    ) -> list[tuple[Unit, Segment]]:
        """Fold segments under ``chunk.min_tokens`` into the next one (or the previous, at the end)
        when the result still fits."""
        budget = b.budget
        out: list[tuple[Unit, Segment]] = []
        carry: Unit | None = None
        for unit, seg in zip(units, segs, strict=True):
            if carry is not None:
                merged = b.unit(carry.start, unit.end)
                if merged.tokens <= budget.max_tokens:
                    unit = merged
                    seg = Segment(carry.start, seg.end, seg.name, seg.node)
                else:
                    out.append((carry, Segment(carry.start, carry.end, "", None)))
                carry = None
            if unit.tokens < budget.min_tokens and not seg.name:
                carry = unit
                continue
            out.append((unit, seg))
        if carry is not None:
            if out and (m := b.unit(out[-1][0].start, carry.end)).tokens <= budget.max_tokens:
                last = out[-1][1]
                out[-1] = (m, Segment(last.start, carry.end, last.name, last.node))
            else:
                out.append((carry, Segment(carry.start, carry.end, "", None)))
        return out
