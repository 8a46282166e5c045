"""ONNX Runtime and OpenVINO backends for local sentence-transformers models.

``sentence-transformers[onnx]`` does not install next to transformers 5 (optimum pins), so the
route here is the one measured to work (see FACTS.md):

1. export the Hugging Face transformer once with ``torch.onnx.export`` (eager attention, opset 17,
   dynamic batch and sequence axes), cached at ``<models_dir>/<model-hash>/onnx-fp32.onnx``;
2. int8: ``onnxruntime.quantization.quantize_dynamic`` (per-channel int8 weights) of that file ->
   ``onnx-int8.onnx``;
3. OpenVINO: the plain ``openvino`` package converts the exported ONNX to IR
   (``openvino-<precision>.xml``) and compiles it for the CPU;
4. inference re-implements the sentence-transformers pipeline in numpy: tokenise (truncating at
   the model's ``max_seq_length`` like sentence-transformers), length-sorted batches, the model's
   pooling (mean / cls / max from ``1_Pooling/config.json``) and its ``Normalize`` module.

Exports run under a file lock and are written atomically, so concurrent processes export once.
Models whose pipeline has other modules (Dense, ...) are refused with a clear error: use torch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from embedline.tasks.embed.protocol import EmbedError
from embedline.tasks.vectors import l2_normalize

log = logging.getLogger(__name__)

_SUPPORTED_MODULES = {"Transformer", "Pooling", "Normalize"}
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


# ---- model pipeline description ---------------------------------------------------------------------
def read_pipeline(model_path: str) -> dict[str, Any]:
    """Pooling mode, normalisation, window and width of a sentence-transformers model folder."""
    root = Path(model_path)
    modules_file = root / "modules.json"
    if not modules_file.exists():
        raise EmbedError(f"{model_path}: no modules.json; the onnx/openvino backends need a local "
                         "sentence-transformers folder (use embed.backend=torch)")
    modules = json.loads(modules_file.read_text())
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    unsupported = [k for k in kinds if k not in _SUPPORTED_MODULES]
    if unsupported:
        raise EmbedError(
            f"{model_path}: modules {unsupported} are not supported by the onnx/openvino backends "
            "(only Transformer -> Pooling -> Normalize); use embed.backend=torch"
        )
    pooling_dir = next((m["path"] for m in modules if m["type"].endswith("Pooling")), None)
    if pooling_dir is None:
        raise EmbedError(f"{model_path}: no Pooling module; use embed.backend=torch")
    pcfg = json.loads((root / pooling_dir / "config.json").read_text())
    mode = _pooling_mode(pcfg)
    if mode is None:
        raise EmbedError(f"{model_path}: pooling {pcfg} not supported by onnx/openvino; use torch")
    return {
        "pooling": mode,
        "normalize": "Normalize" in kinds,
        "max_seq_length": _window(root),
        "dims": int(pcfg.get("embedding_dimension") or pcfg["word_embedding_dimension"]),
    }


def _pooling_mode(pcfg: dict[str, Any]) -> str | None:
    """mean / cls / max from a Pooling config: sentence-transformers >= 6 writes ``pooling_mode``
    (a name, or a list of them) and ``embedding_dimension``; older folders (the hub's models)
    carry one ``pooling_mode_*_token(s)`` flag each and ``word_embedding_dimension``."""
    named = pcfg.get("pooling_mode")
    if named is not None:
        modes = [named] if isinstance(named, str) else list(named)
        return modes[0] if len(modes) == 1 and modes[0] in ("mean", "cls", "max") else None
    for mode, flag in (("mean", "pooling_mode_mean_tokens"), ("cls", "pooling_mode_cls_token"),
                       ("max", "pooling_mode_max_tokens")):
        if pcfg.get(flag):
            return mode
    return None


def _window(root: Path) -> int:
    """The model's window: ``sentence_bert_config.json``'s ``max_seq_length`` (folders written by
    sentence-transformers < 6), else the tokenizer's ``model_max_length`` (what >= 6 saves), else 512."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        f = root / name
        value = json.loads(f.read_text()).get(key) if f.exists() else None
        if isinstance(value, int) and 0 < value < 1_000_000:  # HF writes a huge sentinel for "no limit"
            return value
    return 512


# ---- export (once, cached, locked) -------------------------------------------------------------------
def _export_onnx(model_path: str, out: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModel.from_pretrained(model_path, attn_implementation="eager").eval()
    sample = tok(["an example sentence", "a second, somewhat longer example sentence"],
                 padding=True, return_tensors="pt")
    names = [n for n in _INPUTS if n in sample]

    class _Wrapper(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(names, args, strict=True))).last_hidden_state

    wrapper = _Wrapper(model).eval()  # eval on the wrapper too: export restores its train flag
    axes = {n: {0: "batch", 1: "seq"} for n in [*names, "last_hidden_state"]}
    tmp = out.with_suffix(".tmp.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            tuple(sample[n] for n in names),
            str(tmp),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,
        )
    os.replace(tmp, out)


def _quantize_int8(src: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = out.with_suffix(".tmp.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic warns on the root logger about pre-processing
    try:
        # per-channel weights: mean cosine vs fp32 0.992 (per-tensor: 0.93) on MiniLM, same speed
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)
    os.replace(tmp, out)


def _locked_build(target: Path, build: Callable[[], None]) -> Path:
    if target.exists():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / ".export.lock")):
        if not target.exists():
            log.info("exporting %s (once; cached on disk)", target)
            build()
    return target


