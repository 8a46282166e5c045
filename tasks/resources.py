"""The process-wide cache of heavy things (models, tokenizers, clients, stores) with one ``close()``.

Heavy things load lazily, once per process: :func:`get` builds an object the first time its
``(kind, key)`` is asked for (under a per-key lock, so two threads never build the same model
twice) and returns the same object afterwards. :func:`close` releases everything (tests, shutdown,
a long-running worker between runs): each object's ``close`` callback runs, or its own ``close()``
method if it has one; :func:`drop` does the same for one kind only.

Kinds in use: ``embedder`` and ``token-counter`` (tasks/embed/registry.py), ``punkt``
(tasks/chunkers/segment.py). Modules that keep their own process-wide tables hook their cleanup in
with :func:`on_close`: ``rate-limiters`` (tasks/embed/ratelimit.py), ``normalize`` (spaCy
lemmatisers, stemmers). Not yet moved here: the store handles of tasks/vectorsets (closed by
``vectorsets.close_stores()``) and the BM25 encoders of tasks/vectorsets/sparse.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar, cast

T = TypeVar("T")

_items: dict[tuple[str, Hashable], Any] = {}
_closers: dict[tuple[str, Hashable], Callable[[Any], None]] = {}
_hooks: dict[str, Callable[[], None]] = {}
_key_locks: dict[tuple[str, Hashable], threading.Lock] = {}
_lock = threading.Lock()  # guards the dicts above, never held while building


def get(kind: str, key: Hashable, build: Callable[[], T], close: Callable[[T], None] | None = None) -> T:
    """The cached ``(kind, key)`` object, built by ``build()`` on first use (once, thread-safe)."""
    k = (kind, key)
    if k in _items:
        return cast(T, _items[k])
    with _lock:
        key_lock = _key_locks.setdefault(k, threading.Lock())
    with key_lock:
        if k not in _items:
            obj = build()
            with _lock:
                _items[k] = obj
                if close is not None:
                    _closers[k] = close
        return cast(T, _items[k])


def peek(kind: str, key: Hashable) -> Any | None:
    """The cached object if one was built (never builds one)."""
    return _items.get((kind, key))


def on_close(name: str, hook: Callable[[], None]) -> None:
    """Run ``hook`` on :func:`close` (for modules that manage their own handles); idempotent."""
    with _lock:
        _hooks[name] = hook


def _release(items: list[tuple[tuple[str, Hashable], Any]]) -> None:
    for k, obj in items:
        closer = _closers.pop(k, None)
        if closer is not None:
            closer(obj)
        elif callable(getattr(obj, "close", None)):
            obj.close()


def drop(kind: str) -> None:
    """Close and forget every cached object of ``kind``."""
    with _lock:
        items = [(k, v) for k, v in _items.items() if k[0] == kind]
        for k, _ in items:
            del _items[k]
    _release(items)


def close() -> None:
    """Close and forget everything this process cached, then run the :func:`on_close` hooks."""
    with _lock:
        items = list(_items.items())
        _items.clear()
        hooks = list(_hooks.values())
    _release(items)
    for hook in hooks:
        hook()
