"""``embed.backend: auto``: the fastest local backend that gives the torch fp32 vectors, per machine.

Calibrated once per model and machine, on real chunks when they exist (else on built-in texts):
every candidate (:data:`CANDIDATES`: ONNX Runtime fp32 / int8, OpenVINO fp32, which runs bf16 by
itself on CPUs with AVX512-BF16/AMX) embeds the same sample as torch fp32; a candidate is kept
only if its mean cosine to torch is >= :data:`MIN_MEAN_COSINE` (0.999); the fastest kept one wins,
torch when none is both accurate and faster. The record (speeds, agreements, choice, machine) is
written to ``<models_dir>/<model-hash>/calibration.json`` under a machine key, and the resolved
backend + precision replace ``auto`` in the config before anything is embedded, so the manifest
and the vector-set fingerprint name the backend that made the vectors.

FACTS (this machine kind): ONNX int8 has mean cosine ~0.990-0.993 (rejected by the 0.999 rule);
OpenVINO/ONNX fp32 agree at ~1.0 and are 1.0-1.5x torch without AVX512-BF16, OpenVINO ~3.4x with it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, EmbedParams

log = logging.getLogger(__name__)

MIN_MEAN_COSINE = 0.999
SAMPLE_TEXTS = 64
MIN_SPEEDUP = 1.05  # a candidate must beat torch by more than timing noise
CANDIDATES: tuple[tuple[str, str], ...] = (("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"))
FALLBACK_TEXTS = [
    f"Sample passage {i}: the embedding backend is calibrated on text of realistic length, with "
    "names, numbers like 3.14 and 2048, and ordinary sentences about science, cooking and networks."
    * (1 + i % 4)
    for i in range(SAMPLE_TEXTS)
]


@dataclass(frozen=True)
class Trial:
    backend: str
    precision: str
    texts_per_second: float
    mean_cosine: float  # vs torch fp32 (1.0 for torch itself)
    min_cosine: float
    error: str | None = None


def choose(trials: Sequence[Trial], min_mean_cosine: float = MIN_MEAN_COSINE) -> Trial:
    """The fastest accurate trial; torch fp32 (the first trial) unless a candidate beats it."""
    torch = next(t for t in trials if t.backend == "torch")
    ok = [t for t in trials if t.backend != "torch" and t.error is None and t.mean_cosine >= min_mean_cosine
          and t.texts_per_second >= torch.texts_per_second * MIN_SPEEDUP]
    return max(ok, key=lambda t: t.texts_per_second) if ok else torch


def machine_key() -> str:
    """CPU model, core count, the instruction sets that change the answer, and runtime versions."""
    flags = ""
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = " ".join(sorted(f for f in line.split(":", 1)[1].split()
                                        if f.startswith(("avx512", "amx", "avx2", "avx_vnni"))))
                break
    except OSError:
        pass
    versions = []
    for mod in ("torch", "onnxruntime", "openvino"):
        try:
            from importlib.metadata import version

            versions.append(f"{mod}={version(mod)}")
        except Exception:  # noqa: BLE001 not installed: not a candidate on this machine
            versions.append(f"{mod}=none")
    raw = f"{platform.machine()}|{model}|{os.cpu_count()}|{flags}|{'|'.join(versions)}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _record_path(params: EmbedParams) -> Path | None:
    from embedline.tasks.embed.providers.sentence_transformers import _local_dir, export_dir

    local = _local_dir(params)
    return None if local is None else export_dir(local, params) / "calibration.json"


def _sample_texts(art: Artifacts | None, n: int = SAMPLE_TEXTS) -> tuple[list[str], str]:
    if art is not None and art.chunks.is_file():
        import pyarrow.parquet as pq

        table = pq.read_table(art.chunks, columns=["embed_text"])
        texts = [t for t in table.column(0).to_pylist() if t and t.strip()]
        if texts:
            step = max(1, len(texts) // n)
            return texts[::step][:n], "chunks"
    return FALLBACK_TEXTS[:n], "built-in"


def _timed(encode: Callable[[list[str]], np.ndarray], texts: list[str]) -> tuple[np.ndarray, float]:
    encode(texts[:4])  # warm-up (graph compilation, allocator)
    t0 = time.perf_counter()
    vecs = np.asarray(encode(texts), dtype=np.float32)
    seconds = max(time.perf_counter() - t0, 1e-9)
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    return vecs, len(texts) / seconds


def _encode(emb: Any, batch_size: int, texts: list[str]) -> np.ndarray:
    return np.asarray(emb.backend.encode(texts, batch_size))


def measure(params: EmbedParams, texts: list[str], candidates: Sequence[tuple[str, str]] = CANDIDATES) -> list[Trial]:
    """Time torch fp32 and each candidate on ``texts``; agreement = cosine to torch per text."""
    from embedline.tasks.embed.registry import get_embedder

    base = params.model_copy(update={"backend": "torch", "precision": "fp32"})
    ref_emb: Any = get_embedder(base)
    ref, ref_speed = _timed(lambda t: ref_emb.backend.encode(t, params.batch_size), texts)
    trials = [Trial("torch", "fp32", round(ref_speed, 2), 1.0, 1.0)]
    for backend, precision in candidates:
        try:
            emb: Any = get_embedder(params.model_copy(update={"backend": backend, "precision": precision}))
            vecs, speed = _timed(functools.partial(_encode, emb, params.batch_size), texts)
        except Exception as exc:  # noqa: BLE001 a backend that does not install/export/compile here is no candidate
            trials.append(Trial(backend, precision, 0.0, 0.0, 0.0, f"{type(exc).__name__}: {exc}"[:300]))
            continue
        cos = np.sum(ref * vecs, axis=1)
        trials.append(Trial(backend, precision, round(speed, 2), round(float(cos.mean()), 6),
                            round(float(cos.min()), 6)))
    return trials


def calibrate(params: EmbedParams, art: Artifacts | None = None, *,
              measure_fn: Callable[[EmbedParams, list[str]], list[Trial]] | None = None) -> dict[str, Any]:
    """Measure, choose and record (once per model and machine; the record is reused)."""
    path = _record_path(params)
    key = machine_key()
    if path is not None and path.is_file():
        records = json.loads(path.read_text())
        if key in records:
            return dict(records[key])
    texts, source = _sample_texts(art)
    trials = (measure_fn or measure)(params, texts)
    best = choose(trials)
    record = {
        "backend": best.backend, "precision": best.precision, "machine": key, "sample": source,
        "texts": len(texts), "min_mean_cosine": MIN_MEAN_COSINE,
        "speedup": round(best.texts_per_second / max(trials[0].texts_per_second, 1e-9), 3),
        "mean_cosine": best.mean_cosine, "trials": [asdict(t) for t in trials],
        "loadavg_1m": round(os.getloadavg()[0], 2),  # timings on a busy machine are noisier
    }
    log.warning("embed.backend=auto: %s/%s (x%.2f torch fp32, mean cosine %.6f) on this machine",
                best.backend, best.precision, record["speedup"], best.mean_cosine)
    if path is not None:
        from filelock import FileLock

        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            records = json.loads(path.read_text()) if path.is_file() else {}
            records[key] = record
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(records, indent=2, sort_keys=True))
            os.replace(tmp, path)
    return record


def resolve_auto(cfg: Config, art: Artifacts | None = None) -> Config:
    """``cfg`` with ``embed.backend=auto`` replaced by the calibrated backend and precision (API
    and fake providers: ``torch``, the field does not apply to them). Other configs unchanged."""
    if cfg.embed.backend != "auto":
        return cfg
    from embedline.tasks.embed.protocol import Capability
    from embedline.tasks.embed.registry import provider_spec

    if not provider_spec(cfg.embed.provider).has(Capability.LOCAL_BACKENDS):
        chosen = {"backend": "torch", "precision": cfg.embed.precision}
    else:
        record = calibrate(cfg.embed, art)
        chosen = {"backend": record["backend"], "precision": record["precision"]}
    return cfg.model_copy(update={"embed": cfg.embed.model_copy(update=chosen)})
