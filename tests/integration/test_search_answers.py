"""Issue 15, search that answers: hits grouped by document (best chunk + heading path), ``--chunks``
for the raw list, ``--json`` with collection and fingerprint, and linked near-duplicates still
findable (fake embedder, embedded Qdrant Edge)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import load_config
from tests.conftest import FAKE, make_project

pytestmark = pytest.mark.integration

_SECTION = ("The resolver sends the query to a root server, follows the referral to the top-level domain "
            "server and then asks the authoritative name server, caching each answer for its time to live. ")
_LICENCE = ("Licensed under the Apache License, Version {v}; you may not use this file except in compliance "
            "with the License. You may obtain a copy of the License at the project site and read it there.")
DOCS = {
    # one page with many chunks under several headings
    "net/dns.md": "# DNS resolution\n\n" + "".join(
        f"## Step {i}\n\n" + _SECTION * 4 + "\n\n" for i in range(1, 5)
    ),
    "net/tcp.txt": "TCP provides reliable, ordered delivery of a byte stream between applications and uses a "
    "three-way handshake to open a connection.\n",
    "kitchen/bread.txt": "Bread rises because yeast ferments sugars and releases carbon dioxide.\n",
    # versioned copies: near-identical text, merged by dedupe (policy link)
    "legal/v1/LICENSE.txt": _LICENCE.format(v="2.0"),
    "legal/v2/LICENSE.txt": _LICENCE.format(v="2.1"),
}


def _ingested(tmp_path: Path, docs: dict[str, str]) -> Iterator[Path]:
    """A project of ``docs`` ingested with the fake embedder (sparse vector on, 64-token chunks)."""
    from embedline.tasks.pipeline import INGEST_STAGES, run_stage
    from embedline.tasks.vectorsets.stores import close_stores

    root = make_project(tmp_path / "proj", {**FAKE, "qdrant.sparse": True, "chunk.max_tokens": 64}, docs=docs)
    cfg, art = load_config(root / "params.yaml"), Artifacts(root)
    for stage in INGEST_STAGES:
        run_stage(stage, cfg, art)
    yield root
    close_stores()


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    yield from _ingested(tmp_path, DOCS)


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_search_groups_hits_by_document(project: Path, mode: str) -> None:
    from embedline.tasks.vectorsets.search import search, search_documents

    cfg, art = load_config(project / "params.yaml"), Artifacts(project)
    raw = search(cfg, art, "resolver referral root server time to live", k=5, mode=mode)  # type: ignore[arg-type]
    assert [h.source for h in raw].count("net/dns.md") >= 3  # chunks of one page fill the raw list
    res = search_documents(cfg, art, "resolver referral root server time to live", k=5, mode=mode)  # type: ignore[arg-type]
    docs = [d.doc for d in res.documents]
    assert docs[0] == "net/dns.md" and len(docs) == len(set(docs)) >= 3
    top = res.documents[0]
    assert top.chunks > 1 and top.heading_path[0] == "DNS resolution" and top.best.payload["chunk_id"]
    assert not top.snippet.startswith(("#", "DNS resolution >"))
    assert res.collection.startswith("embedline-") and res.fingerprint and res.fingerprint in res.collection


def test_cli_search_json_and_chunks(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from embedline.flows.cli import app

    monkeypatch.chdir(project)
    runner = CliRunner()
    got = runner.invoke(app, ["search", "resolver root server", "-k", "3", "--json"])
    assert got.exit_code == 0, got.output
    rows = [json.loads(line) for line in got.output.splitlines() if line.startswith("{")]
    assert len(rows) == 3 and len({r["doc"] for r in rows}) == 3
    for key in ("collection", "fingerprint", "doc", "chunk", "score", "heading_path"):
        assert key in rows[0], key
    assert rows[0]["doc"] == "net/dns.md" and rows[0]["heading_path"][0] == "DNS resolution"
    raw = runner.invoke(app, ["search", "resolver root server", "-k", "3", "--chunks"])
    assert raw.exit_code == 0 and raw.output.count("net/dns.md") >= 2
    grouped = runner.invoke(app, ["search", "resolver root server", "-k", "3", "--hybrid"])
    assert grouped.exit_code == 0 and grouped.output.count("net/dns.md") == 1 and "§ DNS resolution" in grouped.output


def test_linked_duplicate_text_is_returned_by_search(project: Path) -> None:
    from embedline.tasks.vectorsets.search import search_documents

    cfg, art = load_config(project / "params.yaml"), Artifacts(project)
    rows = pq.read_table(art.deduped).to_pylist()
    linked = [(r, d) for r in rows for d in json.loads(r["duplicates"])]
    assert linked, "the versioned licence copies were not merged"
    for rep, dup in linked:
        assert dup["text"] and dup["source"]
        res = search_documents(cfg, art, dup["text"], k=3)
        hit = next(d for d in res.documents if d.best.payload["chunk_id"] == rep["chunk_id"])
        texts = [x.get("text") for x in hit.best.payload.get("duplicates") or []]
        assert dup["text"] in texts


def _entry(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The console script's entry point in a fresh process; prints whether Typer was imported."""
    code = ("import sys\nfrom embedline.flows.entry import main\n"
            f"sys.argv = ['embedline', *{list(args)!r}]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
            "print('TYPER', 'typer' in sys.modules, 'EXIT', code)")
    return subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "120"}, timeout=300)


