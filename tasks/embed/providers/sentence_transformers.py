"""Local models through sentence-transformers (torch) or an exported ONNX graph (onnx, openvino).

* The model is resolved with :func:`embedline.tasks.tokenize.resolve_model` (the bundled all-MiniLM-L6-v2
  offline) and loaded lazily, once per process (:func:`embedline.tasks.embed.get_embedder` caches this object).
* Device: ``embed.device=auto`` picks cuda > mps > cpu.
* Batching: sentence-transformers sorts a call's texts by length before cutting batches (checked in
  6.2: ``SentenceTransformer._inference`` argsorts by ``_input_length``); the exported backends
  do the same by token count.
* Prompts are prepended by the caller (:func:`embedline.tasks.embed.with_prompt`); a model's own
  ``default_prompt_name`` is switched off so that prompts come from params only.
* ``embed.dimensions`` truncates (Matryoshka) and ``embed.normalize`` re-normalises afterwards.
* Only out-of-memory is caught: the batch is halved and retried (kept for the rest of the process).
* ``revision`` = sha256 over the model folder's config, tokenizer and weight files (README and
  dot-files excluded), cached per (path, sizes, mtimes).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from embedline.tasks.config import EmbedParams
from embedline.tasks.embed.protocol import Capability, EmbedError, ProviderSpec, truncate_dims
from embedline.tasks.embed.requests import fixed_groups
from embedline.tasks.tokenize import hf_counter, model_window, resolve_model

log = logging.getLogger(__name__)


# ---- revision (identity of the weights) -------------------------------------------------------------
_SKIP_DIRS = {"onnx", "openvino", ".git", ".cache"}


def _model_files(root: Path) -> list[Path]:
    files = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or any(part in _SKIP_DIRS or part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in {".md", ".lock"}:
            continue
        files.append(p)
    return files


@functools.lru_cache(maxsize=16)
def _hash_files(signature: tuple[tuple[str, int, int], ...], root: str) -> str:
    h = hashlib.sha256()
    for rel, size, _mtime in signature:
        fh = hashlib.sha256()
        with open(Path(root) / rel, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                fh.update(block)
        h.update(f"{rel}\0{size}\0{fh.hexdigest()}\n".encode())
    return h.hexdigest()


def local_model_revision(path: str | Path) -> str:
    """sha256 over a model folder's files (see module docstring); cached by stat, in-process and
    across processes (:func:`_revision_memo`): every stage process and every search needs it, and
    hashing a 90 MB model costs 0.1-0.3 s each time."""
    root = Path(path)
    sig = tuple(
        (p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
        for p in _model_files(root)
    )
    if not sig:
        raise EmbedError(f"model folder {root} holds no model files")
    memo = _revision_memo(sig, str(root))
    if memo is not None:
        try:
            known = memo.read_text().strip()
        except OSError:
            known = ""
        if len(known) == 64:
            return known
    revision = _hash_files(sig, str(root))
    if memo is not None:
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
            tmp.write_text(revision + "\n")
            tmp.replace(memo)
        except OSError:  # a read-only home: hash again next time
            pass
    return revision


def _revision_memo(signature: tuple[tuple[str, int, int], ...], root: str) -> Path | None:
    """A file naming the revision of one exact folder state (root, file names, sizes, mtimes), in
    ``$EMBEDLINE_CACHE_HOME`` (default ``$XDG_CACHE_HOME/embedline`` or ``~/.cache/embedline``);
    ``EMBEDLINE_CACHE_HOME=off`` disables it."""
    home = os.environ.get("EMBEDLINE_CACHE_HOME")
    if home == "off":
        return None
    base = Path(home) if home else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "embedline"
    key = hashlib.sha256(json.dumps([root, signature]).encode()).hexdigest()[:32]
    return base / "model-revisions" / key


def _local_dir(params: EmbedParams) -> str | None:
    """A local folder for the model: a path, the bundled default, or a hub snapshot: from the
    local cache, else downloaded now (unless offline). Downloading here, before anything asks for
    the revision, keeps the revision (hence the cache namespace and the fingerprint) the same
    before and after the model is first loaded."""
    resolved = resolve_model(params.model)
    if Path(resolved).is_dir():
        return resolved
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a dependency of sentence-transformers
        return None
    for local_only in (True, False):
        try:
            return str(snapshot_download(params.model, revision=params.revision, local_files_only=local_only))
        except Exception as exc:  # noqa: BLE001 hub/OSError/ValueError variants all mean "not available": the model load reports it
            log.debug("hub snapshot of %s (local_files_only=%s): %s", params.model, local_only, exc)
    return None


def revision_for(params: EmbedParams) -> str:
    """The model revision without loading the model (hashes files; cheap after the first call).
    A hub model not on disk yet is downloaded first (see :func:`_local_dir`)."""
    local = _local_dir(params)
    if local is not None:
        return local_model_revision(local)
    return f"hf:{params.model}@{params.revision or 'unresolved'}"


# ---- backends -------------------------------------------------------------------------------------
class LocalBackend(Protocol):
    name: str
    dims: int  # native width before truncation
    max_seq_length: int  # the window the backend truncates to

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray: ...


def pick_device(requested: str) -> str:
    """cuda > mps > cpu for ``auto``; an explicit device is used as given."""
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def exported_device(params: EmbedParams) -> str:
    """``auto`` for the exported backends: cuda when ONNX Runtime has its CUDA provider, else cpu
    (OpenVINO runs on the CPU here)."""
    if params.device != "auto":
        return params.device
    if params.backend == "onnx":
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return "cuda"
    return "cpu"


class TorchBackend:
    name = "torch"

    def __init__(self, model_path: str, params: EmbedParams, device: str):
        if params.precision != "fp32":
            raise EmbedError(
                f"embed.precision={params.precision} needs embed.backend=onnx or openvino "
                "(the torch backend runs fp32)"
            )
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars: our own progress is enough
        local = Path(model_path).is_dir()
        model: Any = SentenceTransformer(
            str(model_path), device=device, revision=None if local else params.revision
        )
        self.model = model
        if getattr(self.model, "default_prompt_name", None):
            log.info("ignoring the model's default prompt; prompts come from embed.*_prompt")
            self.model.default_prompt_name = None
        get_dims = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dims, window = get_dims(), model.max_seq_length
        if dims is None:
            raise EmbedError(f"{model_path}: the model does not declare its embedding dimension")
        self.dims: int = int(dims)
        self.max_seq_length: int = int(window or 512)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = self.model.encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=False,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)


def _onnx(model_path: str, params: EmbedParams, device: str) -> LocalBackend:
    from embedline.tasks.embed.providers.onnx_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(model_path, params.precision, export_dir(model_path, params), device)


def _openvino(model_path: str, params: EmbedParams, device: str) -> LocalBackend:
    from embedline.tasks.embed.providers.onnx_backend import OpenVinoBackend

    return OpenVinoBackend(model_path, params.precision, export_dir(model_path, params), device)


BACKENDS: dict[str, Callable[[str, EmbedParams, str], LocalBackend]] = {
    "torch": TorchBackend,
    "onnx": _onnx,
    "openvino": _openvino,
}


def export_dir(model_path: str, params: EmbedParams) -> Path:
    """``<models_dir>/<model-hash>/``: where exported graphs of this exact model are cached."""
    return Path(params.models_dir).expanduser() / local_model_revision(model_path)[:16]


# ---- out-of-memory handling -------------------------------------------------------------------------
def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover
        pass
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "failed to allocate" in text)


# ---- the embedder -------------------------------------------------------------------------------------
class SentenceTransformerEmbedder:
    """A local model behind :class:`embedline.tasks.embed.Embedder` (backend chosen by ``embed.backend``)."""

    def __init__(self, params: EmbedParams):
        self.params = params
        self.name = f"sentence-transformers:{params.model}"
        self.model_path = resolve_model(params.model)
        local = _local_dir(params)
        if local is not None:
            self.model_path = local
        elif params.backend != "torch":
            raise EmbedError(
                f"embed.backend={params.backend} needs the model on disk; {params.model!r} is not "
                "a local folder nor in the Hugging Face cache (load it once with backend=torch)"
            )
        # exported backends pick their device without importing torch (an ingest on them needs none)
        self.device = pick_device(params.device) if params.backend == "torch" else exported_device(params)
        self.batch_size = params.batch_size
        self._lock = threading.Lock()  # backends (OpenVINO requests, tokenizers) are not re-entrant
        try:
            factory = BACKENDS[params.backend]
        except KeyError:
            raise EmbedError(
                f"unknown embed.backend {params.backend!r}; valid: {', '.join(BACKENDS)}"
            ) from None
        self.backend: LocalBackend = factory(self.model_path, params, self.device)
        self.revision = revision_for(params)  # after loading: a hub model is now in the cache
        native = int(self.backend.dims)
        if params.dimensions is not None and params.dimensions > native:
            raise EmbedError(f"embed.dimensions={params.dimensions} exceeds {params.model}'s {native}")
        self.dims = int(params.dimensions or native)
        window = self.backend.max_seq_length or model_window(self.model_path)
        self.max_tokens = int(params.max_seq_tokens or window or 512)

    def plan_groups(self, texts: list[str]) -> list[list[int]]:
        """Cache commits of ``batch_size`` x the backend's ``group_batches`` texts (1 unless the
        backend says otherwise). Every ``embed`` call ends on a barrier; OpenVINO keeps its infer
        requests busy only within a call, so it takes several batches per call (see its class)."""
        size = self.batch_size * max(1, int(getattr(self.backend, "group_batches", 1)))
        return fixed_groups(len(texts), size)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        with self._lock:
            raw = self._encode_with_oom_backoff(texts)
        return truncate_dims(raw, self.params.dimensions, self.params.normalize)

    def _encode_with_oom_backoff(self, texts: list[str]) -> np.ndarray:
        while True:
            try:
                return self.backend.encode(texts, self.batch_size)
            except Exception as exc:
                if not is_oom(exc) or self.batch_size <= 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                log.warning("out of memory: embed batch size halved to %d", self.batch_size)
                _free_accelerator_memory()

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model_path": self.model_path,
            "device": self.device,
            "backend": self.backend.name,
            "batch_size": self.batch_size,
        }
        precision = getattr(self.backend, "inference_precision", None)
        if precision:
            out["inference_precision"] = precision
        return out


def _free_accelerator_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


# ---- preflight ----------------------------------------------------------------------------------
def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def model_problem(params: EmbedParams) -> str | None:
    """Preflight: None if the model is a local folder, the installed default, a Hugging Face
    snapshot on disk or (online) a model the hub knows; else what is wrong (loads no weights)."""
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


SPEC = ProviderSpec(
    name="sentence-transformers",
    factory=SentenceTransformerEmbedder,
    revision_for=revision_for,
    tokenizer_for=hf_counter,
    preflight=model_problem,
    capabilities=frozenset({Capability.LOCAL_BACKENDS, Capability.PLANS_REQUESTS}),
)