def ensure_onnx(model_path: str, precision: str, cache_dir: Path) -> Path:
    """Path of the exported (and, for int8, quantised) ONNX model, building it if needed."""
    fp32 = _locked_build(cache_dir / "onnx-fp32.onnx", lambda: _export_onnx(model_path, cache_dir / "onnx-fp32.onnx"))
    if precision == "fp32":
        return fp32
    if precision == "int8":
        out = cache_dir / "onnx-int8.onnx"
        return _locked_build(out, lambda: _quantize_int8(fp32, out))
    raise EmbedError(f"embed.precision={precision!r} is not supported by the onnx backend")


def ensure_openvino(model_path: str, precision: str, cache_dir: Path) -> Path:
    """Path of the OpenVINO IR converted from the exported ONNX model."""
    src = ensure_onnx(model_path, precision, cache_dir)
    xml = cache_dir / f"openvino-{precision}.xml"

    def build() -> None:
        import openvino as ov

        model = ov.convert_model(str(src))
        tmp = cache_dir / f"openvino-{precision}.tmp.xml"
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp, xml)

    return _locked_build(xml, build)


# ---- inference ---------------------------------------------------------------------------------------
def _rust_tokenizer(model_path: str, window: int) -> Any:
    """The model's ``tokenizer.json`` in ``tokenizers`` (truncating at ``window``, no padding), or
    None when the folder has none."""
    path = Path(model_path) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length=window)
    return tok


# Padded batches give each text a width of its own (its length rounded up to this multiple, never
# past the model window), whatever it is batched with. Measured on OpenVINO (bf16 on AVX512-BF16/AMX,
# all-MiniLM-L6-v2): at one padded width a text's vector is bit-identical alone, in a batch of 8 or
# of 16; across widths it moves by up to 1e-3 (49 of 187 length/width pairs). With the width taken
# from the longest text in the batch, 12 of 16 texts embedded alone differed from the same texts
# embedded in one batch (cosine >= 0.999995), so a vector depended on its batch, and a re-run that
# took some vectors from the embedding cache wrote other bytes than a fresh run on the same input.
PAD_MULTIPLE = 16