@pytest.mark.parametrize("args", [
    ["resolver root server", "-k", "3"],
    ["-k", "3", "--json", "resolver root server"],
    ["resolver root server", "--chunks", "-k=2"],  # "-k=2" is not a plain form: Typer's own error
    ["resolver root server", "--chunks", "--json", "--set", "eval.gate=false", "-k", "2"],
    ["resolver root server", "--hybrid", "--params=params.yaml"],
    ["resolver root server", "--params", "missing.yaml"],  # a config error: exit 2, same message
    ["resolver root server", "--set", "embed.provider=nope"],
])
def test_search_fast_path_prints_what_typer_prints(project: Path, args: list[str]) -> None:
    """A plain `embedline search` runs without building the Typer app (no Typer import): output,
    errors and exit codes are those of the Typer command; other command lines go to Typer."""
    from embedline.tasks.vectorsets.stores import close_stores

    close_stores()  # the embedded store allows one process at a time
    fast = _entry(project, "search", *args)
    code = ("import sys\nfrom embedline.flows.cli import main\n"
            f"sys.argv = ['embedline', 'search', *{list(args)!r}]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
            "print('TYPER', 'typer' in sys.modules, 'EXIT', code)")
    typer_run = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True,
                               env={**os.environ, "COLUMNS": "120"}, timeout=300)
    plain = "-k=2" not in args
    assert fast.stdout.replace("TYPER False", "TYPER True") == typer_run.stdout
    assert fast.stderr == typer_run.stderr
    assert f"TYPER {not plain}" in fast.stdout
    if "missing.yaml" in args or "embed.provider=nope" in args:
        assert "EXIT 2" in fast.stdout and "config error" in fast.stderr
    elif plain:
        assert "EXIT 0" in fast.stdout and "net/dns.md" in fast.stdout


@pytest.mark.parametrize(("argv", "parsed"), [
    (["q"], {"query": "q"}),
    (["q", "-k", "7", "--json"], {"query": "q", "k": 7, "as_json": True}),
    (["--set", "a.b=1", "q", "-s", "c.d=2", "--hybrid", "--chunks"],
     {"query": "q", "set_": ["a.b=1", "c.d=2"], "hybrid": True, "chunks": True}),
    (["q", "--params=x/params.yaml", "--set=a.b=1"], {"query": "q", "params": Path("x/params.yaml"), "set_": ["a.b=1"]}),
    (["q", "--help"], None),
    (["--help"], None),
    ([], None),
    (["q", "r"], None),
    (["q", "-k"], None),
    (["q", "-k", "many"], None),
    (["q", "-k5"], None),
    (["q", "-k=5"], None),
    (["q", "--unknown"], None),
    (["--", "-q"], None),
    (["q", "--json=yes"], None),
])
def test_parse_search_takes_only_the_plain_forms(argv: list[str], parsed: dict[str, object] | None) -> None:
    from embedline.flows.lean import parse_search

    assert parse_search(argv) == parsed



@pytest.fixture
def long_page(tmp_path: Path) -> Iterator[Path]:
    """DOCS with the DNS page three times as long: its chunks alone fill the first 20 hits."""
    yield from _ingested(tmp_path, {**DOCS, "net/dns.md": "# DNS resolution\n\n" + "".join(
        f"## Step {i}\n\n" + _SECTION * 4 + "\n\n" for i in range(1, 13))})


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_search_returns_k_documents_when_one_page_fills_the_first_hits(long_page: Path, mode: str) -> None:
    """A page with more matching chunks than ``k`` x the fetch factor must not crowd out the other
    documents: ``-k 2`` answers two documents (it answered one), in the same order as a deep search."""
    from embedline.tasks.vectorsets.fusion import group_by_document
    from embedline.tasks.vectorsets.search import search, search_documents

    cfg, art = load_config(long_page / "params.yaml"), Artifacts(long_page)
    query = "resolver referral root server time to live"
    assert {h.source for h in search(cfg, art, query, k=20)} == {"net/dns.md"}  # one page fills them
    everything = [d.doc for d in group_by_document(search(cfg, art, query, k=1000))]
    for k in (1, 2, 4):
        docs = [d.doc for d in search_documents(cfg, art, query, k=k, mode=mode).documents]  # type: ignore[arg-type]
        assert len(docs) == len(set(docs)) == k and docs[0] == "net/dns.md"
        if mode == "dense":
            assert docs == everything[:k]


def test_lean_parser_knows_exactly_the_typer_search_options() -> None:
    """flows/lean.py parses `embedline search` before Typer is built: its option table must name the
    same options (and value/flag kinds) as the Typer command, so a new option cannot be silently
    missed by one path."""
    import typer.main

    from embedline.flows import lean
    from embedline.flows.cli import app

    cmd = typer.main.get_command(app).commands["search"]  # type: ignore[attr-defined]
    flags: set[str] = set()
    valued: set[str] = set()
    for p in cmd.params:
        if p.param_type_name == "option" and "--help" not in p.opts:
            (flags if p.is_flag else valued).update(p.opts)
    assert flags == set(lean._FLAGS)
    assert valued == set(lean._VALUED)
    assert [p.name for p in cmd.params if p.param_type_name == "argument"] == ["query"]
