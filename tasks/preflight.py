"""Checks of everything that can be checked before any work (and before any paid embedding).

The typed config (:mod:`embedline.tasks.config`) validates values on their own; this module checks
them against the machine: the source folder exists, the artifact, cache and store folders can be
written, and the embedding model can be found (a local folder, the installed default model, a
Hugging Face snapshot on disk, or, when online, a model the hub knows). :func:`check_ready` raises
one :class:`PreflightError` (a :class:`ConfigError`) naming every problem and its param.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, ConfigError, EmbedParams


class PreflightError(ConfigError):
    """A param that validates but cannot work on this machine."""


def check_ready(cfg: Config, art: Artifacts, *, source: bool = True, model: bool = True) -> None:
    """Raise :class:`PreflightError` listing every problem found; return quietly otherwise."""
    problems: list[str] = []
    if source:
        root = art.resolve(cfg.source)
        if not root.is_dir():
            what = "is not a folder" if root.exists() else "does not exist"
            problems.append(f"source folder {root} {what} (param 'source')")
    problems += filter(None, [
        writable(art.root / "data", "artifact folder"),
        writable(art.resolve(cfg.embed.cache_path).parent, "embedding cache folder (embed.cache_path)"),
    ])
    if cfg.qdrant.backend in ("edge", "local"):
        problems += filter(None, [writable(art.resolve(cfg.qdrant.path), "store folder (qdrant.path)")])
    if cfg.embed.backend != "torch":
        problems += filter(None, [writable(art.resolve(cfg.embed.models_dir), "embed.models_dir")])
    if model:
        problems += filter(None, [model_problem(cfg.embed)])
    if problems:
        raise PreflightError("; ".join(problems))


def writable(path: Path, what: str) -> str | None:
    """None if ``path`` is (or can be created as) a folder we can write in; else the problem."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{what} {path}: {probe} is not a folder"
    try:  # a real write: access() says yes to root even on /proc or a read-only mount
        tempfile.TemporaryDirectory(dir=probe, prefix=".embedline-probe-").cleanup()
    except OSError as exc:
        return f"{what} {path} cannot be written ({exc.strerror or exc})"
    return None


def model_problem(params: EmbedParams) -> str | None:
    """None if the model and its tokenizer can be loaded here; else what is wrong. The model check
    is the provider's own (``ProviderSpec.preflight``); the tokenizer is loaded (no weights)."""
    from embedline.tasks.plugins import PROVIDERS
    from embedline.tasks.tokenize import TokenizerUnavailableError, load_token_counter

    spec = PROVIDERS.load(params.provider)
    problem = spec.preflight(params) if spec.preflight is not None else None
    if problem:
        return problem
    try:
        load_token_counter(params)
    except TokenizerUnavailableError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 tokenizer libraries raise OSError/ValueError/HF errors alike
        first = (str(exc).strip().splitlines() or [""])[0]
        return f"embed.tokenizer: the tokenizer of {params.tokenizer or params.model!r} cannot be loaded ({type(exc).__name__}: {first})"
    return None
