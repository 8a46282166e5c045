"""One typed configuration for embedline.

`params.yaml` is validated by :class:`Config`; every override (``--set section.key=value`` on the
CLI, flow parameters in the Prefect UI, ``dvc exp run -S``) goes through the same model, so a bad key
or value fails before any work with a message that names the key and the valid choices.

This module also owns the *fingerprint* of a vector set: the hash of everything that decides what a
vector means (model identity, backend, precision, prompts, dimensions, normalisation, preprocessing
and chunking parameters). The corpus checksum is deliberately not part of it (it lives in the
manifest), so incremental sync stays inside one vector set.
"""

from __future__ import annotations

import hashlib
import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from embedline.tasks.plugins import CHUNKERS, PROVIDERS

PARAMS_FILE = "params.yaml"

# The sparse-vector recipe used when qdrant.sparse is on (implemented by tasks/vectorsets/sparse.py with
# Qdrant's own BM25; preprocess.language picks stop words and stemmer). Part of the fingerprint:
# change a value or the version and sparse vector sets are rebuilt, never mixed.
SPARSE_BM25: dict[str, Any] = {
    "model": "qdrant-bm25", "k": 1.2, "b": 0.75, "avg_len": 256.0, "text": "title+text", "version": 1,
}


CONTEXT_FIELDS = frozenset({"title", "headings", "text"})  # chunk.context_template fields


class ConfigError(ValueError):
    """A params.yaml file or an override that does not validate."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class PreprocessParams(_Section):
    """How documents are loaded and normalised before chunking."""

    max_file_mb: float = Field(20.0, gt=0, description="files larger than this are rejected")
    follow_symlinks: bool = Field(True, description="follow symlinks that stay inside the source root")
    exclude: tuple[str, ...] = Field(
        ("**/.*", "**/__pycache__/**"), description="glob patterns (relative to source) to skip"
    )
    # text / JSON loaders
    json_text_field: str = "text"
    json_id_field: str = "_id"
    json_title_field: str = "title"
    # HTML: pages that are lists of links are skipped (reported with the reason); see loaders/html.py
    html_skip_pages: tuple[Literal["index", "contents", "search"], ...] = ("index", "contents", "search")
    html_link_density: float = Field(
        0.8, gt=0, le=1.0, description="link-text share above which an HTML block/page is navigation"
    )
    # normalisation (applied to the text that gets embedded; the display text keeps its casing)
    unicode_form: Literal["NFKC", "NFC", "none"] = "NFKC"
    dehyphenate: bool = True
    lowercase: bool = False
    lemmatize: bool = False
    stem: Literal["none", "porter", "snowball"] = "none"
    strip_code_comments: bool = False
    language: str = Field("en", description="language for spaCy / NLTK helpers")
    max_metadata_bytes: int = Field(
        4096, ge=0, description="cap per metadata field (JSON bytes; 0 = no cap): a JSON record's side "
        "fields are copied into every chunk's payload; longer ones are cut and listed in truncated_fields",
    )


class ChunkStrategy(StrEnum):
    """The built-in strategies (names for code; ``chunk.strategy`` accepts any name registered in
    tasks/plugins.py CHUNKERS)."""

    sentence = "sentence"
    sliding = "sliding"
    markdown = "markdown"
    code = "code"
    auto = "auto"  # per document: markdown for .md, code for source files, sentence otherwise


class ChunkParams(_Section):
    """How documents are split into chunks. Token counts use the embedding model's tokenizer."""

    strategy: str = Field(ChunkStrategy.auto.value, description="a name registered in tasks/plugins.py CHUNKERS")
    max_tokens: int = Field(256, ge=8, le=8192, description="upper bound per chunk, special tokens included")
    overlap_tokens: int = Field(32, ge=0)
    min_tokens: int = Field(8, ge=1, description="merge trailing fragments smaller than this")
    heading_prefix: bool = Field(True, description="prefix the heading path to markdown chunks' text")
    context_template: str = Field(
        "{title}\n{headings}\n\n{text}",
        description="embedded text of every chunk: fields {title}, {headings}, {text}; '' = text only",
    )

    @field_validator("context_template")
    @classmethod
    def _context_template_valid(cls, v: str) -> str:
        import string

        if not v:
            return v
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        except ValueError as exc:
            raise ValueError(f"not a format string: {exc}") from None
        if names - CONTEXT_FIELDS or "text" not in names:
            raise ValueError(
                f"fields must be among {sorted(CONTEXT_FIELDS)} and include {{text}} (got {sorted(names)})"
            )
        return v

    @field_validator("strategy")
    @classmethod
    def _registered_strategy(cls, value: str) -> str:
        return CHUNKERS.check(value)

    @model_validator(mode="after")
    def _overlap_smaller_than_window(self) -> ChunkParams:
        if self.overlap_tokens >= self.max_tokens:
            raise ValueError(
                f"chunk.overlap_tokens ({self.overlap_tokens}) must be smaller than "
                f"chunk.max_tokens ({self.max_tokens})"
            )
        return self


