"""LangChain's indexing API on embedline's documents: RecursiveCharacterTextSplitter measured with the
model's HF tokenizer (256 tokens, 32 overlap) -> ``index()`` with a SQLRecordManager (SQLite) and
cleanup="full" (unchanged chunks skipped, changed and removed ones deleted, as embedline syncs) into
langchain-qdrant's QdrantVectorStore on qdrant-client's local mode, embedding with HuggingFaceEmbeddings
(the same local all-MiniLM-L6-v2).

Run in benchmarks/.venv-peers by benchmarks/bench_peers.py; the first run and a re-run are two
invocations on the same --work folder. Prints one JSON line.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peer import T_START, args, finish, read_docs, versions

COLLECTION = "peer_langchain"


def main() -> None:
    a = args(__doc__ or "")
    from langchain_classic.indexes import SQLRecordManager, index
    from langchain_core.documents import Document
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_qdrant import QdrantVectorStore
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from transformers import AutoTokenizer

    imports_s = time.perf_counter() - T_START
    t0 = time.perf_counter()
    a.work.mkdir(parents=True, exist_ok=True)
    db = a.work / "record_manager.sqlite"
    rerun = db.exists()
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
        tokenizer, chunk_size=a.chunk_tokens, chunk_overlap=a.overlap_tokens)
    embed = HuggingFaceEmbeddings(model_name=a.model, model_kwargs={"device": "cpu"},
                                  encode_kwargs={"batch_size": a.batch_size, "normalize_embeddings": True})
    store = QdrantVectorStore.construct_instance(embedding=embed, client_options={"path": str(a.work / "qdrant")},
                                                 collection_name=COLLECTION)
    records = SQLRecordManager(f"qdrant/{COLLECTION}", db_url=f"sqlite:///{db}")
    records.create_schema()
    setup_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    docs = [Document(page_content=d["text"], metadata={"source": d["source"]}) for d in read_docs(a.docs)]
    chunks = splitter.split_documents(docs)
    result = index(chunks, records, store, cleanup="full", source_id_key="source", batch_size=100)
    run_s = time.perf_counter() - t1
    embedded = result["num_added"] + result["num_updated"]
    tokens = sum(len(tokenizer.encode(c.page_content)) for c in chunks) if embedded else 0  # untimed
    points = store.client.count(COLLECTION).count
    store.client.close()
    finish({
        "peer": "langchain",
        "mode": "rerun" if rerun else "first",
        "documents": len(docs),
        "chunks": len(chunks),
        "chunks_embedded": embedded,
        "tokens_embedded": tokens,
        "index_result": dict(result),
        "points": points,
        "imports_s": round(imports_s, 3),
        "setup_s": round(setup_s, 3),
        "run_s": round(run_s, 3),
        "seconds": round(setup_s + run_s, 3),
        "versions": versions("langchain-core", "langchain-classic", "langchain-qdrant", "langchain-huggingface",
                             "langchain-text-splitters", "qdrant-client", "sentence-transformers", "transformers",
                             "torch"),
    })


if __name__ == "__main__":
    main()
