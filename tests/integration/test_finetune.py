"""Fine-tuning end to end, on tiny corpora, with real stores and real (tiny) models.

- the stage on a BEIR set with a corpus and a train split: base vs fine-tuned on the held-out split;
- the stage without a train split: pairs mined from the served vector set;
- the lifecycle: a fine-tuned model's shadow vector set is refused by the gate when it loses (the
  alias stays), promoted when it wins, and never evaluated on its training queries.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import load_config
from embedline.tasks.finetune.pairs import LeakageError, Pair, read_pairs
from embedline.tasks.finetune.train import INFO_FILE, train_model
from embedline.tasks.pipeline import INGEST_STAGES, run_stage
from embedline.tasks.vectorsets.stores import close_stores, open_store
from tests.conftest import FAKE, make_project
from tests.finetunedata import TOPICS, build_tiny_model, write_beir

pytestmark = pytest.mark.integration

DOCS = {f"{t}.txt": text + "\n" for t, (_, text) in TOPICS.items()}
TRAIN, TEST = ["bread", "tcp", "printing"], ["black_holes", "tomatoes", "volcano"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(autouse=True)
def _close() -> object:
    yield
    close_stores()


def _train_tiny(tiny: Path, out: Path, pairs: list[Pair]) -> Path:
    ft = load_config(None, ["finetune.batch_size=2", "finetune.device=cpu", "finetune.max_seq_length=32"]).finetune
    train_model(pairs, str(tiny), out, ft, info={"fingerprint": "test"}, progress=False)
    return out


def test_stage_on_a_beir_split_reports_base_and_finetuned_on_held_out_queries(
    tmp_path: Path, tiny_model: Path
) -> None:
    from embedline.tasks.finetune.stage import pairs_path, run_finetune

    root = make_project(tmp_path / "proj", docs={})
    write_beir(root / "data" / "split", train=TRAIN, test=TEST)
    cfg = load_config(root / "params.yaml", [
        f"finetune.base_model={tiny_model}", "finetune.dataset=data/split", "finetune.batch_size=2",
        "finetune.device=cpu", "finetune.max_seq_length=32", "finetune.hard_negatives=true",
    ])
    art = Artifacts(root)
    stats = run_finetune(cfg, art, force=True, progress=False)
    assert stats["pair_source"] == "train-split" and stats["pairs"] == 3 == stats["pairs_train_split"], stats
    # one negative each: the nearest admissible passage of the base model's vector set, or (the
    # tiny random model puts every text close to every other: near-duplicates) a random one
    assert stats.get("pairs_hard_negatives", 0) + stats.get("pairs_random_negatives", 0) == 3, stats
    for m in ("ndcg@10", "mrr@10", "recall@100"):
        assert 0 <= stats[f"base_{m}"] <= 1 and 0 <= stats[f"finetuned_{m}"] <= 1
        assert stats[f"delta_{m}"] == pytest.approx(stats[f"finetuned_{m}"] - stats[f"base_{m}"], abs=1e-5)
    pairs = read_pairs(pairs_path(art))
    assert sorted(p.query_id for p in pairs) == sorted(TRAIN)  # never a held-out query
    assert all(p.negative and p.negative_doc not in p.docs for p in pairs)
    info = json.loads((root / "models" / "finetuned" / INFO_FILE).read_text())
    assert info["trained"] and info["fingerprint"] == stats["model_fingerprint"]
    report = json.loads((root / "data" / "eval-runs" / "split" / "report.json").read_text())
    assert report["split"] == "test" and report["queries"] == len(TEST)
    assert report["model"] == str(root / "models" / "finetuned")  # the last scored: the fine-tuned one


def test_stage_pairs_both_adds_title_pairs_mined_from_the_beir_corpus(tmp_path: Path, tiny_model: Path) -> None:
    from embedline.tasks.finetune.stage import pairs_path, run_finetune
    from tests.finetunedata import title_of

    root = make_project(tmp_path / "proj", docs={})
    write_beir(root / "data" / "split", train=TRAIN, test=TEST, titles=True)
    cfg = load_config(root / "params.yaml", [
        f"finetune.base_model={tiny_model}", "finetune.dataset=data/split", "finetune.batch_size=2",
        "finetune.device=cpu", "finetune.max_seq_length=32", "finetune.pairs=both", "finetune.max_pairs=8",
    ])
    art = Artifacts(root)
    stats = run_finetune(cfg, art, force=True, progress=False)
    # 3 labelled + 6 title pairs (every corpus document, held-out ones included: no query is read)
    assert stats["pair_source"] == "train-split+mined", stats
    assert (stats["pairs_train_split"], stats["pairs_title"], stats["pairs_over_max_pairs"]) == (3, 6, 1), stats
    assert stats["pairs"] == 8
    pairs = read_pairs(pairs_path(art))
    held_out = {TOPICS[t][0] for t in TEST}
    assert {p.query_id for p in pairs} - {None} <= set(TRAIN) and not {p.anchor for p in pairs} & held_out
    titled = {p.anchor: p.positive for p in pairs if p.kind == "title"}
    assert titled and all(pos == TOPICS[a.split("notes on ")[1][:-2].replace(" ", "_")][1] for a, pos in titled.items())
    assert set(titled) <= {title_of(t) for t in TOPICS}
    info = json.loads((root / "models" / "finetuned" / INFO_FILE).read_text())
    assert info["params"]["pairs"] == "both" and info["fingerprint"] == stats["model_fingerprint"]


def test_stage_without_a_train_split_mines_pairs_from_the_served_vector_set(
    tmp_path: Path, tiny_model: Path
) -> None:
    from embedline.tasks.finetune.stage import run_finetune

    root = make_project(tmp_path / "proj", {**FAKE, "eval.gate": False})
    art = Artifacts(root)
    cfg = load_config(root / "params.yaml", [
        f"finetune.base_model={tiny_model}", "finetune.batch_size=2", "finetune.device=cpu",
        "finetune.max_seq_length=32",
    ])
    for stage in INGEST_STAGES:
        run_stage(stage, cfg, art)
    stats = run_finetune(cfg, art, force=True, progress=False)
    assert stats["pair_source"] == "mined" and stats["vector_set"] == cfg.qdrant.collection
    # black_holes.md: "Black holes" + "Black holes > Observation"; tomatoes.md: "Growing tomatoes";
    # the .txt files: their first line as title (bread and its copy are one point: one pair)
    assert stats["pairs_heading"] == 3 and stats["pairs"] >= 4
    assert "base_ndcg@10" not in stats  # no corpus in the dataset: the gate scores it on promotion


# ---- lifecycle -----------------------------------------------------------------------------------
def _project(root: Path, model: str) -> tuple[Path, Artifacts]:
    # keep_canonical: the tiny random model puts all texts near each other; dedupe keeps them all
    make_project(root, {"embed.model": model, "dedupe.policy": "keep_canonical"}, docs=DOCS)
    write_beir(root / "data" / "eval", train=[], test=list(TOPICS), corpus=False, doc_id=lambda t: f"{t}.txt")
    art = Artifacts(root)
    cfg = load_config(root / "params.yaml")
    for stage in INGEST_STAGES:
        run_stage(stage, cfg, art)
    return root, art


def _served(root: Path) -> str | None:
    cfg = load_config(root / "params.yaml")
    return open_store(cfg.qdrant, root).get_alias(cfg.qdrant.collection)


def test_a_finetuned_model_that_loses_is_refused_and_one_trained_on_eval_queries_is_an_error(
    tmp_path: Path, tiny_model: Path
) -> None:
    from embedline.tasks.finetune.lifecycle import serve_finetuned

    root, art = _project(tmp_path / "proj", "sentence-transformers/all-MiniLM-L6-v2")
    served = _served(root)
    assert served is not None
    # trained on mined-style pairs (no query ids): a tiny random model, it retrieves badly
    loser = _train_tiny(tiny_model, tmp_path / "loser", [
        Pair(f"about {t}", text, "title", (f"{t}.txt",)) for t, (_, text) in TOPICS.items()
    ])
    cfg = load_config(root / "params.yaml")
    result = serve_finetuned(cfg, art, str(loser))
    assert result["promoted"] is False and result["gate"] == "refused"
    assert result["shadow_ndcg@10"] < result["live_ndcg@10"] - cfg.eval.max_regression
    assert _served(root) == served  # the alias did not move
    assert open_store(cfg.qdrant, root).describe(result["collection"]) is not None  # kept for inspection
    # the pipeline's own DVC outputs were not touched by the shadow build
    assert json.loads((root / "data" / "embeddings" / "manifest.json").read_text())["model"] != str(loser)

    cheat = _train_tiny(tiny_model, tmp_path / "cheat", [
        Pair(q, text, "train-split", (f"{t}.txt",), query_id=t) for t, (q, text) in TOPICS.items()
    ])
    with pytest.raises(LeakageError, match="by text"):
        serve_finetuned(cfg, art, str(cheat))
    assert _served(root) == served


def test_a_finetuned_model_that_wins_is_promoted(tmp_path: Path, tiny_model: Path) -> None:
    from embedline.tasks.finetune.lifecycle import serve_finetuned
    from embedline.tasks.tokenize import resolve_model

    root, art = _project(tmp_path / "proj", str(tiny_model))  # served: the tiny random model
    before = _served(root)
    winner = tmp_path / "winner"  # all-MiniLM-L6-v2 standing in for a good fine-tuned model
    shutil.copytree(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), winner)
    (winner / INFO_FILE).write_text(json.dumps({"trained": True, "train_query_hashes": [], "fingerprint": "w"}))
    result = serve_finetuned(load_config(root / "params.yaml"), art, str(winner))
    assert result["promoted"] is True and result["gate"] == "passed"
    assert result["shadow_ndcg@10"] > result["live_ndcg@10"]
    assert _served(root) == result["collection"] != before


# ---- CLI -----------------------------------------------------------------------------------------
def test_cli_split_queries_and_finetune_errors(tmp_path: Path) -> None:
    from tests.integration.test_cli import embedline

    root = make_project(tmp_path / "proj", FAKE)
    write_beir(root / "src", train=[], test=list(TOPICS))
    res = embedline("split-queries", "src", "data/split", "--train-fraction", "0.5", cwd=root)
    assert res.returncode == 0, res.stderr
    assert (root / "data/split/qrels/train.tsv").is_file() and (root / "data/split/qrels/test.tsv").is_file()
    # a validation split carved out of the train split only (to tune without the held-out queries)
    res = embedline("split-queries", "data/split", "data/val", "--split", "train", "--train-fraction", "0.5",
                    cwd=root)
    assert res.returncode == 0, res.stderr

    def ids(path: str) -> set[str]:
        return {line.split("\t")[0] for line in (root / path).read_text().splitlines()[1:]}

    val = ids("data/val/qrels/train.tsv") | ids("data/val/qrels/test.tsv")
    assert val == ids("data/split/qrels/train.tsv") and not val & ids("data/split/qrels/test.tsv")
    res = embedline("finetune", "--set", "finetune.epoch=2", cwd=root)
    assert res.returncode == 2 and "finetune.epoch" in res.stderr and "epochs" in res.stderr
    res = embedline("finetune", "--no-train", "--promote", cwd=root)
    assert res.returncode == 1 and "run `embedline finetune` first" in " ".join(res.stderr.split())
    assert not (root / "data" / "interim").exists()  # nothing was built
