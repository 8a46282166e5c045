"""The one interface every embedding provider implements, how a provider declares itself, and the
errors providers raise.

A provider module defines an :class:`Embedder` class and one :class:`ProviderSpec` (``SPEC``): how to
build it, how to name its weights without building it, which tokenizer counts its tokens, and which
optional :class:`Capability` it has. ``tasks/plugins.py`` lists ``SPEC`` under its ``embed.provider``
name; nothing else in the code knows which providers exist (docs/extending.md walks through one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from embedline.tasks.retrying import TransientError
from embedline.tasks.vectors import l2_normalize

if TYPE_CHECKING:
    from embedline.tasks.config import EmbedParams
    from embedline.tasks.tokenize import TokenCounter


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

    def info(self) -> dict[str, Any]:
        """Facts for the manifest (``model_path``, device, counters...); may be empty."""
        ...


class Capability(StrEnum):
    """Optional behaviour a provider declares in its :class:`ProviderSpec` (never probed)."""

    PLANS_REQUESTS = "plans_requests"  # the embedder is a RequestPlanner: it sizes its own requests
    CONCURRENT = "concurrent"  # its requests may run on ``embed.concurrency`` threads at once
    BILLED_BY_TOKEN = "billed_by_token"  # a paid API: `embedline plan` reports the tokens to send
    LOCAL_BACKENDS = "local_backends"  # a model on disk run by embed.backend torch/onnx/openvino (auto, fast query)


@runtime_checkable
class RequestPlanner(Protocol):
    """Embedders with :attr:`Capability.PLANS_REQUESTS` cut the texts into request groups themselves
    (e.g. by a token budget); others get fixed groups of ``embed.batch_size`` (one cache commit per model batch)."""

    def plan_groups(self, texts: list[str]) -> list[list[int]]:
        """Indices of ``texts``, grouped into the requests (cache commits) to make."""
        ...


@dataclass(frozen=True)
class ProviderSpec:
    """Everything the pipeline needs to know about one ``embed.provider``, in one place."""

    name: str
    factory: Callable[[EmbedParams], Embedder]  # builds the embedder (loads the model / client)
    revision_for: Callable[[EmbedParams], str]  # names the weights WITHOUT building the embedder
    tokenizer_for: Callable[[EmbedParams], TokenCounter]  # counts tokens for chunk budgets
    capabilities: frozenset[Capability] = frozenset()
    # what stops the model loading on this machine (checked before any work; loads no weights)
    preflight: Callable[[EmbedParams], str | None] | None = None

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities


class EmbedError(RuntimeError):
    """An embedding failed for a reason retrying will not fix (bad input, auth, bad response)."""


class EmbedTransientError(EmbedError, TransientError):
    """Transient failures (429/5xx/timeouts) outlasted ``embed.max_retries``: a later whole-task
    retry (Prefect's) may succeed; everything already embedded is in the cache."""


class EmbedInputError(EmbedError, ValueError):
    """The input itself is unusable (an empty text, a single text over the request budget)."""


class EmbedResponseError(EmbedError):
    """A provider returned vectors we refuse to store (wrong count/length, NaN, all-zero)."""


def paid_for(exc: BaseException, dims: int | None, who: str) -> tuple[list[int], np.ndarray] | None:
    """The vectors a failed call had already been answered (and billed) for: ``exc.partial``
    (positions in the call -> vector, attached by a provider that splits a call into requests) as
    (positions, validated vectors), or None when there are none."""
    partial: dict[int, np.ndarray] = getattr(exc, "partial", None) or {}
    if not partial:
        return None
    vecs = np.stack(list(partial.values()))
    return list(partial), validate_vectors(vecs, len(vecs), dims, who)


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
