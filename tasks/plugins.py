"""Named, swappable parts resolved lazily: one registration point per kind.

A :class:`Registry` maps a config value (``embed.provider: openai``) to a ``"module:attribute"``
target that is imported only when that name is used, so listing or validating names never loads a
model, a client or a provider's dependencies. This module imports nothing from the project: the
config validates names against it (errors name the valid choices) and the parts below it resolve
their implementation from it.

Registries (the only place each kind is listed)::

    PROVIDERS   embed.provider -> a ProviderSpec (tasks/embed/protocol.py)      entry points: embedline.providers
    CHUNKERS    chunk.strategy -> a Chunker class (tasks/chunkers/)              entry points: embedline.chunkers

Other kinds register where their objects live: loaders by extension in ``tasks/loaders/__init__.py``
(``LOADERS``), stores by ``qdrant.backend`` in ``tasks/vectorsets/stores.py`` (``STORES``). See
docs/extending.md.

An installed package can add a provider without editing this repository through the entry-point
group ``embedline.providers`` (``name = "package.module:SPEC"``).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownChoiceError(ValueError):
    """A name no registry entry answers to; the message names the valid choices."""


class Registry(Generic[T]):
    """``name -> "module:attribute"`` (or an object), resolved on first use and then kept."""

    def __init__(self, key: str, entries: dict[str, str], *, group: str | None = None):
        self.key = key  # the config key the names come from, for error messages
        self.group = group  # entry-point group scanned once, on first lookup
        self._targets: dict[str, str | T] = dict(entries)
        self._loaded: dict[str, T] = {}
        self._scanned = group is None
        self._lock = threading.RLock()  # re-entrant: an imported target may register more names

    def _scan(self) -> None:
        if self._scanned:
            return
        with self._lock:
            if not self._scanned and self.group:
                for ep in metadata.entry_points(group=self.group):
                    self._targets.setdefault(ep.name, ep.value)
                self._scanned = True

    def names(self) -> list[str]:
        self._scan()
        return sorted(self._targets)

    def check(self, name: str) -> str:
        """``name`` if registered, else :class:`UnknownChoiceError` naming the valid choices. A name
        already known (built in or registered) needs no entry-point scan (~0.1 s per process)."""
        if name in self._targets:
            return name
        if name not in self.names():
            raise UnknownChoiceError(f"unknown {self.key} {name!r}; valid: {', '.join(self.names())}")
        return name

    def load(self, name: str) -> T:
        """The registered object (its module imported on first use)."""
        self.check(name)
        if name in self._loaded:
            return self._loaded[name]
        with self._lock:
            target = self._targets[name]
            if isinstance(target, str):
                module, _, attr = target.partition(":")
                obj: T = getattr(importlib.import_module(module), attr)
            else:
                obj = target
            self._loaded[name] = obj
            return obj

    def register(self, name: str, target: str | T, *, replace: bool = False) -> None:
        """Add ``name`` (a ``"module:attribute"`` string or the object itself)."""
        self._scan()
        with self._lock:
            if name in self._targets and not replace:
                raise ValueError(f"{self.key} {name!r} is already registered")
            self._targets[name] = target
            self._loaded.pop(name, None)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._targets.pop(name, None)
            self._loaded.pop(name, None)

    @contextmanager
    def registered(self, name: str, target: str | T) -> Iterator[None]:
        """``name`` registered for the ``with`` block only (tests); a replaced entry comes back."""
        self._scan()
        previous = self._targets.get(name)
        self.register(name, target, replace=True)
        try:
            yield
        finally:
            if previous is None:
                self.unregister(name)
            else:
                self.register(name, previous, replace=True)


# ---- the registry lines ----------------------------------------------------------------------------
_EMBED = "embedline.tasks.embed.providers"

PROVIDERS: Registry[object] = Registry(
    "embed.provider",
    {
        "sentence-transformers": f"{_EMBED}.sentence_transformers:SPEC",
        "openai": f"{_EMBED}.openai:SPEC",
        "fake": f"{_EMBED}.fake:SPEC",
    },
    group="embedline.providers",
)

_CHUNKERS = "embedline.tasks.chunkers"

# Chunker classes (built with no arguments; see the Chunker protocol in tasks/chunkers/__init__.py).
CHUNKERS: Registry[object] = Registry(
    "chunk.strategy",
    {
        "sentence": f"{_CHUNKERS}.prose:SentenceChunker",
        "sliding": f"{_CHUNKERS}.sliding:SlidingChunker",
        "markdown": f"{_CHUNKERS}.prose:MarkdownChunker",
        "code": f"{_CHUNKERS}.code:CodeChunker",
        "auto": f"{_CHUNKERS}:AutoChunker",
    },
    group="embedline.chunkers",
)