def padded_width(length: int, window: int | None) -> int:
    """The width a text of ``length`` tokens is always run at: ``length`` rounded up to
    :data:`PAD_MULTIPLE`, but not past ``window`` (the model's maximum sequence length)."""
    width = -(-length // PAD_MULTIPLE) * PAD_MULTIPLE
    return max(length, min(width, window)) if window else width


class _ExportedBackend:
    """Shared tokenise -> run -> pool -> normalise logic; subclasses provide ``_run``.

    Tokenising uses the model's ``tokenizer.json`` through the Rust ``tokenizers`` library (what
    transformers' fast tokenizer wraps: same ids, truncation at the model window), so an ingest on
    an exported backend imports neither torch nor transformers; a folder without ``tokenizer.json``
    falls back to ``AutoTokenizer``."""

    def __init__(self, model_path: str):
        self.pipeline = read_pipeline(model_path)
        self.max_seq_length = self.pipeline["max_seq_length"]
        self.dims = self.pipeline["dims"]
        self._fast = _rust_tokenizer(model_path, self.max_seq_length)
        self.tokenizer: Any = None
        if self._fast is None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(model_path)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def tokenize(self, texts: list[str]) -> dict[str, list[list[int]]]:
        """Unpadded ids, attention masks and token type ids, truncated at the model window."""
        if self._fast is not None:
            encs = self._fast.encode_batch(texts)
            return {"input_ids": [e.ids for e in encs], "attention_mask": [e.attention_mask for e in encs],
                    "token_type_ids": [e.type_ids for e in encs]}
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_seq_length, padding=False)
        return {k: enc[k] for k in _INPUTS if k in enc}

    def batches(self, texts: list[str], batch_size: int) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """(positions, padded feeds) per batch, widest first. Each text is padded to
        :func:`padded_width` of its own length, and a batch holds texts of one width only, so a
        text's vector does not depend on the texts it is batched with (see :data:`PAD_MULTIPLE`)."""
        enc = self.tokenize(texts)
        lengths = np.array([len(ids) for ids in enc["input_ids"]], dtype=np.int64)
        widths = np.array([padded_width(int(n), self.max_seq_length) for n in lengths], dtype=np.int64)
        order = np.lexsort((np.arange(len(texts)), -widths))  # widest first, then input order
        wanted = [k for k in self.input_names if k in enc]
        batch_size = max(1, batch_size)
        start = 0
        while start < len(order):
            width = int(widths[order[start]])
            stop = start
            while stop < len(order) and stop - start < batch_size and widths[order[stop]] == width:
                stop += 1
            idx = order[start:stop]
            start = stop
            feeds = {}
            for k in wanted:
                # padding: id 0 under mask 0 (a masked position changes no unmasked output)
                arr = np.zeros((len(idx), width), dtype=np.int64)
                for row, i in enumerate(idx):
                    arr[row, : lengths[i]] = enc[k][i]
                feeds[k] = arr
            yield idx, feeds

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = np.empty((len(texts), self.dims), dtype=np.float32)
        for idx, feeds in self.batches(texts, batch_size):
            hidden = self._run(feeds)
            out[idx] = self._pool(hidden, feeds["attention_mask"])
        if self.pipeline["normalize"]:
            out = l2_normalize(out)
        return out.astype(np.float32, copy=False)

    @property
    def input_names(self) -> list[str]:
        return list(_INPUTS)

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return pool(hidden, mask, self.pipeline["pooling"])


# ---- one text per run, texts in parallel (CPU) ----------------------------------------------------
class PerTextEncoder:
    """Tokenise -> onnxruntime -> pool -> normalise, one text per run (no padding needed).

    ``workers`` texts run at once, each on one intra-op thread of the same session (ONNX Runtime
    sessions are thread-safe and release the GIL): for many texts (evaluation's whole documents
    and queries) that is ~15 % less CPU than one text on every core, whose per-operator thread
    hand-offs cost more than they gain at these sizes, and the session starts faster."""

    def __init__(self, model_path: str, graph: Path, workers: int = 1):
        self.pipeline = read_pipeline(model_path)
        self.tokenizer = _rust_tokenizer(model_path, self.pipeline["max_seq_length"])
        if self.tokenizer is None:
            raise FileNotFoundError(f"{model_path} has no tokenizer.json")
        self.session = session_for(graph, 1)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.graph = graph
        self.workers = max(1, workers)

    def _one(self, enc: Any) -> np.ndarray:
        feeds = {
            "input_ids": np.asarray([enc.ids], dtype=np.int64),
            "attention_mask": np.asarray([enc.attention_mask], dtype=np.int64),
            "token_type_ids": np.asarray([enc.type_ids], dtype=np.int64),
        }
        hidden = np.asarray(self.session.run(None, {k: feeds[k] for k in self.inputs})[0], dtype=np.float32)
        return pool(hidden, feeds["attention_mask"], self.pipeline["pooling"])[0]

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.pipeline["dims"]), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(texts)
        if self.workers > 1 and len(texts) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(self.workers, len(texts)), thread_name_prefix="onnx-encode") as ex:
                for i, vec in enumerate(ex.map(self._one, encodings)):
                    out[i] = vec
        else:
            for i, enc in enumerate(encodings):
                out[i] = self._one(enc)
        if self.pipeline["normalize"]:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


# ---- the session: from a pre-optimised copy of the graph --------------------------------------------
OPTIMISED_NAME = "model.onnx"  # inside <graph stem>-ort<version>-<cpu key>/, weights in model.onnx.data