class EmbedParams(_Section):
    """Which model embeds, how, and within which provider limits."""

    provider: str = Field(
        "sentence-transformers", description="a name registered in tasks/plugins.py PROVIDERS"
    )
    model: str = Field(
        "sentence-transformers/all-MiniLM-L6-v2",
        description="Hugging Face id, local path, or API model name",
    )
    revision: str | None = Field(None, description="model revision (HF commit) when online")
    backend: Literal["torch", "onnx", "openvino", "auto"] = "auto"  # auto: tasks/embed/auto.py
    precision: Literal["fp32", "int8"] = "fp32"
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    batch_size: int = Field(32, ge=1, le=4096)
    normalize: bool = True
    dimensions: int | None = Field(None, ge=1, description="Matryoshka truncation (re-normalised)")
    query_prompt: str = ""
    passage_prompt: str = ""
    # OpenAI-compatible APIs
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    tokenizer: str | None = Field(
        None, description="tokenizer for token budgets (tiktoken encoding or HF id); default by model"
    )
    max_seq_tokens: int | None = Field(None, ge=8, description="model window; default from the model")
    max_inputs_per_request: int = Field(2048, ge=1)
    max_tokens_per_request: int = Field(300_000, ge=1)
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    max_retries: int = Field(6, ge=0)
    retry_initial_s: float = Field(0.5, gt=0, description="first backoff (exponential, jittered)")
    retry_max_s: float = Field(30.0, gt=0, description="longest single backoff")
    timeout_s: float = Field(60.0, gt=0)
    models_dir: str = Field(
        "data/models", description="exported ONNX/OpenVINO models (git-ignored, per model hash)"
    )
    auto_labelled_set: str | None = Field(
        None, description="backend=auto: a BEIR folder (with corpus.jsonl) on which a candidate at "
        "mean cosine 0.99-0.999 to torch fp32 is kept if it loses <= 0.005 nDCG@10"
    )
    concurrency: int = Field(2, ge=1, description="parallel requests / shards")
    # cache
    cache: bool = True
    cache_path: str = "data/cache/embeddings.sqlite"
    shard_rows: int = Field(4096, ge=1, description="chunks per embedding shard")


    # set by embed.backend=auto when it resolves (tasks/embed/auto.py): the calibration record
    _auto_choice: dict[str, Any] | None = PrivateAttr(None)

    @property
    def auto_choice(self) -> dict[str, Any] | None:
        """The calibration record that chose this backend (None: set explicitly)."""
        return self._auto_choice

    @field_validator("provider")
    @classmethod
    def _registered_provider(cls, value: str) -> str:
        return PROVIDERS.check(value)


class DuplicatePolicy(StrEnum):
    """What happens to a near-duplicate chunk once its representative is chosen."""

    drop = "drop"  # only the representative is stored; duplicates' ids recorded on it
    keep_canonical = "keep_canonical"  # all stored; duplicates point to their canonical
    link = "link"  # only the representative is stored, with duplicates' sources linked


