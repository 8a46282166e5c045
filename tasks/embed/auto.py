"""``embed.backend: auto``: the fastest local backend that gives the torch fp32 vectors, per machine.

Calibrated once per model and machine, on real chunks when they exist (else on built-in texts):
every candidate (:data:`CANDIDATES`: ONNX Runtime fp32 / int8, OpenVINO fp32, which runs bf16 by
itself on CPUs with AVX512-BF16/AMX) embeds the same sample as torch fp32; a candidate is kept
only if its mean cosine to torch is >= :data:`MIN_MEAN_COSINE` (0.999), or, when a labelled set is
configured (``embed.auto_labelled_set``, a BEIR folder with a corpus), >= :data:`LABELLED_MIN_MEAN_COSINE`
(0.99) with an nDCG@10 loss vs torch fp32 of at most :data:`MAX_NDCG_LOSS` (0.005) on a bounded
sample of that set; the fastest kept one wins, torch when none is both accurate and faster. The record (speeds, agreements, choice, machine) is
written to ``<models_dir>/<model-hash>/calibration.json`` under a machine key, and the resolved
backend + precision replace ``auto`` in the config before anything is embedded, so the manifest
and the vector-set fingerprint name the backend that made the vectors.

FACTS (this machine kind): ONNX int8 has mean cosine ~0.990-0.993 (rejected by the 0.999 rule);
OpenVINO/ONNX fp32 agree at ~1.0 and are 1.0-1.5x torch without AVX512-BF16, OpenVINO ~3.4x with it.
"""

from __future__ import annotations

import dataclasses
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
from embedline.tasks.embed import registry

log = logging.getLogger(__name__)

MIN_MEAN_COSINE = 0.999
LABELLED_MIN_MEAN_COSINE = 0.99  # with a labelled set: kept if retrieval quality holds
MAX_NDCG_LOSS = 0.005
LABELLED_MAX_DOCS = 1500  # bounded: the labelled check embeds this many documents per backend
LABELLED_MAX_QUERIES = 300
SAMPLE_TEXTS = 64
# how the candidates run (part of the machine key: a change re-calibrates): "onnx-per-text" since
# ONNX Runtime on the CPU runs texts one per call in parallel (providers/onnx_backend.py)
RUNNERS = "onnx-per-text"
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
    ndcg_loss: float | None = None  # nDCG@10 of torch fp32 minus this one's, on the labelled set


def accurate(t: Trial, min_mean_cosine: float = MIN_MEAN_COSINE) -> bool:
    """The agreement rule: mean cosine >= 0.999, or >= 0.99 with <= 0.005 nDCG@10 loss measured."""
    if t.error is not None:
        return False
    if t.mean_cosine >= min_mean_cosine:
        return True
    return (t.mean_cosine >= LABELLED_MIN_MEAN_COSINE and t.ndcg_loss is not None
            and t.ndcg_loss <= MAX_NDCG_LOSS)


