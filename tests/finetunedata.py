"""Fixtures for the fine-tuning tests: a tiny sentence-transformers model built offline, tiny BEIR sets.

The tiny model is a 1-layer, 32-wide BERT with random weights (seeded) and the bundled
all-MiniLM-L6-v2 tokenizer: ~1 M parameters, so a training step takes milliseconds on CPU. Being
random, it retrieves badly: the lifecycle tests use it as the model that loses.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

TOPICS = {
    "black_holes": ("How do black holes form?", "A black hole forms when a massive star collapses under its "
                    "own gravity; nothing escapes past the event horizon."),
    "bread": ("Why does bread dough rise?", "Bread rises because yeast ferments sugars and releases carbon "
              "dioxide that the gluten traps."),
    "tcp": ("How does TCP open a connection?", "TCP opens a connection with a three-way handshake and "
            "retransmits lost segments."),
    "tomatoes": ("How much sun do tomatoes need?", "Tomatoes need six to eight hours of sun a day; water "
                 "them deeply at the base."),
    "printing": ("Who invented the printing press?", "Johannes Gutenberg built a printing press with movable "
                 "metal type around 1440 in Mainz."),
    "volcano": ("Why do volcanoes erupt?", "Volcanoes erupt when magma rises through the crust and the "
                "pressure of its gases is released."),
}


def build_tiny_model(path: Path, seed: int = 0) -> Path:
    """A tiny random sentence-transformers model (mean pooling, normalised) saved to ``path``."""
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    from embedline.tasks.tokenize import resolve_model

    base = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    hf = path.parent / f".{path.name}-hf"
    tok = transformers.AutoTokenizer.from_pretrained(base)
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    transformers.BertModel(config).save_pretrained(hf)
    tok.save_pretrained(hf)
    word = Transformer(str(hf), max_seq_length=64)
    model = SentenceTransformer(modules=[word, Pooling(32, "mean"), Normalize()], device="cpu")
    model.save(str(path), create_model_card=False)
    shutil.rmtree(hf)
    return path


def title_of(topic: str) -> str:
    return f"notes on {topic.replace('_', ' ')} ."


def write_beir(root: Path, *, train: list[str], test: list[str], corpus: bool = True,
               doc_id: Any = None, titles: bool = False) -> Path:
    """A BEIR folder over :data:`TOPICS`: query id = topic, its one relevant doc = ``d-<topic>``
    (or ``doc_id(topic)``); ``train``/``test`` name the topics of each split. ``titles``: each
    document has a title (:func:`title_of`) that its text repeats first, as Cranfield's do."""
    key = doc_id or (lambda t: f"d-{t}")
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with (root / "queries.jsonl").open("w") as f:
        for t, (q, _) in TOPICS.items():
            f.write(json.dumps({"_id": t, "text": q}) + "\n")
    if corpus:
        with (root / "corpus.jsonl").open("w") as f:
            for t, (_, text) in TOPICS.items():
                title = title_of(t) if titles else ""
                body = f"{title} {text}" if titles else text
                f.write(json.dumps({"_id": key(t), "title": title, "text": body}) + "\n")
    for name, topics in (("train", train), ("test", test)):
        if topics:
            lines = ["query-id\tcorpus-id\tscore", *(f"{t}\t{key(t)}\t1" for t in topics)]
            (root / "qrels" / f"{name}.tsv").write_text("\n".join(lines) + "\n")
    return root
