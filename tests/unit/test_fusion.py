"""Pure helpers of document-level search (tasks/vectorsets/fusion.py)."""

from __future__ import annotations

from embedline.tasks.vectorsets.fusion import snippet


def test_snippet_drops_parent_heading_prefix_of_a_sections_first_chunk() -> None:
    # The Markdown chunker prefixes a section's first chunk with its PARENTS only, then the
    # section's own heading line: neither belongs in the snippet (seen as raw "## ..." in search).
    text = "Convention of 1787\n\n## Signing and ratification\nOn September 17, 1787, delegates signed."
    assert snippet(text, ("Convention of 1787", "Signing and ratification")) == (
        "On September 17, 1787, delegates signed.")


def test_snippet_drops_full_path_prefix_and_keeps_body_lines() -> None:
    text = "Guide > Install\n\nRun the installer.\n# not a heading once the body started"
    assert snippet(text, ("Guide", "Install")) == "Run the installer.\n# not a heading once the body started"


def test_snippet_of_a_heading_only_text_is_the_text() -> None:
    assert snippet("## Only a heading", ("Only a heading",)) == "## Only a heading"


def test_deepen_asks_again_until_enough_or_exhausted() -> None:
    from embedline.tasks.vectorsets.fusion import deepen

    pool = list(range(50))
    asked: list[int] = []

    def fetch(depth: int) -> list[int]:
        asked.append(depth)
        return pool[:depth]

    assert deepen(fetch, lambda h: len(h) >= 30, 5) == pool and asked == [5, 20, 80]
    asked.clear()
    assert deepen(fetch, lambda h: True, 5) == pool[:5] and asked == [5]
    asked.clear()
    assert deepen(fetch, lambda h: False, 0) == pool and asked == [1, 4, 16, 64]