class DedupeParams(_Section):
    threshold: float = Field(0.95, gt=0, le=1.0, description="cosine similarity for near-duplicates")
    policy: DuplicatePolicy = DuplicatePolicy.link
    method: Literal["auto", "exact", "ivf"] = "auto"
    exact_max_rows: int = Field(20_000, ge=1, description="above this, auto uses the IVF cell join")
    ivf_nlist: int | None = Field(None, ge=1, description="IVF cells; default ~sqrt(ivf_nprobe * rows)")
    ivf_nprobe: int = Field(6, ge=1, description="IVF cells each row is compared against")
    block_rows: int = Field(4096, ge=64, description="query rows per range-search block")
    lexical: bool = Field(False, description="also join MinHash (word 3-gram Jaccard) copies in dedupe")
    lexical_threshold: float = Field(0.9, gt=0, le=1.0)
    # a vector pair is merged only when the chunks also say the same thing (never hides content)
    confirm_text: bool = Field(True, description="confirm vector pairs on the texts (headings, identifiers)")
    text_similarity: float = Field(
        0.9, ge=0, le=1.0, description="min word-level edit ratio of a confirmed pair (0 = no text check)"
    )


_COLLECTION_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")


class QdrantParams(_Section):
    backend: Literal["edge", "local", "server"] = Field(
        "edge", description="edge = Qdrant Edge embedded; local = qdrant-client local mode"
    )
    path: str = "data/qdrant"
    url: str | None = None
    api_key_env: str = "QDRANT_API_KEY"
    prefer_grpc: bool = False
    collection: str = "embedline"
    distance: Literal["Cosine", "Dot", "Euclid"] = "Cosine"
    on_disk: bool = False
    quantization: Literal["none", "scalar", "binary"] = "none"
    hnsw_m: int = Field(16, ge=0)
    index_threshold: int = Field(
        100_000, ge=0, description="embedded Edge: build HNSW only above this many points (exact search below)"
    )
    keep_versions: int = Field(2, ge=0, description="previous vector sets kept after an alias swap")
    max_delete_fraction: float = Field(0.5, ge=0, le=1.0)
    batch_points: int = Field(256, ge=1)
    batch_mb: float = Field(16.0, gt=0, le=32.0, description="request size cap (Qdrant caps at 32 MB)")
    parallel: int = Field(2, ge=1)
    max_retries: int = Field(5, ge=0)
    validate_sample: int = Field(32, ge=0, description="vectors read back before an alias swap")
    sparse: bool = False  # also store a BM25 sparse vector per point (hybrid search); a new vector set
    payload_indexes: tuple[Literal["doc_id", "source", "chunk_id"], ...] = Field(
        ("doc_id",),
        description="payload fields with a keyword index (fast filtered search on them); each costs"
        " RAM per point in the embedded store (~0.2-0.4 KB) and is added to an existing collection on its next upsert",
    )

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, v: str) -> str:
        if not _COLLECTION_NAME.fullmatch(v):
            raise ValueError(
                "a collection name is 1-200 letters, digits, '_', '-' or '.', starting with a letter, "
                "digit or '_' (it names Qdrant collections and, embedded, their folders)"
            )
        return v

    @model_validator(mode="after")
    def _url_means_server(self) -> QdrantParams:
        if self.url and self.backend != "server":
            object.__setattr__(self, "backend", "server")
        return self


Baseline = Literal["bm25", "wholedoc"]  # the retrieval baselines the evaluate stage can score


class EvalParams(_Section):
    dataset: str = Field("data/eval", description="BEIR-layout folder: queries.jsonl + qrels/")
    k: tuple[int, ...] = (1, 5, 10, 100)
    max_regression: float = Field(0.02, ge=0, le=1.0, description="allowed nDCG@10 drop vs live")
    gate: bool = True
    # require the hybrid method (fails without a sparse vector); it is scored anyway when there is one
    hybrid: bool = False
    map_sample: int = Field(2000, ge=10)
    baselines: tuple[Baseline, ...] = Field(
        ("bm25", "wholedoc"),
        description="baselines scored next to the dense set: BM25 on the same documents, and each whole"
        " document embedded with the same model (its inference is most of a first evaluate; with an API"
        " provider it is billed, once per document text)",
    )


