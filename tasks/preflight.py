"""Checks of everything that can be checked before any work (and before any paid embedding).

The typed config (:mod:`embedline.tasks.config`) validates values on their own; this module checks
them against the machine: the source folder exists, the artifact, cache and store folders can be
written, and the embedding model can be found (a local folder, the installed default model, a
Hugging Face snapshot on disk, or, when online, a model the hub knows). :func:`check_ready` raises
one :class:`PreflightError` (a :class:`ConfigError`) naming every problem and its param.
"""

from __future__ import annotations

import os
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


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def model_problem(params: EmbedParams) -> str | None:
    """None if the model (and, for an API, its tokenizer) can be loaded here; else what is wrong."""
    if params.provider == "openai":  # the model itself is checked by the first request
        from embedline.tasks.tokenize import TokenizerUnavailableError, load_token_counter

        try:
            load_token_counter(params)
        except TokenizerUnavailableError as exc:
            return str(exc)
        return None
    if params.provider != "sentence-transformers":
        return None  # the fake needs nothing
    from embedline.tasks.tokenize import resolve_model

    resolved = resolve_model(params.model)
    if Path(resolved).is_dir():
        return None
    if Path(params.model).expanduser().is_absolute() or params.model.startswith((".", "~")):
        return f"embed.model {params.model!r}: no such folder"
    candidates = [params.model] if "/" in params.model else [params.model, f"sentence-transformers/{params.model}"]
    from huggingface_hub import snapshot_download

    for repo in candidates:
        try:
            snapshot_download(repo, revision=params.revision, local_files_only=True)
            return None
        except Exception:  # noqa: BLE001 not on disk (or not a valid repo id; huggingface_hub raises several types): try the next name
            continue
    if _offline():
        return (f"embed.model {params.model!r} is not a local folder, not the installed default "
                "and not in the Hugging Face cache, and HF_HUB_OFFLINE is set")
    return _hub_problem(candidates, params.revision)


def _hub_problem(candidates: list[str], revision: str | None) -> str | None:
    from huggingface_hub import model_info
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    last = ""
    for repo in candidates:
        try:
            model_info(repo, revision=revision, timeout=15)
            return None
        except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
            last = f"the Hugging Face hub has no model {repo!r}" + (f" at {revision}" if revision else "")
            last += f" ({type(exc).__name__})"
        except Exception as exc:  # noqa: BLE001 network errors of any kind (httpx, requests, OSError): the hub cannot be reached
            return f"embed.model {candidates[0]!r} is not on disk and the Hugging Face hub cannot be reached ({type(exc).__name__})"
    return f"embed.model: {last}"
