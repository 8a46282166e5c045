"""Query vectors without torch: the exported ONNX graph + the ``tokenizers`` library.

A cold ``embedline search`` used to spend almost all of its time importing torch and
sentence-transformers and loading the model to embed one query. When the ingest model is a local
sentence-transformers model and its exported ONNX graph is on disk (``<models_dir>/<model-hash>/``,
written by ``embed.backend=onnx`` or by :func:`prepare_query_graph` after a torch ingest), the query
is embedded here instead: Rust tokenizer, onnxruntime, the model's pooling and normalisation in
numpy. Nothing here imports torch or transformers.

Which graph, and when it may be used (vectors must be those of the ingest model):

* ``backend=onnx``: the very graph the ingest used (``onnx-<precision>.onnx``);
* ``backend=torch`` (fp32) or ``openvino`` (fp32): ``onnx-fp32.onnx``, only if
  ``query-check-<backend>-<precision>.json`` next to it records a measured agreement with that
  backend of cosine >= 1 - 1e-5 (:data:`AGREEMENT`; OpenVINO running bf16 on an AVX512-BF16 CPU
  does not pass, and keeps its own embedder);
* anything else (openvino int8, API providers, models that are not on disk): the normal embedder.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from embedline.tasks.config import EmbedParams
from embedline.tasks.embed.providers.onnx_backend import PerTextEncoder as QueryEncoder
from embedline.tasks.embed.providers.onnx_backend import cores as _cores

log = logging.getLogger(__name__)

AGREEMENT = 1e-5  # torch vs exported graph: 1 - cosine must stay below this
CHECKED = {("torch", "fp32"), ("openvino", "fp32")}  # backends whose query path needs a check
PROBES = [
    "how do I search the vector store?",
    "A longer probe sentence about galaxies, telescopes and the light of distant stars.",
    "résumé naïve café — unicode, numbers 12345 and punctuation!?",
]

_encoders: dict[tuple[object, ...], QueryEncoder | None] = {}
_lock = threading.Lock()


# ---- which graph -----------------------------------------------------------------------------------
def _applicable(params: EmbedParams) -> bool:
    if os.environ.get("EMBEDLINE_QUERY_ONNX", "1") == "0":  # escape hatch: always use the embedder
        return False
    if not _local_backends(params):
        return False
    return params.backend == "onnx" or (params.backend, params.precision) in CHECKED


def _local_backends(params: EmbedParams) -> bool:
    from embedline.tasks.embed.protocol import Capability
    from embedline.tasks.embed.registry import provider_spec

    return provider_spec(params.provider).has(Capability.LOCAL_BACKENDS)


def check_file(folder: Path, params: EmbedParams) -> Path:
    return folder / f"query-check-{params.backend}-{params.precision}.json"


def _model_dir(params: EmbedParams) -> str | None:
    from embedline.tasks.embed.providers.sentence_transformers import _local_dir

    local = _local_dir(params)
    if local is None or not (Path(local) / "tokenizer.json").is_file():
        return None
    return local


def graph_for(params: EmbedParams, model_path: str) -> Path | None:
    """The exported graph whose vectors are the ingest model's, if it is on disk."""
    from embedline.tasks.embed.providers.sentence_transformers import export_dir

    folder = export_dir(model_path, params)
    if params.backend == "onnx":
        graph = folder / f"onnx-{params.precision}.onnx"
        return graph if graph.is_file() else None
    graph = folder / "onnx-fp32.onnx"
    check = check_file(folder, params)
    if not (graph.is_file() and check.is_file()):
        return None
    try:
        recorded = json.loads(check.read_text())
    except (OSError, ValueError):
        return None
    return graph if recorded.get("ok") is True else None


def light_encoder(params: EmbedParams, *, bulk: bool = False) -> QueryEncoder | None:
    """A process-wide :class:`QueryEncoder` for ``params``, or None (use the normal embedder).
    ``bulk``: one for many texts (every core) instead of one query (one thread)."""
    if not _applicable(params):
        return None
    from embedline.tasks.embed.registry import embedder_key

    key = (*embedder_key(params), bulk)
    if key in _encoders:
        return _encoders[key]
    with _lock:
        if key not in _encoders:
            _encoders[key] = _build(params, workers=_cores() if bulk else 1)
        return _encoders[key]


