"""LlamaIndex's IngestionPipeline on embedline's documents: SentenceSplitter (HF tokenizer, 256 tokens,
32 overlap) -> HuggingFaceEmbedding (the same local all-MiniLM-L6-v2) -> QdrantVectorStore on
qdrant-client's local mode, with a persisted SimpleDocumentStore (docstore_strategy UPSERTS_AND_DELETE:
unchanged documents skipped, changed ones replaced, removed ones deleted, as embedline syncs).

Run in benchmarks/.venv-peers by benchmarks/bench_peers.py; the first run and a re-run are two
invocations on the same --work folder. Prints one JSON line.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peer import T_START, args, finish, read_docs, versions

COLLECTION = "peer_llamaindex"


def main() -> None:
    a = args(__doc__ or "")
    from llama_index.core import Document
    from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.schema import MetadataMode
    from llama_index.core.storage.docstore import SimpleDocumentStore
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient
    from transformers import AutoTokenizer

    imports_s = time.perf_counter() - T_START
    t0 = time.perf_counter()
    a.work.mkdir(parents=True, exist_ok=True)
    persist = a.work / "pipeline_storage"
    rerun = persist.exists()
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    embed = HuggingFaceEmbedding(model_name=a.model, device="cpu", embed_batch_size=a.batch_size, normalize=True)
    client = QdrantClient(path=str(a.work / "qdrant"))
    store = QdrantVectorStore(collection_name=COLLECTION, client=client)
    pipeline = IngestionPipeline(
        transformations=[
            SentenceSplitter(chunk_size=a.chunk_tokens, chunk_overlap=a.overlap_tokens,
                             tokenizer=lambda t: tokenizer.encode(t, add_special_tokens=False)),
            embed,
        ],
        vector_store=store,
        docstore=SimpleDocumentStore(),
        docstore_strategy=DocstoreStrategy.UPSERTS_AND_DELETE,
    )
    if rerun:
        pipeline.load(str(persist))
    setup_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    docs = [
        Document(text=d["text"], id_=d["id"], metadata={"source": d["source"]},
                 excluded_embed_metadata_keys=["source"], excluded_llm_metadata_keys=["source"])
        for d in read_docs(a.docs)
    ]
    nodes = pipeline.run(documents=docs)
    pipeline.persist(str(persist))
    run_s = time.perf_counter() - t1
    tokens = sum(len(tokenizer.encode(n.get_content(metadata_mode=MetadataMode.EMBED))) for n in nodes)  # untimed
    points = client.count(COLLECTION).count if client.collection_exists(COLLECTION) else 0
    client.close()
    finish({
        "peer": "llamaindex",
        "mode": "rerun" if rerun else "first",
        "documents": len(docs),
        "chunks_embedded": len(nodes),
        "tokens_embedded": tokens,
        "points": points,
        "imports_s": round(imports_s, 3),
        "setup_s": round(setup_s, 3),
        "run_s": round(run_s, 3),
        "seconds": round(setup_s + run_s, 3),
        "versions": versions("llama-index-core", "llama-index-embeddings-huggingface",
                             "llama-index-vector-stores-qdrant", "qdrant-client", "sentence-transformers",
                             "transformers", "torch"),
    })


if __name__ == "__main__":
    main()
