"""Token-budget batching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from embedline.tasks.embed.protocol import EmbedInputError
from embedline.tasks.embed.requests import fixed_groups, halves, token_batches

pytestmark = pytest.mark.unit


def test_batches_respect_both_budgets_in_order() -> None:
    counts = [5, 5, 5, 9, 1, 1, 1, 1]
    batches = list(token_batches(counts, max_inputs=3, max_tokens=10))
    assert batches == [[0, 1], [2], [3, 4], [5, 6, 7]]


def test_single_input_over_budget_is_an_error() -> None:
    with pytest.raises(EmbedInputError, match="input #1 has 11 tokens"):
        list(token_batches([3, 11], max_inputs=10, max_tokens=10))


@given(
    counts=st.lists(st.integers(min_value=1, max_value=50), max_size=200),
    max_inputs=st.integers(min_value=1, max_value=20),
    max_tokens=st.integers(min_value=50, max_value=500),
)
def test_batches_cover_everything_once_within_limits(counts: list[int], max_inputs: int, max_tokens: int) -> None:
    batches = list(token_batches(counts, max_inputs, max_tokens))
    assert [i for b in batches for i in b] == list(range(len(counts)))
    for b in batches:
        assert 1 <= len(b) <= max_inputs
        assert sum(counts[i] for i in b) <= max_tokens


def test_halves_and_groups() -> None:
    assert halves([1, 2, 3, 4, 5]) == ([1, 2], [3, 4, 5])
    assert fixed_groups(5, 2) == [[0, 1], [2, 3], [4]]
    assert fixed_groups(0, 3) == []