def _build(params: EmbedParams, workers: int = 1) -> QueryEncoder | None:
    model_path = _model_dir(params)
    if model_path is None:
        return None
    graph = graph_for(params, model_path)
    if graph is None:
        return None
    try:
        return QueryEncoder(model_path, graph, workers=workers)
    except Exception as exc:  # noqa: BLE001 a broken/unsupported graph or model folder: the embedder still works
        log.info("fast query path unavailable (%s: %s); using the embedder", type(exc).__name__, exc)
        return None


def embed_query(cfg_embed: EmbedParams, text: str) -> np.ndarray:
    """The vector of a search query: query prompt, dimensions and normalisation applied.

    Through the exported graph of the ingest model when :func:`light_encoder` allows it (no torch
    import), else the configured embedder. Imports neither the embed stage nor pyarrow."""
    from embedline.tasks.embed.protocol import (
        EmbedInputError,
        truncate_dims,
        validate_vectors,
        with_prompt,
    )
    from embedline.tasks.embed.registry import get_embedder, peek_embedder

    if not text.strip():
        raise EmbedInputError("empty query")
    fast = None if peek_embedder(cfg_embed) is not None else light_encoder(cfg_embed)
    if fast is not None:  # the exported graph of the ingest model: no torch import
        raw = fast.encode(with_prompt([text], cfg_embed.query_prompt))
        vec = truncate_dims(raw, cfg_embed.dimensions, cfg_embed.normalize)
        return validate_vectors(vec, 1, None, f"onnx-query:{cfg_embed.model}")[0]
    emb = get_embedder(cfg_embed)
    vec = emb.embed(with_prompt([text], cfg_embed.query_prompt))
    return validate_vectors(vec, 1, None, emb.name)[0]


def clear_encoders() -> None:
    with _lock:
        _encoders.clear()


# ---- after a torch ingest: export the graph once and check it -------------------------------------
def prepare_query_graph(params: EmbedParams, embedder: Any = None) -> dict[str, Any] | None:
    """Export the fp32 ONNX graph of a torch- or OpenVINO-backed local model (once per model and
    machine) and record its agreement with that backend on :data:`PROBES`, so later searches can
    skip torch/OpenVINO.

    Returns the recorded check (or None when not applicable). Never raises: the fast path is an
    optimisation, a failure only leaves search on the torch embedder.
    """
    if not _local_backends(params) or (params.backend, params.precision) not in CHECKED:
        return None
    try:
        return _prepare(params, embedder)
    except Exception as exc:  # noqa: BLE001 export needs torch.onnx; any failure just disables the fast path
        log.warning("could not prepare the fast query graph (%s: %s); search uses torch",
                    type(exc).__name__, exc)
        return None


def _prepare(params: EmbedParams, embedder: Any) -> dict[str, Any] | None:
    from embedline.tasks.embed.providers.onnx_backend import ensure_onnx
    from embedline.tasks.embed.providers.sentence_transformers import export_dir

    model_path = _model_dir(params)
    if model_path is None:
        return None
    folder = export_dir(model_path, params)
    check = check_file(folder, params)
    if check.is_file() and (folder / "onnx-fp32.onnx").is_file():
        recorded: dict[str, Any] = json.loads(check.read_text())
        return recorded
    graph = ensure_onnx(model_path, "fp32", folder)
    if embedder is None:
        from embedline.tasks.embed.registry import get_embedder

        embedder = get_embedder(params)
    ref = np.asarray(embedder.backend.encode(PROBES, len(PROBES)), dtype=np.float32)
    ref /= np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-12)
    got = QueryEncoder(model_path, graph).encode(PROBES)
    got /= np.maximum(np.linalg.norm(got, axis=1, keepdims=True), 1e-12)
    worst = float(np.min(np.sum(ref * got, axis=1)))
    result = {"ok": bool(1.0 - worst <= AGREEMENT), "min_cosine": worst, "probes": len(PROBES)}
    tmp = check.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, check)
    log.info("fast query graph %s: min cosine vs %s %.7f (%s)", graph, params.backend, worst,
             "used by search" if result["ok"] else "not used")
    return result
