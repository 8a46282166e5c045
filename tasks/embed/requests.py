"""How texts are cut into embedding requests: token budgets for APIs, fixed groups for local models
(the generic packing helper is :func:`embedline.tasks.batching.pack`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from embedline.tasks.batching import pack
from embedline.tasks.embed.protocol import EmbedInputError


def token_batches(
    counts: Sequence[int],
    max_inputs: int,
    max_tokens: int,
) -> Iterator[list[int]]:
    """Greedy in-order packing of input positions into requests.

    Each yielded batch holds at most ``max_inputs`` positions whose ``counts`` add up to at most
    ``max_tokens``. A single input over ``max_tokens`` cannot be sent at all: that is an
    :class:`EmbedInputError` naming its position (texts are never truncated silently).
    """
    if max_inputs < 1 or max_tokens < 1:
        raise ValueError("max_inputs and max_tokens must be >= 1")
    for i, n in enumerate(counts):
        if n > max_tokens:
            raise EmbedInputError(
                f"input #{i} has {n} tokens, more than embed.max_tokens_per_request={max_tokens}"
            )
    yield from pack(range(len(counts)), counts.__getitem__, max_items=max_inputs, max_weight=max_tokens)


def fixed_groups(n: int, size: int) -> list[list[int]]:
    """Positions ``0..n-1`` cut into consecutive groups of ``size`` (the last may be shorter)."""
    if size < 1:
        raise ValueError("size must be >= 1")
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def halves(batch: Sequence[int]) -> tuple[list[int], list[int]]:
    """Split a batch in two (first half gets the smaller share when odd)."""
    mid = len(batch) // 2
    return list(batch[:mid]), list(batch[mid:])
