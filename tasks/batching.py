"""Greedy in-order packing of a stream into batches bounded by count and by weight.

Shared by the embed stage (inputs per request, tokens per request) and the upsert stage (points per
request, bytes per request, under Qdrant's 32 MB cap).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def pack(
    items: Iterable[T], weight: Callable[[T], int], *, max_items: int, max_weight: int
) -> Iterator[list[T]]:
    """Consecutive batches of at most ``max_items`` items whose weights add up to at most
    ``max_weight``; an item heavier than ``max_weight`` on its own goes alone (callers that
    cannot send it check before)."""
    batch: list[T] = []
    used = 0
    for item in items:
        w = weight(item)
        if batch and (len(batch) >= max_items or used + w > max_weight):
            yield batch
            batch, used = [], 0
        batch.append(item)
        used += w
    if batch:
        yield batch
