"""One transient-error classification for the embed providers, the stores and Prefect's retries."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tenacity import RetryCallState

from embedline.tasks import retrying
from embedline.tasks.embed import EmbedError, EmbedInputError, EmbedTransientError
from embedline.tasks.vectorsets import retry as store_retry

pytestmark = pytest.mark.unit


def _qdrant_429(retry_after: int = 3) -> Exception:
    from qdrant_client.common.client_exceptions import ResourceExhaustedResponse

    return ResourceExhaustedResponse("Too many requests", retry_after)


def _openai_status(status: int, headers: dict[str, str] | None = None) -> Exception:
    import openai

    req = httpx.Request("POST", "http://127.0.0.1/v1/embeddings")
    resp = httpx.Response(status, headers=headers or {}, request=req, json={"error": {"message": "x"}})
    return openai.APIStatusError("x", response=resp, body=None)


def _openai_connection_error() -> Exception:
    import openai

    exc = openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1/v1/embeddings"))
    exc.__cause__ = httpx.ConnectError("connection refused")
    return exc


class _State:
    def __init__(self, exc: BaseException | None):
        self.exc = exc

    def result(self) -> Any:
        if self.exc is not None:
            raise self.exc
        return 1


def _cases() -> list[tuple[BaseException, bool]]:
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    return [
        (_qdrant_429(), True),
        (UnexpectedResponse(503, "Unavailable", b"", httpx.Headers()), True),
        (UnexpectedResponse(404, "Not found", b"", httpx.Headers()), False),
        (ResponseHandlingException(httpx.ConnectError("refused")), True),
        (httpx.ReadTimeout("slow"), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (EmbedTransientError("gave up"), True),
        (_openai_status(429), True),
        (_openai_status(502), True),
        (_openai_status(400), False),
        (_openai_connection_error(), True),
        (EmbedError("401"), False),
        (EmbedInputError("empty"), False),
        (ValueError("bad dims"), False),
    ]


def test_qdrant_resource_exhausted_is_transient_with_its_retry_after() -> None:
    """Issue 14 row 9: a Qdrant 429 (ResourceExhaustedResponse) was never retried."""
    exc = _qdrant_429(3)
    assert retrying.is_transient(exc)
    assert store_retry.is_transient(exc)
    assert retrying.retry_after(exc) == 3.0


def test_store_and_prefect_layers_agree_with_the_one_classifier() -> None:
    from embedline.flows.stages import _transient

    for exc, want in _cases():
        assert retrying.is_transient(exc) is want, exc
        assert store_retry.is_transient(exc) is want, exc
        assert _transient(None, None, _State(exc)) is want, exc
    assert _transient(None, None, _State(None)) is False


def test_store_calls_retry_a_qdrant_429_after_its_retry_after() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise _qdrant_429(0)
        return "ok"

    assert store_retry.call_with_retry(2, flaky) == "ok"
    assert len(calls) == 2


def test_wait_honours_the_servers_retry_after_else_backs_off() -> None:
    wait = retrying.wait_transient(initial=0.5, maximum=20)

    def state(exc: BaseException) -> RetryCallState:
        s = RetryCallState(None, lambda: None, (), {})  # type: ignore[arg-type]
        s.set_exception((type(exc), exc, None))
        return s

    assert wait(state(_qdrant_429(7))) == 7.0
    assert wait(state(_openai_status(429, {"retry-after-ms": "1500"}))) == 1.5
    assert 0.5 <= wait(state(httpx.ConnectError("x"))) <= 1.0
