"""Retry only what can succeed on a second try: connection errors, timeouts, HTTP 5xx/429 and the
matching gRPC codes. Everything else (4xx, bad dims, missing collection) fails at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential_jitter

T = TypeVar("T")
_GRPC_TRANSIENT = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"}


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    try:
        import httpx

        if isinstance(exc, httpx.TransportError):  # connect/read/write errors and timeouts
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        if isinstance(exc, UnexpectedResponse):
            status = exc.status_code or 0
            return status >= 500 or status == 429
        if isinstance(exc, ResponseHandlingException):  # wraps the transport error
            src = exc.source if isinstance(exc.source, BaseException) else None
            return src is None or is_transient(src)
    except ImportError:  # pragma: no cover
        pass
    code = getattr(exc, "code", None)
    if callable(code):  # grpc.RpcError
        try:
            return getattr(code(), "name", "") in _GRPC_TRANSIENT
        except Exception:  # noqa: BLE001 an exotic exception's code() may raise anything: then it is not a known transient gRPC status
            return False
    return False


def retrying(max_retries: int, fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` retried up to ``max_retries`` times on transient errors (exponential backoff + jitter)."""
    wrapped: Callable[..., T] = retry(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(max_retries + 1),
        wait=wait_exponential_jitter(initial=0.5, max=20),
        reraise=True,
    )(fn)
    return wrapped


def call_with_retry(max_retries: int, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return retrying(max_retries, fn)(*args, **kwargs)
