"""The preprocess fan-out on a 2-worker Dask LocalCluster (no Prefect server): the loaders run on
the workers, the walk, ledger and shard merge in the caller; the document shards, the file ledger
and the rejections are byte-identical to the in-process run, for a first and an incremental run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from embedline.tasks import preprocess as preprocess_module
from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import load_config
from embedline.tasks.preprocess import load_files, load_serially, run_preprocess
from embedline.tasks.shards import shard_files
from tests.conftest import FAKE, TINY_DOCS, make_project, write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PAGE = ("<html><head><title>Page {i}</title></head><body><div class='related'><a href='a'>prev</a></div>"
        "<div role='main'><h1>Heading {i}</h1><p>Paragraph {i} explains topic {i} in some detail.</p>"
        "<table><tr><th>Key</th><th>Value</th></tr><tr><td>k{i}</td><td>v{i}</td></tr></table></div>"
        "</body></html>")
DOCS = {**TINY_DOCS,
        **{f"html/page{i}.html": PAGE.format(i=i) for i in range(9)},
        **{f"more/doc{i}.txt": f"Document {i} talks about topic {i * 7} at length. " * 20 for i in range(9)},
        "html/genindex.html": "<html><body><a href='x'>x</a></body></html>",  # rejected: index page
        "bad/empty.txt": ""}  # rejected: empty


def _files(art: Artifacts) -> dict[str, Any]:
    """Document shards and rejections as bytes; the file ledger's rows without mtimes (the two
    projects' copies of the corpus were written at different times)."""
    rows = pq.read_table(art.ledger).drop_columns(["mtime_ns"]).to_pylist()
    return {f.name: f.read_bytes() for f in shard_files(art.documents)} | {
        "ledger": rows, "rejected": art.rejected.read_bytes()}


def _on_cluster(client: Any, root: Path) -> dict[str, Any]:
    def load_many(params: Any, batches: list[Any]) -> list[Any]:
        return client.gather(client.map(load_files, [params] * len(batches), batches, pure=False))

    return run_preprocess(load_config(root / "params.yaml"), Artifacts(root), load_many=load_many)


def _counts(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if k != "seconds"}


def test_dask_preprocess_shards_equal_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import Client, LocalCluster

    monkeypatch.setattr(preprocess_module, "LOAD_WINDOW_FILES", 7)  # several windows and batches
    monkeypatch.setattr(preprocess_module, "LOAD_BATCH_FILES", 3)
    roots = {k: make_project(tmp_path / k, {**FAKE, "run.shards": 4}, docs=DOCS) for k in ("local", "dask", "serial")}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        local = run_preprocess(load_config(roots["local"] / "params.yaml"), Artifacts(roots["local"]))
        dask = _on_cluster(client, roots["dask"])
        # the windowed path without a cluster too (what a thread runner would do)
        serial = run_preprocess(load_config(roots["serial"] / "params.yaml"), Artifacts(roots["serial"]),
                                load_many=load_serially)
        assert _counts(dask) == _counts(local) == _counts(serial)
        assert local["rejected"] == 2 and local["files_loaded"] == len(DOCS)
        assert _files(Artifacts(roots["dask"])) == _files(Artifacts(roots["local"])) == _files(
            Artifacts(roots["serial"]))
        assert len(shard_files(Artifacts(roots["local"]).documents)) > 1
        # incremental on the cluster: one edit, one addition, one deletion -> same bytes again
        for root in roots.values():
            raw = root / "data" / "raw"
            write_corpus(raw, {"more/doc3.txt": "An edited document about new things. " * 15,
                               "html/added.html": PAGE.format(i=99)})
            (raw / "more/doc5.txt").unlink()
        local = run_preprocess(load_config(roots["local"] / "params.yaml"), Artifacts(roots["local"]))
        dask = _on_cluster(client, roots["dask"])
        assert _counts(dask) == _counts(local)
        assert (dask["files_loaded"], dask["files_deleted"], dask["files_unchanged"]) == (2, 1, len(DOCS) - 2)
        assert _files(Artifacts(roots["dask"])) == _files(Artifacts(roots["local"]))
