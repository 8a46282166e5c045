"""Provider lookup (``embed.provider`` -> :class:`ProviderSpec`) and the process-wide embedder cache.

The names live in one table, :data:`embedline.tasks.plugins.PROVIDERS`; each provider module declares
its factory, revision lookup, tokenizer and capabilities in its ``SPEC``. Specs import their module
lazily, so importing :mod:`embedline.tasks.embed` never loads torch, a model or an HTTP client.
:func:`get_embedder` builds each configuration once per process (``tasks/resources.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, cast

from embedline.tasks import resources
from embedline.tasks.config import EmbedParams
from embedline.tasks.embed.protocol import Capability, Embedder, ProviderSpec, RequestPlanner
from embedline.tasks.embed.requests import fixed_groups
from embedline.tasks.plugins import PROVIDERS
from embedline.tasks.tokenize import COUNTER_KIND

_EMBEDDER = "embedder"
# Params that do not change the embedder object (cache location, sharding) are not part of its key.
_NOT_EMBEDDER_FIELDS = {"cache", "cache_path", "shard_rows", "concurrency"}


def provider_spec(name: str) -> ProviderSpec:
    """The spec registered under ``name`` (ValueError naming the valid choices if none is)."""
    spec = PROVIDERS.load(name)
    if not isinstance(spec, ProviderSpec):
        raise TypeError(f"embed.provider {name!r} is registered to {spec!r}, not a ProviderSpec")
    return spec


def revision_for(params: EmbedParams) -> str:
    """The model revision for ``params`` (hash of local weights, or model@endpoint for APIs),
    without building the embedder: the cache namespace and the fingerprint need it even when
    every vector is already cached."""
    return provider_spec(params.provider).revision_for(params)


def embedder_key(params: EmbedParams) -> tuple[object, ...]:
    return tuple(
        (k, v) for k, v in sorted(params.model_dump().items()) if k not in _NOT_EMBEDDER_FIELDS
    )


def _build(params: EmbedParams) -> Embedder:
    spec = provider_spec(params.provider)
    emb = spec.factory(params)
    if spec.has(Capability.PLANS_REQUESTS) and not isinstance(emb, RequestPlanner):
        raise TypeError(f"embed.provider {spec.name!r} declares plans_requests but has no plan_groups()")
    return emb


# embed.backend=auto -> the calibrated choice: set by tasks/embed/auto.py, which the package's
# __init__ imports (through stage -> manifest); a hook, so that this module does not import it
AUTO_RESOLVER: Callable[..., Any] | None = None


def _auto(params: EmbedParams, calibrate_now: bool) -> Any:
    if AUTO_RESOLVER is None:
        # a caller that imported only the light modules (cached, query): load the resolver now
        # (by name: auto imports this module, so a static import here would be a cycle)
        importlib.import_module("embedline.tasks.embed.auto")
    if AUTO_RESOLVER is None:  # pragma: no cover - importing auto sets it
        raise RuntimeError("embed.backend=auto: embedline.tasks.embed.auto did not register")
    return AUTO_RESOLVER(params, calibrate_now=calibrate_now)


def get_embedder(params: EmbedParams) -> Embedder:
    """The embedder for ``params``: built lazily once per process, then shared (thread-safe).
    ``backend=auto`` (not resolved by the caller) becomes the recorded (or now calibrated) choice."""
    if params.backend == "auto":
        params = _auto(params, True)
    return resources.get(_EMBEDDER, embedder_key(params), lambda: _build(params), close=_no_close)


def _no_close(_emb: Embedder) -> None:
    """Embedders hold memory, not handles: forgetting them frees it."""


def peek_embedder(params: EmbedParams) -> Embedder | None:
    """The cached embedder for ``params`` if one was built in this process (never builds one)."""
    if params.backend == "auto":
        resolved = _auto(params, False)
        if resolved is None:
            return None
        params = resolved
    return cast(Embedder | None, resources.peek(_EMBEDDER, embedder_key(params)))


def request_groups(emb: Embedder, params: EmbedParams, texts: list[str], default: int) -> list[list[int]]:
    """How ``texts`` are cut into requests: the provider plans them if it declares so, else fixed
    groups of ``default`` texts."""
    if provider_spec(params.provider).has(Capability.PLANS_REQUESTS):
        return cast(RequestPlanner, emb).plan_groups(texts)
    return fixed_groups(len(texts), default)


def request_workers(params: EmbedParams) -> int:
    """Threads embedding request groups at once: ``embed.concurrency`` for providers that declare
    :attr:`Capability.CONCURRENT`, else 1."""
    return params.concurrency if provider_spec(params.provider).has(Capability.CONCURRENT) else 1


def clear_embedders() -> None:
    """Forget cached embedders and token counters (tests; frees models)."""
    resources.drop(_EMBEDDER)
    resources.drop(COUNTER_KIND)


__all__ = [
    "PROVIDERS",
    "clear_embedders",
    "embedder_key",
    "get_embedder",
    "peek_embedder",
    "provider_spec",
    "request_groups",
    "request_workers",
    "revision_for",
]
