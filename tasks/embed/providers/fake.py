"""A deterministic, dependency-free embedder for tests (``embed.provider=fake``).

Feature hashing of lower-cased word unigrams plus character trigrams into ``dims`` buckets with a
hashed sign, sub-linear term weights, L2-normalised. Near-duplicate texts share most features and so
get a high cosine; unrelated texts share few and get a low one. No network, no model, stable across
processes and machines (blake2b, not Python's salted ``hash``).
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections import Counter

import numpy as np

from embedline.tasks.config import EmbedParams
from embedline.tasks.embed.protocol import EmbedInputError, ProviderSpec, l2_normalize
from embedline.tasks.tokenize import conservative_counter

DEFAULT_DIMS = 256
_WORD = re.compile(r"\w+", re.UNICODE)


@functools.lru_cache(maxsize=200_000)
def _bucket(feature: str, dims: int) -> tuple[int, float]:
    h = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")
    return h % dims, (1.0 if (h >> 63) & 1 else -1.0)


def _features(text: str) -> Counter[str]:
    low = text.lower()
    feats: Counter[str] = Counter("w:" + w for w in _WORD.findall(low))
    squeezed = " ".join(low.split())
    padded = f" {squeezed} "
    feats.update("c:" + padded[i : i + 3] for i in range(len(padded) - 2))
    return feats


def revision_for(params: EmbedParams) -> str:
    return f"fake-hash-v1-{int(params.dimensions or DEFAULT_DIMS)}"


class FakeEmbedder:
    """Feature-hashed bag of words + character trigrams (see module docstring)."""

    def __init__(self, params: EmbedParams):
        self.dims = int(params.dimensions or DEFAULT_DIMS)
        self.name = f"fake:{params.model}"
        self.max_tokens = int(params.max_seq_tokens or 256)
        self.revision = revision_for(params)
        self.calls = 0  # embed() invocations (tests assert on cache behaviour with it)
        self.texts_seen = 0

    def vector(self, text: str) -> np.ndarray:
        if not text.strip():
            raise EmbedInputError("fake embedder: empty text (empty texts are never embedded)")
        v = np.zeros(self.dims, dtype=np.float64)
        for feat, tf in _features(text).items():
            idx, sign = _bucket(feat, self.dims)
            v[idx] += sign * (1.0 + math.log(tf)) * (1.0 if feat.startswith("w:") else 0.5)
        return v.astype(np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        self.texts_seen += len(texts)
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        return l2_normalize(np.stack([self.vector(t) for t in texts]))

    def info(self) -> dict[str, object]:
        return {"model_path": "fake", "calls": self.calls, "texts_seen": self.texts_seen}


SPEC = ProviderSpec(
    name="fake",
    factory=FakeEmbedder,
    revision_for=revision_for,
    tokenizer_for=conservative_counter,
)