def choose(trials: Sequence[Trial], min_mean_cosine: float = MIN_MEAN_COSINE) -> Trial:
    """The fastest accurate trial; torch fp32 (the first trial) unless a candidate beats it."""
    torch = next(t for t in trials if t.backend == "torch")
    ok = [t for t in trials if t.backend != "torch" and accurate(t, min_mean_cosine)
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
    raw = f"{platform.machine()}|{model}|{os.cpu_count()}|{flags}|{'|'.join(versions)}|{RUNNERS}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _record_path(params: EmbedParams) -> Path | None:
    from embedline.tasks.embed.providers.sentence_transformers import _local_dir, export_dir

    local = _local_dir(params)
    return None if local is None else export_dir(local, params) / "calibration.json"


def _sample_texts(art: Artifacts | None, n: int = SAMPLE_TEXTS) -> tuple[list[str], str]:
    if art is not None and art.chunks.exists() and any(art.chunks.rglob("*.parquet") if art.chunks.is_dir() else [1]):
        import pyarrow.parquet as pq

        table = pq.read_table(art.chunks, columns=["embed_text"])  # one file or a folder of shards
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


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _qrels(root: Path) -> dict[str, dict[str, int]]:
    """``qrels/test.tsv`` (else the only .tsv): query id -> doc id -> grade (header skipped)."""
    files = sorted((root / "qrels").glob("*.tsv"))
    path = next((f for f in files if f.stem == "test"), files[0] if len(files) == 1 else None)
    if path is None:
        raise FileNotFoundError(f"{root}/qrels: no test.tsv (or single .tsv) file")
    out: dict[str, dict[str, int]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) == 3 and parts[2].strip().lstrip("-").isdigit():
            out.setdefault(parts[0].strip(), {})[parts[1].strip()] = int(parts[2])
    return out


def _labelled_sample(root: str) -> tuple[list[str], list[str], list[str], dict[str, dict[str, int]]]:
    """A bounded sample of a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/``; read here,
    not through tasks/evaluation, which the embed stage does not depend on): judged documents first,
    then others up to :data:`LABELLED_MAX_DOCS`; queries with a judged document in the sample (at
    most :data:`LABELLED_MAX_QUERIES`). Returns doc ids, doc texts, query texts, qrels by query."""
    folder = Path(root)
    qrels_all = _qrels(folder)
    queries = {str(q["_id"]): str(q.get("text") or "") for q in _jsonl(folder / "queries.jsonl")}
    qids = sorted(q for q in queries if any(g > 0 for g in qrels_all.get(q, {}).values()))[:LABELLED_MAX_QUERIES]
    judged = {d for q in qids for d in qrels_all[q]}
    docs: dict[str, str] = {}
    others: dict[str, str] = {}
    for obj in _jsonl(folder / "corpus.jsonl"):
        did, title, text = str(obj["_id"]), str(obj.get("title") or "").strip(), str(obj.get("text") or "")
        joined = f"{title}\n\n{text}" if title else text  # as BEIR (and tasks/evaluation) join them
        if did in judged:
            docs[did] = joined
        elif len(others) < LABELLED_MAX_DOCS:
            others[did] = joined
    for did, text in others.items():
        if len(docs) >= LABELLED_MAX_DOCS:
            break
        docs[did] = text
    ids = list(docs)[:LABELLED_MAX_DOCS]
    kept = set(ids)
    qids = [q for q in qids if any(d in kept and g > 0 for d, g in qrels_all[q].items())]
    qrels = {q: {d: g for d, g in qrels_all[q].items() if d in kept} for q in qids}
    return ids, [docs[d] for d in ids], [queries[q] for q in qids], qrels


def _ndcg10(ranked: list[str], judged: dict[str, int]) -> float:
    def dcg(gains: list[int]) -> float:
        return sum(g / np.log2(i + 2) for i, g in enumerate(gains))

    ideal = dcg(sorted((g for g in judged.values() if g > 0), reverse=True)[:10])
    return dcg([max(judged.get(d, 0), 0) for d in ranked[:10]]) / ideal if ideal > 0 else 0.0


def labelled_ndcg(encode: Callable[[list[str]], np.ndarray], sample: tuple[Any, ...]) -> float:
    """Mean nDCG@10 of exact cosine search with ``encode`` over the labelled sample."""
    ids, docs, queries, qrels = sample
    d = np.asarray(encode(docs), dtype=np.float32)
    q = np.asarray(encode(queries), dtype=np.float32)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    top = np.argsort(-(q @ d.T), axis=1)[:, :10]
    scores = [_ndcg10([ids[j] for j in row], qrels[qid]) for row, qid in zip(top, qrels, strict=True)]
    return float(np.mean(scores)) if scores else 0.0


class _Labelled:
    """The optional labelled check: torch fp32's nDCG@10 computed once, lazily (only when a
    candidate lands between the two cosine thresholds)."""

    def __init__(self, root: str | None, ref: Callable[[list[str]], np.ndarray]):
        self.root, self.ref = root, ref
        self._sample: tuple[Any, ...] | None = None
        self._ref_ndcg: float | None = None

    def loss(self, trial: Trial, encode: Callable[[list[str]], np.ndarray]) -> float | None:
        if self.root is None or trial.mean_cosine >= MIN_MEAN_COSINE or trial.mean_cosine < LABELLED_MIN_MEAN_COSINE:
            return None
        if self._sample is None:
            self._sample = _labelled_sample(self.root)
            self._ref_ndcg = labelled_ndcg(self.ref, self._sample)
        return round(float(self._ref_ndcg or 0.0) - labelled_ndcg(encode, self._sample), 5)


def measure(params: EmbedParams, texts: list[str], candidates: Sequence[tuple[str, str]] = CANDIDATES) -> list[Trial]:
    """Time torch fp32 and each candidate on ``texts``; agreement = cosine to torch per text (and,
    with ``embed.auto_labelled_set``, the nDCG@10 loss of a candidate between 0.99 and 0.999)."""
    base = params.model_copy(update={"backend": "torch", "precision": "fp32"})
    ref_emb: Any = registry.get_embedder(base)
    ref_encode = functools.partial(_encode, ref_emb, params.batch_size)
    ref, ref_speed = _timed(ref_encode, texts)
    trials = [Trial("torch", "fp32", round(ref_speed, 2), 1.0, 1.0)]
    labelled = _Labelled(params.auto_labelled_set, ref_encode)
    for backend, precision in candidates:
        try:
            emb: Any = registry.get_embedder(params.model_copy(update={"backend": backend, "precision": precision}))
            encode = functools.partial(_encode, emb, params.batch_size)
            vecs, speed = _timed(encode, texts)
        except Exception as exc:  # noqa: BLE001 a backend that does not install/export/compile here is no candidate
            trials.append(Trial(backend, precision, 0.0, 0.0, 0.0, f"{type(exc).__name__}: {exc}"[:300]))
            continue
        cos = np.sum(ref * vecs, axis=1)
        trial = Trial(backend, precision, round(speed, 2), round(float(cos.mean()), 6), round(float(cos.min()), 6))
        trials.append(dataclasses.replace(trial, ndcg_loss=labelled.loss(trial, encode)))
    return trials


def record_key(params: EmbedParams) -> str:
    """Machine key, plus the labelled set when one is configured (it can change the answer)."""
    key = machine_key()
    return f"{key}+{Path(params.auto_labelled_set).name}" if params.auto_labelled_set else key


def calibrate(params: EmbedParams, art: Artifacts | None = None, *,
              measure_fn: Callable[[EmbedParams, list[str]], list[Trial]] | None = None) -> dict[str, Any]:
    """Measure, choose and record (once per model and machine; the record is reused)."""
    path = _record_path(params)
    key = record_key(params)
    known = recorded(params)
    if known is not None:
        return known
    t0 = time.perf_counter()
    texts, source = _sample_texts(art)
    trials = (measure_fn or measure)(params, texts)
    best = choose(trials)
    record = {
        "backend": best.backend, "precision": best.precision, "machine": key, "sample": source,
        "texts": len(texts), "min_mean_cosine": MIN_MEAN_COSINE,
        "labelled_set": params.auto_labelled_set,
        "speedup": round(best.texts_per_second / max(trials[0].texts_per_second, 1e-9), 3),
        "mean_cosine": best.mean_cosine, "min_cosine": best.min_cosine, "ndcg_loss": best.ndcg_loss,
        "trials": [asdict(t) for t in trials],
        "calibration_seconds": round(time.perf_counter() - t0, 2),  # exports included (once per model)
        "loadavg_1m": round(os.getloadavg()[0], 2),  # timings on a busy machine are noisier
    }
    log.warning("embed.backend=auto: calibrated in %.1f s on %d %s texts: %s/%s (x%.2f torch fp32, mean "
                "cosine %.6f); recorded in %s", record["calibration_seconds"], len(texts), source,
                best.backend, best.precision, record["speedup"], best.mean_cosine, path)
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


def choice_for(params: EmbedParams) -> dict[str, Any] | None:
    """How ``embed.backend=auto`` chose these (resolved) params, for the manifest: deterministic
    facts only (the rule, the agreement, the sample); timings go to the stage stats. None when the
    backend was set explicitly."""
    rec = params.auto_choice
    if rec is None:
        return None
    keys = ("backend", "precision", "machine", "sample", "texts", "min_mean_cosine", "mean_cosine",
            "min_cosine", "ndcg_loss", "labelled_set")
    return {"requested": "auto", **{k: rec.get(k) for k in keys}}


def run_facts_for(params: EmbedParams) -> dict[str, Any]:
    """What the calibration cost and gained (flat scalars for the stage stats and logs)."""
    rec = params.auto_choice
    if rec is None:
        return {}
    return {"auto_speedup": rec.get("speedup"), "auto_calibration_seconds": rec.get("calibration_seconds")}


def resolve_params(params: EmbedParams, art: Artifacts | None = None, *, calibrate_now: bool = True) -> Any:
    """``params`` with ``backend=auto`` replaced by the calibrated choice (the record attached),
    ``torch`` for providers without local backends. With ``calibrate_now=False``: None when this
    model and machine have no record yet."""
    if params.backend != "auto":
        return params
    from embedline.tasks.embed.protocol import Capability
    if not registry.provider_spec(params.provider).has(Capability.LOCAL_BACKENDS):
        return params.model_copy(update={"backend": "torch"})
    if calibrate_now:
        record: dict[str, Any] | None = calibrate(params, art)
    else:
        record = recorded(params)
        if record is None:
            return None
    assert record is not None
    embed = params.model_copy(update={"backend": record["backend"], "precision": record["precision"]})
    embed._auto_choice = record  # rides along (never validated from params, not in model_dump)
    return embed


def recorded(params: EmbedParams) -> dict[str, Any] | None:
    """The calibration record of this model and machine, if there is one (measures nothing)."""
    path = _record_path(params)
    if path is None or not path.is_file():
        return None
    rec = json.loads(path.read_text()).get(record_key(params))
    return dict(rec) if rec is not None else None


def resolve_auto(cfg: Config, art: Artifacts | None = None) -> Config:
    """``cfg`` with ``embed.backend=auto`` replaced by the calibrated backend and precision (API
    and fake providers: ``torch``, the field does not apply to them). Other configs unchanged."""
    if cfg.embed.backend != "auto":
        return cfg
    return cfg.model_copy(update={"embed": resolve_params(cfg.embed, art)})


registry.AUTO_RESOLVER = resolve_params