@functools.cache
def _cpu_key() -> str:
    """CPU model and instruction-set flags: ONNX Runtime's full optimisation may write
    hardware-specific kernels into the saved graph, valid only on the same kind of CPU."""
    info = ""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        info = "|".join(next((ln for ln in lines if ln.startswith(k)), "") for k in ("model name", "flags"))
    except OSError:
        pass
    raw = f"{platform.machine()}|{platform.processor()}|{info}"
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


def optimised_dir(graph: Path) -> Path:
    """Where the pre-optimised copy of ``graph`` lives (per ONNX Runtime version, CPU kind and
    the graph file's size and mtime: a re-exported graph gets a new copy)."""
    import onnxruntime as ort

    st = graph.stat()
    stamp = hashlib.sha256(f"{st.st_size}|{st.st_mtime_ns}|{_cpu_key()}".encode()).hexdigest()[:12]
    return graph.parent / f"{graph.stem}-ort{ort.__version__}-{stamp}"


def _options(threads: int, level: str = "ORT_ENABLE_ALL") -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def session_for(graph: Path, threads: int) -> Any:
    """An ONNX Runtime session for ``graph``. The first one optimises the graph (ORT_ENABLE_ALL)
    and saves the result with its weights in a separate file; later ones load that copy with
    optimisation off: the same graph, the same numbers, and about a third of the start-up CPU
    (the weights are memory-mapped instead of parsed out of the protobuf; 0.28 -> 0.08 CPU s for
    all-MiniLM-L6-v2). A copy that cannot be written or read is simply not used."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    saved = optimised_dir(graph)
    if (saved / OPTIMISED_NAME).is_file():
        try:
            return ort.InferenceSession(str(saved / OPTIMISED_NAME), _options(threads, "ORT_DISABLE_ALL"),
                                        providers=providers)
        except Exception as exc:  # noqa: BLE001 a damaged copy: optimise the original graph again
            log.info("pre-optimised graph %s unusable (%s); optimising %s", saved, exc, graph)
            return ort.InferenceSession(str(graph), _options(threads), providers=providers)
    return _optimise_and_save(graph, threads, saved)


def _optimise_and_save(graph: Path, threads: int, saved: Path) -> Any:
    import shutil

    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    tmp = saved.with_name(f".{saved.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        opts = _options(threads)
        opts.optimized_model_filepath = str(tmp / OPTIMISED_NAME)
        opts.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                      f"{OPTIMISED_NAME}.data")
        opts.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        session = ort.InferenceSession(str(graph), opts, providers=providers)
    except Exception as exc:  # noqa: BLE001 read-only folder, full disk: run without a saved copy
        log.debug("pre-optimised graph not saved (%s)", exc)
        shutil.rmtree(tmp, ignore_errors=True)
        return ort.InferenceSession(str(graph), _options(threads), providers=providers)
    try:
        tmp.rename(saved)  # atomic; fails if another process saved its copy first (that one is kept)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return session


def pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """The model's pooling of token vectors (``mode``: mean / cls / max) under ``mask``."""
    if mode == "cls":
        return hidden[:, 0, :]
    m = mask[..., None].astype(np.float32)
    if mode == "max":
        return np.where(m > 0, hidden, -1e9).max(axis=1)
    return (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class OnnxRuntimeBackend(_ExportedBackend):
    """ONNX Runtime. On the CPU (with the model's ``tokenizer.json``) texts run one per session
    call, :func:`cores` at once on one intra-op thread each (:class:`PerTextEncoder`): no padding,
    so a text's vector does not depend on the texts batched with it, and on 2 cores without
    AVX512 it cost ~13 % less CPU than OpenVINO's throughput mode (and less than padded ORT
    batches) for the sample corpus' 294 chunks (``docs/backends.md``). On CUDA: length-sorted padded batches."""

    name = "onnx"
    group_batches = 1  # batches per encode call: 8 when texts run one per call (see OpenVinoBackend)

    def __init__(self, model_path: str, precision: str, cache_dir: Path, device: str = "cpu"):
        super().__init__(model_path)
        import onnxruntime as ort

        self.path = ensure_onnx(model_path, precision, cache_dir)
        self.per_text: PerTextEncoder | None = None
        if device == "cpu" and self._fast is not None:
            self.per_text = PerTextEncoder(model_path, self.path, workers=cores())
            self.session = self.per_text.session
            self._inputs = list(self.per_text.inputs)
            self.group_batches = 8  # every call ends on a barrier: fewer, larger calls idle less
            return
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        self._inputs = [i.name for i in self.session.get_inputs()]

    @property
    def input_names(self) -> list[str]:
        return self._inputs

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.session.run(None, feeds)[0], dtype=np.float32)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        if self.per_text is not None:
            return self.per_text.encode(texts)
        return super().encode(texts, batch_size)


