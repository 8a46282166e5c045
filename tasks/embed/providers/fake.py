"""A deterministic, dependency-free embedder for tests (``embed.provider=fake``).

Feature hashing of lower-cased word unigrams plus character trigrams into ``dims`` buckets with a
hashed sign, sub-linear term weights, L2-normalised. Near-duplicate texts share most features and so
get a high cosine; unrelated texts share few and get a low one. No network, no model, stable across
processes and machines (blake2b, not Python's salted ``hash``).

Speed: a batch is one ``np.bincount`` over (row, bucket) pairs, the buckets of a feature are
memoised in a plain dict; the per-text work left in Python is the feature count. The sums run in the
same order as a per-feature loop would add them, so the vectors are bit-for-bit those of v1.
"""

from __future__ import annotations

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


BUCKET_CACHE_MAX = 1_000_000  # memoised features per (kind, dims) (cleared when full: bounded memory)
_codes: dict[tuple[str, int], dict[str, int]] = {}
_TF_MAX = 4096
_TF_WEIGHT = np.array([1.0] + [1.0 + math.log(tf) for tf in range(1, _TF_MAX)])  # math.log, as v1


def _bucket(feature: str, dims: int) -> tuple[int, float]:
    h = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")
    return h % dims, (1.0 if (h >> 63) & 1 else -1.0)


def _coded(counts: Counter[str], kind: str, dims: int, codes: list[int], tfs: list[int]) -> None:
    """Append the code (``bucket << 2 | positive << 1 | is_word``) and the count of every feature
    of ``kind`` ("w" word, "c" trigram) in the Counter's order; codes are memoised per feature."""
    cache = _codes.setdefault((kind, dims), {})
    if len(cache) > BUCKET_CACHE_MAX:
        cache.clear()
    got = [cache.get(k) for k in counts]
    if None in got:
        for i, key in enumerate(counts):
            if got[i] is None:
                idx, sign = _bucket(f"{kind}:{key}", dims)
                got[i] = cache[key] = idx << 2 | (2 if sign > 0 else 0) | (1 if kind == "w" else 0)
    codes.extend(got)  # type: ignore[arg-type]
    tfs.extend(counts.values())


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
        return self._raw([text])[0]

    def _raw(self, texts: list[str]) -> np.ndarray:
        """Un-normalised float32 rows: one bincount over (row, bucket) for the whole batch (float64
        sums, in feature order per row)."""
        codes: list[int] = []
        tfs: list[int] = []
        per_row: list[int] = []
        for text in texts:
            if not text.strip():
                raise EmbedInputError("fake embedder: empty text (empty texts are never embedded)")
            low = text.lower()
            n = len(codes)
            # words, then character trigrams of the whitespace-squeezed text: v1's feature order
            _coded(Counter(_WORD.findall(low)), "w", self.dims, codes, tfs)
            padded = f" {' '.join(low.split())} "
            _coded(Counter([padded[i : i + 3] for i in range(len(padded) - 2)]), "c", self.dims, codes, tfs)
            per_row.append(len(codes) - n)
        c = np.asarray(codes, dtype=np.int64)
        # sign * kind factor (exact: +-1 and 0.5 scale exactly) * (1 + log tf), as v1 computed it
        w = np.where(c & 2, 1.0, -1.0) * np.where(c & 1, 1.0, 0.5)
        tf = np.asarray(tfs, dtype=np.int64)
        w = w * (_TF_WEIGHT[np.minimum(tf, _TF_MAX - 1)] if tf.max(initial=1) < _TF_MAX
                 else np.array([1.0 + math.log(t) for t in tfs]))
        flat = np.repeat(np.arange(len(texts), dtype=np.int64) * self.dims, per_row) + (c >> 2)
        sums = np.bincount(flat, weights=w, minlength=len(texts) * self.dims)
        return sums.reshape(len(texts), self.dims).astype(np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        self.texts_seen += len(texts)
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        return l2_normalize(self._raw(texts))

    def info(self) -> dict[str, object]:
        return {"model_path": "fake", "calls": self.calls, "texts_seen": self.texts_seen}


SPEC = ProviderSpec(
    name="fake",
    factory=FakeEmbedder,
    revision_for=revision_for,
    tokenizer_for=conservative_counter,
)