class RunParams(_Section):
    runner: Literal["thread", "dask"] = "thread"
    dask_address: str | None = None
    dask_workers: int = Field(2, ge=1)
    # documents/chunks are partitioned into this many shards by doc id (a new count rewrites all)
    shards: int = Field(16, ge=1, le=4096)
    # ignore the ledgers: re-load and re-chunk every document (`embedline ingest --full`)
    full_rebuild: bool = False


# fine-tuning trains (and a fine-tuned model is embedded by) sentence-transformers
FINETUNE_PROVIDER = "sentence-transformers"


class FinetuneParams(_Section):
    """Fine-tuning the embedding model on the corpus's own signal (the ``finetune`` stage).

    Pairs come from ``dataset``'s ``qrels/<train_split>.tsv`` when it has one, else they are mined
    from the served vector set (title/heading -> its section's text). See tasks/finetune.
    """

    enabled: bool = Field(False, description="train in `dvc repro` (`embedline finetune` always trains)")
    base_model: str = Field(
        "sentence-transformers/all-MiniLM-L6-v2", description="model to start from (HF id or local path)"
    )
    dataset: str = Field("data/eval", description="BEIR folder; qrels/<train_split>.tsv = labelled pairs")
    train_split: str = "train"
    eval_split: str = Field("test", description="held-out split: never trained on, base vs fine-tuned")
    output: str = Field("models/finetuned", description="where the fine-tuned model is written")
    epochs: int = Field(1, ge=1, le=100)
    batch_size: int = Field(32, ge=2, le=4096, description="in-batch negatives per step")
    learning_rate: float = Field(2e-5, gt=0, lt=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    pairs: Literal["auto", "labelled", "mined", "both"] = Field(
        "auto",
        description="auto: the train split when there is one, else mined; labelled: the train split; "
        "mined: title/heading -> its text, from the corpus; both: the union of labelled and mined",
    )
    max_pairs: int = Field(3000, ge=1, description="training pairs (a seeded sample when more; counted)")
    max_seq_length: int = Field(128, ge=8, description="training truncation (the saved model keeps its own)")
    hard_negatives: bool = Field(False, description="one hard negative per pair from the vector set")
    negative_depth: int = Field(30, ge=1, description="nearest passages searched for a hard negative")
    near_duplicate: float = Field(
        0.95, gt=0, le=1.0, description="cosine to the positive at or above which a passage is no negative"
    )
    min_anchor_chars: int = Field(4, ge=1, description="mined titles/headings shorter than this are skipped")
    matryoshka_dims: tuple[int, ...] = Field((), description="e.g. [384, 256, 128, 64]: MatryoshkaLoss")
    seed: int = 42
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"

    @field_validator("matryoshka_dims")
    @classmethod
    def _dims_descending(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(d < 1 for d in v):
            raise ValueError("matryoshka_dims must be positive widths")
        return tuple(sorted(set(v), reverse=True))

    @model_validator(mode="after")
    def _splits_differ(self) -> FinetuneParams:
        if self.train_split == self.eval_split:
            raise ValueError(
                f"finetune.train_split and finetune.eval_split are both {self.train_split!r}: "
                "a model is never evaluated on the queries it was trained on"
            )
        return self


class Config(BaseModel):
    """The whole of params.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    source: str = "data/raw"
    preprocess: PreprocessParams = PreprocessParams()
    chunk: ChunkParams = ChunkParams()
    embed: EmbedParams = EmbedParams()
    dedupe: DedupeParams = DedupeParams()
    qdrant: QdrantParams = QdrantParams()
    eval: EvalParams = EvalParams()
    run: RunParams = RunParams()
    finetune: FinetuneParams = FinetuneParams()

    @field_validator("source")
    @classmethod
    def _source_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("source must name a folder")
        return v

    # ---- fingerprints ------------------------------------------------------------------------
    def vector_params(self) -> dict[str, Any]:
        """Everything, besides the model's own revision, that decides what a stored vector means
        (and, with ``qdrant.sparse``, the sparse recipe: the collection then holds a second vector)."""
        e = self.embed
        params: dict[str, Any] = {
            "embed": {
                "provider": e.provider,
                "model": e.model,
                "revision": e.revision,
                "backend": e.backend,
                "precision": e.precision,
                "normalize": e.normalize,
                "dimensions": e.dimensions,
                "passage_prompt": e.passage_prompt,
            },
            "preprocess": {k: v for k, v in _jsonable(self.preprocess).items() if k not in _PAYLOAD_ONLY},
            "chunk": _jsonable(self.chunk),
        }
        params["embed"].update(computation_marks(e))
        if self.qdrant.sparse:  # a collection schema of its own; absent when off, so dense-only
            params["sparse"] = dict(SPARSE_BM25)  # fingerprints stay what they were
        return params

    def fingerprint(self, model_revision: str | None = None) -> str:
        """Vector-set fingerprint; ``model_revision`` is the resolved hash of the model's weights."""
        payload = {"params": self.vector_params(), "model_revision": model_revision}
        return stable_hash(payload)[:16]


# How OpenVINO batches are padded: each text at a width of its own, its length rounded up to 16
# (providers.onnx_backend.PAD_MULTIPLE).
OPENVINO_PADDING = "own-width-16"


def computation_marks(e: EmbedParams) -> dict[str, str]:
    """What decides a vector's bits besides the embed params: OpenVINO's padding rule (vectors padded
    another way differ in their last bits). Part of both the vector-set fingerprint and the
    embedding-cache namespace, so such vectors are never mixed with these."""
    return {"padding": OPENVINO_PADDING} if e.backend == "openvino" else {}

# preprocess params that shape payloads, never vectors: not part of the fingerprint
_PAYLOAD_ONLY = frozenset({"max_metadata_bytes"})


# ---- hashing helpers -----------------------------------------------------------------------------
def _jsonable(model: BaseModel) -> Any:
    return json.loads(model.model_dump_json())


def stable_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj``."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


# ---- loading and overrides -----------------------------------------------------------------------
def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            parent = e["loc"][:-1]
            choices = sorted(_fields_at(parent))
            lines.append(f"unknown key '{key}'; valid keys here: {', '.join(choices)}")
        else:
            lines.append(f"invalid value for '{key}': {e['msg']} (got {e.get('input')!r})")
    return "; ".join(lines)


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(
            field.annotation, BaseModel
        ):
            return []
        model = field.annotation
    return list(model.model_fields)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value``; the value is read as YAML (so 64, true, null, [a, b] work)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {item!r} has no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted overrides applied (unknown keys caught at validation)."""
    out = json.loads(json.dumps(data))
    items = (
        [(k.split("."), v) for k, v in overrides.items()]
        if isinstance(overrides, dict)
        else [parse_override(o) for o in overrides]
    )
    for path, value in items:
        node = out
        for i, part in enumerate(path[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(
                    f"unknown key '{'.'.join(path)}': '{'.'.join(path[: i + 1])}' is not a section"
                )
            node = nxt
        node[path[-1]] = value
    return out


def validate(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        return {}
    # libyaml's loader when built in: the pure-Python one took 0.2 s of every command's start
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data = yaml.load(p.read_text(encoding="utf-8"), Loader=loader) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of sections")
    return data


def load_config(
    path: str | Path | None = PARAMS_FILE,
    overrides: list[str] | dict[str, Any] | None = None,
) -> Config:
    """Load params.yaml (missing file = defaults), apply overrides, validate."""
    data = read_params(path) if path is not None else {}
    if overrides:
        data = apply_overrides(data, overrides)
    return validate(data)
