"""A toy embedding provider: letter frequencies (docs/extending.md shows this file verbatim)."""

from __future__ import annotations

from typing import Any

import numpy as np

from embedline.tasks.config import EmbedParams
from embedline.tasks.embed.protocol import Capability, ProviderSpec, l2_normalize
from embedline.tasks.tokenize import ConservativeCounter, TokenCounter

LETTERS = "abcdefghijklmnopqrstuvwxyz"


class ToyEmbedder:
    """26 dimensions: how often each letter occurs, L2-normalised."""

    def __init__(self, params: EmbedParams):
        self.name = f"toy:{params.model}"
        self.dims = len(LETTERS)
        self.max_tokens = 128
        self.revision = revision_for(params)
        self.requests: list[int] = []  # texts per embed() call (the test checks the planner)

    def embed(self, texts: list[str]) -> np.ndarray:
        self.requests.append(len(texts))
        counts = [[t.lower().count(c) + 0.01 for c in LETTERS] for t in texts]
        return l2_normalize(np.asarray(counts, dtype=np.float32).reshape(len(texts), self.dims))

    def plan_groups(self, texts: list[str]) -> list[list[int]]:
        """Capability.PLANS_REQUESTS: at most two texts per request."""
        return [list(range(i, min(i + 2, len(texts)))) for i in range(0, len(texts), 2)]

    def info(self) -> dict[str, Any]:
        return {"model_path": "toy", "requests": len(self.requests)}


def revision_for(params: EmbedParams) -> str:
    """Names the weights without building the embedder (there are none: a version string)."""
    return "toy-letters-v1"


def tokenizer_for(params: EmbedParams) -> TokenCounter:
    return ConservativeCounter(128, name="toy")


SPEC = ProviderSpec(
    name="toy",
    factory=ToyEmbedder,
    revision_for=revision_for,
    tokenizer_for=tokenizer_for,
    capabilities=frozenset({Capability.PLANS_REQUESTS}),
)
