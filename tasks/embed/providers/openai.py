"""OpenAI and OpenAI-compatible embedding APIs (vLLM, TEI, Ollama, LM Studio, infinity, ...).

* The official ``openai`` client with ``max_retries=0``: retries are ours (below), so the SDK's own
  short retry loop never fights the shared rate limiter.
* API key from the environment variable named by ``embed.api_key_env`` (never from params, never
  logged). Missing: a clear error, unless ``embed.base_url`` is set (local servers rarely need one),
  then ``"EMPTY"``.
* Token-budget batching (``embed.max_inputs_per_request`` / ``embed.max_tokens_per_request``, tokens
  from :func:`embedline.tasks.tokenize.load_token_counter`); a 413, or a 400 that says the request is too
  large, splits the batch in halves and retries them; a single input that is too large is an error.
* Every request first takes a slot from the process-wide :class:`RateLimiter` for this endpoint and
  model. ``Retry-After`` / ``retry-after-ms`` / ``x-ratelimit-reset-*`` block that shared limiter.
* Retries (tenacity, at most ``embed.max_retries``): 408/409/429/5xx, timeouts and dropped
  connections, exponential backoff with jitter unless the server named a wait (a 429 without a
  hint blocks the shared limiter for the backoff, so every caller backs off). ``x-should-retry``
  overrides the classification. Other 4xx fail fast after one request.
* Responses are validated (count, indices, length, NaN, all-zero) and re-ordered by ``index``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any

import numpy as np
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from embedline.tasks.config import EmbedParams
from embedline.tasks.embed.protocol import (
    Capability,
    EmbedError,
    EmbedInputError,
    EmbedResponseError,
    EmbedTransientError,
    ProviderSpec,
    l2_normalize,
    validate_vectors,
)
from embedline.tasks.embed.ratelimit import shared_limiter, wait_from_headers
from embedline.tasks.embed.requests import halves, token_batches
from embedline.tasks.retrying import TransientError, is_transient, transient_status
from embedline.tasks.tokenize import load_token_counter, tiktoken_counter

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
KNOWN_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
# a 400 that means "this request is too big" (splitting helps); anything else on a 400 fails fast
_OVERSIZE = re.compile(
    r"too large|too long|too many (inputs|tokens)|maximum (request|context|batch)|"
    r"max(imum)?[_ ]tokens?[_ ]per[_ ]request|maximum context length",
    re.IGNORECASE,
)
_HINTS = {
    401: "check the API key in the environment variable named by embed.api_key_env",
    403: "the API key has no access to this model or endpoint",
    404: "unknown model or wrong embed.base_url",
}


class _Transient(TransientError):
    """A failure worth retrying; ``shared_wait`` is set when the server named how long to wait
    (the shared limiter is already blocked until then)."""

    def __init__(self, message: str, shared_wait: float | None = None, status: int | None = None):
        super().__init__(message)
        self.shared_wait = shared_wait
        self.status = status


class _Oversize(Exception):
    """The request was too large for the server: split it."""


def revision_for(params: EmbedParams) -> str:
    """API models have no weights to hash: the model name and endpoint identify them."""
    return f"{params.model}@{(params.base_url or DEFAULT_BASE_URL).rstrip('/')}"


def _api_key(params: EmbedParams) -> str:
    key = os.environ.get(params.api_key_env, "").strip()
    if key:
        return key
    if params.base_url:
        return "EMPTY"
    raise EmbedError(
        f"embed.provider=openai needs an API key: set the environment variable "
        f"{params.api_key_env} (or point embed.base_url at an OpenAI-compatible server)"
    )


class OpenAIEmbedder:
    """An OpenAI-compatible ``/v1/embeddings`` endpoint behind :class:`embedline.tasks.embed.Embedder`."""

    def __init__(self, params: EmbedParams):
        self.params = params
        self.name = f"openai:{params.model}"
        self.revision = revision_for(params)
        self.base_url = (params.base_url or DEFAULT_BASE_URL).rstrip("/")
        self._api_key = _api_key(params)
        self.counter = load_token_counter(params)
        self.max_tokens = int(self.counter.max_tokens)
        self.concurrency = params.concurrency
        self.limiter = shared_limiter(
            "openai", params.base_url, params.model, params.requests_per_minute, params.tokens_per_minute
        )
        self._dims: int | None = params.dimensions or KNOWN_DIMS.get(params.model)
        self._client: Any = None
        self._lock = threading.Lock()
        self.requests_sent = 0
        self.retries = 0
        self.splits = 0

    # -- protocol ---------------------------------------------------------------------------------------
    @property
    def dims(self) -> int:
        """Known from ``embed.dimensions``, the model table, or the first response. Never a hidden
        paid request: an unknown model's width is an error until something was embedded (use
        :meth:`probe_dims` to pay for one request explicitly)."""
        if self._dims is None:
            raise EmbedError(
                f"the output width of {self.params.model!r} is not known before the first request: "
                "set embed.dimensions (or call probe_dims() to spend one request on it)"
            )
        return self._dims

    def probe_dims(self) -> int:
        """Spend one request to learn an unknown model's output width (explicit, never implicit)."""
        if self._dims is None:
            self.embed(["dimension probe"])
        assert self._dims is not None
        return self._dims

    def count_tokens(self, texts: list[str]) -> list[int]:
        extra = int(self.counter.special_tokens)
        return [self.counter.count(t) + extra for t in texts]

    def plan_groups(self, texts: list[str]) -> list[list[int]]:
        """Positions of ``texts`` grouped into requests by the input and token budgets."""
        return list(
            token_batches(
                self.count_tokens(texts),
                self.params.max_inputs_per_request,
                self.params.max_tokens_per_request,
            )
        )

    def embed(self, texts: list[str]) -> np.ndarray:
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise EmbedInputError(f"empty text(s) at positions {empty[:10]}: empty strings are never sent")
        if not texts:
            return np.zeros((0, self._dims or 0), dtype=np.float32)
        counts = self.count_tokens(texts)
        parts: list[np.ndarray] = []
        for batch in token_batches(counts, self.params.max_inputs_per_request, self.params.max_tokens_per_request):
            try:
                parts.append(self._embed_splitting([texts[i] for i in batch], [counts[i] for i in batch], batch[0]))
            except EmbedError as exc:  # keep what was paid for: the caller commits exc.partial
                _add_partial(exc, np.vstack(parts) if parts else None, 0)
                raise
        return np.vstack(parts)

    def info(self) -> dict[str, Any]:
        return {
            "model_path": self.params.model,
            "base_url": self.base_url,
            "requests_sent": self.requests_sent,
            "retries": self.retries,
            "splits": self.splits,
            "rate_limit_wait_s": round(self.limiter.waited_s, 3),
        }

    # -- internals ----------------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import openai

                    self._client = openai.OpenAI(
                        api_key=self._api_key,
                        base_url=self.base_url,
                        max_retries=0,
                        timeout=self.params.timeout_s,
                    )
        return self._client

    def _embed_splitting(self, texts: list[str], counts: list[int], offset: int) -> np.ndarray:
        try:
            return self._request_with_retries(texts, sum(counts))
        except _Oversize as exc:
            if len(texts) == 1:
                raise EmbedInputError(
                    f"input #{offset} ({counts[0]} tokens) is too large for {self.base_url}: {exc}"
                ) from None
            with self._lock:
                self.splits += 1
            a, b = halves(range(len(texts)))
            log.info("request of %d inputs too large; retrying as %d + %d", len(texts), len(a), len(b))
            left = self._embed_splitting([texts[i] for i in a], [counts[i] for i in a], offset)
            try:
                right = self._embed_splitting([texts[i] for i in b], [counts[i] for i in b], offset + len(a))
            except EmbedError as exc:
                _add_partial(exc, left, offset)
                raise
            return np.vstack([left, right])

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Transient) and exc.shared_wait is not None:
            return 0.0  # the shared limiter is blocked until the server's instant: acquire() waits
        initial = self.params.retry_initial_s
        backoff = wait_exponential_jitter(initial=initial, max=self.params.retry_max_s, jitter=initial)
        delay = float(backoff(state))
        if isinstance(exc, _Transient) and exc.status == 429:
            self.limiter.block_for(delay)  # a 429 without a hint: the whole quota backs off
            return 0.0
        return delay

    def _request_with_retries(self, texts: list[str], tokens: int) -> np.ndarray:
        retrying = Retrying(
            stop=stop_after_attempt(self.params.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(is_transient),
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._request_once(texts, tokens)
        except TransientError as exc:
            raise EmbedTransientError(
                f"{self.base_url}: gave up after {self.params.max_retries + 1} attempts: {exc}"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _count_retry(self, state: RetryCallState) -> None:
        with self._lock:
            self.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        log.info("embedding request failed (%s); retry %d", exc, state.attempt_number)

    def _request_once(self, texts: list[str], tokens: int) -> np.ndarray:
        kwargs: dict[str, Any] = {"model": self.params.model, "input": texts, "encoding_format": "float"}
        if self.params.dimensions is not None:
            kwargs["dimensions"] = self.params.dimensions
        # the slot is held until the answer is read: after a block, others wait for this answer
        with self.limiter.request(tokens):
            with self._lock:
                self.requests_sent += 1
            raw = self._send(kwargs)
            wait = wait_from_headers(dict(raw.headers), is_429=False)
            if wait:
                self.limiter.block_for(wait)  # a limit is at zero: stop before being told no
        return self._parse(self._body(raw), len(texts))

    def _send(self, kwargs: dict[str, Any]) -> Any:
        import openai

        try:
            return self.client.embeddings.with_raw_response.create(**kwargs)
        except openai.APIStatusError as exc:
            self._raise_for_status(exc)
        except openai.APIConnectionError as exc:  # includes APITimeoutError; dropped/reset connections
            raise _Transient(f"{type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _body(self, raw: Any) -> Any:
        """The parsed 200 body. One that is not JSON (a proxy's HTML error page, a truncated body)
        is transient: the same request usually succeeds on a second try. JSON that is not the
        embeddings schema is not retried."""
        try:
            parsed = raw.parse()
        except Exception as exc:  # noqa: BLE001 the SDK's parse raises JSON/pydantic/KeyError variants: classified just below
            if _is_json(raw):
                raise EmbedResponseError(f"{self.base_url}: unreadable embeddings response: {exc}") from None
            parsed = None
        if parsed is None or isinstance(parsed, str | bytes):  # the SDK hands back text for non-JSON
            text = raw.http_response.text[:80].replace("\n", " ")
            raise _Transient(f"HTTP 200 with a body that is not JSON: {text!r}")
        return parsed

    def _raise_for_status(self, exc: Any) -> None:
        status = int(exc.status_code)
        headers = dict(exc.response.headers) if exc.response is not None else {}
        message = _error_message(exc)
        should_retry = str(headers.get("x-should-retry", "")).lower()
        if status == 413 or (status == 400 and _OVERSIZE.search(message)):
            raise _Oversize(f"{status}: {message}")
        transient = transient_status(status)
        if should_retry in {"true", "false"}:
            transient = should_retry == "true"
        if transient:
            wait = wait_from_headers(headers, is_429=status == 429)
            if wait is not None:
                self.limiter.block_for(wait)
            elif status == 429:  # no hint: block now (before this slot is released), _wait extends it
                self.limiter.block_for(self.params.retry_initial_s)
            raise _Transient(f"HTTP {status}: {message}", wait, status)
        hint = _HINTS.get(status, "the request was rejected")
        raise EmbedError(
            f"{self.base_url} answered HTTP {status} for model {self.params.model!r}: {message} ({hint}; not retried)"
        )

    def _parse(self, resp: Any, n: int) -> np.ndarray:
        data = list(getattr(resp, "data", None) or [])
        who = f"{self.base_url} ({self.params.model})"
        if len(data) != n:
            raise EmbedResponseError(f"{who}: sent {n} inputs, got {len(data)} embeddings")
        try:
            by_index = sorted(data, key=lambda d: int(d.index))
        except (TypeError, ValueError, AttributeError):
            raise EmbedResponseError(f"{who}: embeddings without a usable 'index'") from None
        if [int(d.index) for d in by_index] != list(range(n)):
            raise EmbedResponseError(f"{who}: response indices are not 0..{n - 1}")
        rows = [d.embedding for d in by_index]
        lengths = {len(r) if isinstance(r, list) else -1 for r in rows}
        if len(lengths) != 1 or -1 in lengths:
            raise EmbedResponseError(f"{who}: embeddings of differing lengths or types {sorted(lengths)}")
        vecs = validate_vectors(np.asarray(rows, dtype=np.float32), n, self._dims, who)
        if self._dims is None:
            self._dims = int(vecs.shape[1])
        return l2_normalize(vecs) if self.params.normalize else vecs


def _add_partial(exc: BaseException, vecs: np.ndarray | None, offset: int) -> None:
    """Attach vectors that were paid for before ``exc`` to it: ``exc.partial`` maps positions in
    the ``embed()`` call to vectors, so the embed stage can cache them before failing."""
    if vecs is None or not len(vecs):
        return
    partial: dict[int, np.ndarray] = getattr(exc, "partial", None) or {}
    partial.update({offset + j: vecs[j] for j in range(len(vecs))})
    exc.partial = partial  # type: ignore[attr-defined]


def _is_json(raw: Any) -> bool:
    try:
        raw.http_response.json()
    except ValueError:
        return False
    return True


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return str(getattr(exc, "message", None) or exc)


SPEC = ProviderSpec(
    name="openai",
    factory=OpenAIEmbedder,
    revision_for=revision_for,
    tokenizer_for=tiktoken_counter,
    capabilities=frozenset({Capability.PLANS_REQUESTS, Capability.CONCURRENT, Capability.BILLED_BY_TOKEN}),
)