SUB_BATCHES_PER_REQUEST = 4  # a short call still gives each infer request several sub-batches


def sub_batch(texts: int, batch_size: int, requests: int) -> int:
    """Texts per OpenVINO infer request: a share of ``batch_size``, smaller when a call holds few
    texts, so no request idles at the call's barrier while another runs the one big remainder.
    Measured (2 cores, AVX512-BF16/AMX, length-sorted): the 54 whole documents of the sample corpus
    in one call take 0.32 s with sub-batches of 8 vs 0.41 s with 16; 294 chunks: 8 and 16 equal."""
    share = -(-batch_size // max(1, requests))
    spread = -(-texts // (max(1, requests) * SUB_BATCHES_PER_REQUEST))
    return max(1, min(share, spread))


class OpenVinoBackend(_ExportedBackend):
    """OpenVINO on the CPU, compiled for throughput: one stream per (pair of) core(s), and each
    call's texts cut into sub-batches (:func:`sub_batch`: a share of the batch per infer request,
    smaller for a short call), run asynchronously. Padding the next
    sub-batch and pooling a finished one (numpy, in OpenVINO's callback) overlap with inference.
    Measured on 2 cores (sample-corpus chunks, torch fp32 = 1.0): LATENCY hint, sequential
    batches of 32 x1.30; THROUGHPUT, 2 requests of 16 x1.81 (``benchmarks/results/peers.json``).

    Every ``encode`` call ends on a barrier (``wait_all``): with one batch of 32 per call the two
    requests get one sub-batch each and idle while the slower finishes, and calibration (one call
    of 64 texts) measures a speed the stage never reached. So the embedder hands it
    :attr:`group_batches` batches per call (a cache commit each): on 147 sample-corpus chunks,
    2 cores under load ~12, calls of 32 texts cost 14.9-15.4 CPU s and 44-45 s wall, one call
    13.3-13.5 CPU s and 32-39 s (``docs/backends.md``)."""

    name = "openvino"
    group_batches = 8  # batches per encode call (see above); progress and commits every 256 texts

    def __init__(self, model_path: str, precision: str, cache_dir: Path, device: str = "cpu"):
        super().__init__(model_path)
        import openvino as ov

        self.path = ensure_openvino(model_path, precision, cache_dir)
        core = ov.Core()
        # CACHE_DIR: the compiled blob is kept next to the IR, so later processes load it instead of
        # compiling again (OpenVINO keys it by model, device and config): 2.0-2.3 s -> 0.7-1.0 s
        # wall, 0.6 -> 0.3 CPU s per process under load ~13
        config = {"PERFORMANCE_HINT": "THROUGHPUT", "CACHE_DIR": str(cache_dir / "openvino-cache")}
        self.compiled = core.compile_model(str(self.path), "CPU", config)
        self._inputs = [p.get_any_name() for p in self.compiled.inputs]
        self.inference_precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.requests = max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._queue = ov.AsyncInferQueue(self.compiled, self.requests)

    @property
    def input_names(self) -> list[str]:
        return self._inputs

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        result = self.compiled.create_infer_request().infer(feeds)
        return np.asarray(result[self.compiled.output(0)], dtype=np.float32)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = np.empty((len(texts), self.dims), dtype=np.float32)
        failures: list[BaseException] = []

        def done(request: Any, job: tuple[np.ndarray, np.ndarray]) -> None:
            idx, mask = job
            try:
                out[idx] = self._pool(np.asarray(request.get_output_tensor(0).data, dtype=np.float32), mask)
            except BaseException as exc:  # noqa: BLE001 raised on OpenVINO's thread: re-raised below
                failures.append(exc)

        sub = sub_batch(len(texts), batch_size, self.requests)
        self._queue.set_callback(done)
        for idx, feeds in self.batches(texts, sub):
            self._queue.start_async(feeds, (idx, feeds["attention_mask"]))
        self._queue.wait_all()
        if failures:
            raise failures[0]
        if self.pipeline["normalize"]:
            out = l2_normalize(out)
        return out.astype(np.float32, copy=False)
