"""Retry only what can succeed on a second try. The classification (connection errors, timeouts,
HTTP 5xx/429, qdrant-client's ``ResourceExhaustedResponse`` with its Retry-After, the matching gRPC
codes) and the tenacity policy live in :mod:`embedline.tasks.retrying`, shared with the embed
providers and the Prefect task retry condition; this module keeps the stores' import path."""

from __future__ import annotations

from embedline.tasks.retrying import call_with_retry, is_transient, retry_after, retrying

__all__ = ["call_with_retry", "is_transient", "retry_after", "retrying"]
