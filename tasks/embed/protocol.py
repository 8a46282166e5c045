"""The one interface every embedding provider implements, and the errors they raise."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from embedline.tasks.retrying import TransientError


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into float32 vectors of shape ``(len(texts), dims)``.

    ``texts`` arrive final: the passage or query prompt is already prepended by the caller
    (see :func:`embedline.tasks.embed.prompts.with_prompt`), so every provider treats prompts the same way.
    Matryoshka truncation (``embed.dimensions``) and L2 normalisation happen inside ``embed``.
    """

    @property
    def name(self) -> str:
        """``<provider>:<model>``."""
        ...

    @property
    def dims(self) -> int:
        """Output width after any truncation."""
        ...

    @property
    def max_tokens(self) -> int:
        """The model window (special tokens included)."""
        ...

    @property
    def revision(self) -> str:
        """Stable identity of the weights/config (local) or of model + base_url (API)."""
        ...

    def embed(self, texts: list[str]) -> np.ndarray:
        """Vectors for ``texts`` in order: float32, shape (n, dims)."""
        ...


class EmbedError(RuntimeError):
    """An embedding failed for a reason retrying will not fix (bad input, auth, bad response)."""


class EmbedTransientError(EmbedError, TransientError):
    """Transient failures (429/5xx/timeouts) outlasted ``embed.max_retries``: a later whole-task
    retry (Prefect's) may succeed; everything already embedded is in the cache."""


class EmbedInputError(EmbedError, ValueError):
    """The input itself is unusable (an empty text, a single text over the request budget)."""


class EmbedResponseError(EmbedError):
    """A provider returned vectors we refuse to store (wrong count/length, NaN, all-zero)."""


def validate_vectors(vecs: np.ndarray, n: int, dims: int | None, who: str) -> np.ndarray:
    """Check a provider's output and return it as contiguous float32; raise a clear error if bad."""
    arr = np.ascontiguousarray(vecs, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise EmbedResponseError(f"{who}: expected {n} vectors, got array of shape {arr.shape}")
    if dims is not None and arr.shape[1] != dims:
        raise EmbedResponseError(f"{who}: expected vectors of length {dims}, got {arr.shape[1]}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise EmbedResponseError(f"{who}: NaN/inf in vector(s) at positions {np.flatnonzero(bad)[:10].tolist()}")
    zero = ~arr.any(axis=1)
    if zero.any():
        raise EmbedResponseError(f"{who}: all-zero vector(s) at positions {np.flatnonzero(zero)[:10].tolist()}")
    return arr


def l2_normalize(vecs: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32 (zero rows stay zero)."""
    arr = np.asarray(vecs, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return np.divide(arr, norms, out=np.zeros_like(arr), where=norms > 0).astype(np.float32, copy=False)


def truncate_dims(vecs: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """Matryoshka truncation to ``dimensions`` (then re-normalised when ``normalize``)."""
    arr = np.asarray(vecs, dtype=np.float32)
    if dimensions is not None:
        if dimensions > arr.shape[1]:
            raise EmbedError(f"embed.dimensions={dimensions} exceeds the model's {arr.shape[1]} dims")
        arr = arr[:, :dimensions]
    return l2_normalize(arr) if normalize else np.ascontiguousarray(arr)


def with_prompt(texts: list[str], prompt: str) -> list[str]:
    """Prepend a passage/query prompt (E5's "passage: ", BGE's instruction) to every text."""
    return [prompt + t for t in texts] if prompt else list(texts)
