"""The one answer to "is this failure worth another try?", shared by the embed providers, the vector
stores and the Prefect task retry condition, plus the tenacity policy that goes with it.

:func:`is_transient` classifies by exception *type* (never by class-name strings):

* :class:`TransientError` (our own marker, e.g. ``EmbedTransientError``) and Python's
  ``ConnectionError`` / ``TimeoutError``;
* httpx transport errors (connect/read/write errors, timeouts, dropped or reset connections);
* any HTTP client's status error (an integer ``status_code``: the OpenAI SDK, qdrant-client) with
  408, 409, 429 or 5xx, and an error raised *from* a transient one (the OpenAI SDK's connection and
  timeout errors wrap httpx's);
* qdrant-client's ``ResourceExhaustedResponse`` (a Qdrant 429, with its Retry-After),
  ``UnexpectedResponse`` with 429/5xx, and ``ResponseHandlingException`` wrapping a transient cause;
* gRPC ``UNAVAILABLE`` / ``DEADLINE_EXCEEDED`` / ``RESOURCE_EXHAUSTED`` / ``ABORTED``.

Everything else (bad input, 4xx, a missing collection, wrong dimensions) is permanent: retrying it
only spends time or money. :func:`retry_after` is the wait the server asked for (seconds) when the
error carries one; :func:`wait_transient` is a tenacity wait that honours it and otherwise backs off
exponentially with jitter. Optional libraries are only looked at when already imported: an exception
of theirs cannot exist otherwise, and classifying never imports a heavy client.
"""

from __future__ import annotations

import email.utils
import re
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # tenacity (and the tornado it probes for) loads only when something is retried
    from tenacity import RetryCallState

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 409, 429})
_GRPC_TRANSIENT = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"})


class TransientError(Exception):
    """A failure that a later attempt may not see. ``retry_after``: seconds the server asked for."""

    def __init__(self, *args: object, retry_after: float | None = None):
        super().__init__(*args)
        self.retry_after = retry_after


def transient_status(status: int | None) -> bool:
    """HTTP statuses worth retrying: 408, 409, 429 and 5xx."""
    return status is not None and (status in TRANSIENT_STATUS or status >= 500)


def _module(name: str) -> Any:
    return sys.modules.get(name)


def _httpx_transient(exc: BaseException) -> bool | None:
    httpx = _module("httpx")
    if httpx is not None and isinstance(exc, httpx.TransportError):
        return True
    return None


def _status_transient(exc: BaseException) -> bool | None:
    """An HTTP client's status error (the OpenAI SDK's ``APIStatusError``, qdrant-client's
    ``UnexpectedResponse``...): an integer ``status_code``."""
    status = getattr(exc, "status_code", None)
    return transient_status(status) if isinstance(status, int) else None


def _qdrant_transient(exc: BaseException) -> bool | None:
    client_exc = _module("qdrant_client.common.client_exceptions")
    if client_exc is not None and isinstance(exc, client_exc.ResourceExhaustedResponse):
        return True
    http_exc = _module("qdrant_client.http.exceptions")
    if http_exc is None:
        return None
    if isinstance(exc, http_exc.UnexpectedResponse):
        return transient_status(exc.status_code)
    if isinstance(exc, http_exc.ResponseHandlingException):  # wraps the transport error
        src = exc.source if isinstance(exc.source, BaseException) else None
        return src is None or is_transient(src)
    return None


def _grpc_transient(exc: BaseException) -> bool | None:
    grpc = _module("grpc")
    if grpc is None or not isinstance(exc, grpc.RpcError):
        return None
    code = getattr(exc, "code", None)
    if not callable(code):
        return False
    return getattr(code(), "name", "") in _GRPC_TRANSIENT


_CLASSIFIERS: tuple[Callable[[BaseException], bool | None], ...] = (
    _httpx_transient,
    _qdrant_transient,
    _status_transient,
    _grpc_transient,
)


def is_transient(exc: BaseException) -> bool:
    """True when a second attempt can succeed (see the module docstring for the exact list)."""
    if isinstance(exc, TransientError | ConnectionError | TimeoutError):
        return True
    for classify in _CLASSIFIERS:
        verdict = classify(exc)
        if verdict is not None:
            return verdict
    cause = exc.__cause__  # `raise X from err`: the OpenAI SDK's connection errors wrap httpx's
    return cause is not None and cause is not exc and is_transient(cause)


def retry_after(exc: BaseException | None) -> float | None:
    """The wait (seconds) the server asked for with this error, if it named one."""
    if exc is None:
        return None
    own = getattr(exc, "retry_after", None)
    if isinstance(own, int | float):
        return max(0.0, float(own))
    secs = getattr(exc, "retry_after_s", None)  # qdrant-client's ResourceExhaustedResponse
    if isinstance(secs, int | float):
        return max(0.0, float(secs))
    response = getattr(exc, "response", None)
    headers = getattr(exc, "headers", None) or getattr(response, "headers", None)
    if headers:
        return retry_after_seconds(dict(headers))
    return None


# ---- Retry-After header parsing -----------------------------------------------------------------
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")


def parse_duration(value: str | None) -> float | None:
    """Seconds in a Go-style duration ("6m0s", "1.5s", "20ms", "1h2m3s") or a plain number of
    seconds ("30", "0.5"). ``None`` when the value is missing or unparseable."""
    if value is None:
        return None
    v = value.strip().lower()
    if not v:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _PART.finditer(v):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    return total if pos == len(v) and pos > 0 else None


def retry_after_seconds(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Delay asked by ``retry-after-ms`` (milliseconds) or ``retry-after`` (seconds or HTTP date)."""
    h = {k.lower(): v for k, v in (headers or {}).items()}
    ms = h.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = h.get("retry-after")
    if ra is None:
        return None
    secs = parse_duration(ra)
    if secs is not None:
        return secs
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ref = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - ref)


def wait_transient(initial: float = 0.5, maximum: float = 20.0) -> Callable[[RetryCallState], float]:
    """A tenacity wait: the server's Retry-After when the error carries one, else exponential
    backoff with jitter (``initial`` doubling up to ``maximum``)."""
    from tenacity.wait import wait_exponential_jitter

    backoff = wait_exponential_jitter(initial=initial, max=maximum, jitter=initial)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        asked = retry_after(exc)
        return asked if asked is not None else float(backoff(state))

    return wait


def retrying(
    max_retries: int, fn: Callable[..., T], *, initial: float = 0.5, maximum: float = 20.0
) -> Callable[..., T]:
    """``fn`` retried up to ``max_retries`` times on transient errors (:func:`wait_transient`)."""
    from tenacity import retry, retry_if_exception, stop_after_attempt

    wrapped: Callable[..., T] = retry(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(max_retries + 1),
        wait=wait_transient(initial, maximum),
        reraise=True,
    )(fn)
    return wrapped


def call_with_retry(max_retries: int, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return retrying(max_retries, fn)(*args, **kwargs)


__all__ = [
    "TRANSIENT_STATUS",
    "TransientError",
    "call_with_retry",
    "is_transient",
    "parse_duration",
    "retry_after",
    "retry_after_seconds",
    "retrying",
    "transient_status",
    "wait_transient",
]
