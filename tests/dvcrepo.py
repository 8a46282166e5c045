"""Build throw-away git + DVC copies of the project for the DVC integration tests.

A copy holds exactly what dvc.yaml names (the tasks/ and flows/ code, dvc.yaml, params.yaml on the
fake embedder, .dvcignore, .gitignore), a tiny corpus and a labelled query set for it. Commands run
with the copy first on PYTHONPATH, so the code a stage runs is the code its deps hash, and with
DVC's site cache, global config and Prefect home inside the test's temp folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
STAGES = ("preprocess", "chunk", "embed", "dedupe", "upsert", "evaluate", "promote", "finetune")
# DVC's own .gitignore files next to the outputs, committed so a run leaves `git status` clean
GITIGNORES = (
    *(f"data/{d}/.gitignore" for d in ("interim", "embeddings", "receipts", "metrics")),
    "data/finetune/.gitignore", "models/.gitignore",  # the finetune stage's pairs and model
)
RUNNING = re.compile(r"Running stage '([^']+)'")

# Short documents that fit any chunk window, and one long one that chunk.max_tokens=64 splits
# differently from the default 256 (so a chunking change re-embeds only the long document's text).
DOCS = {
    "space/black_holes.md": "# Black holes\n\nA black hole forms when a massive star collapses under "
    "its own gravity. Nothing, not even light, escapes past the event horizon.\n",
    "kitchen/bread.txt": "Bread rises because yeast ferments sugars and releases carbon dioxide. "
    "Knead the dough for ten minutes.\n",
    "kitchen/bread_copy.txt": "Bread rises because yeast ferments sugars and releases carbon dioxide. "
    "Knead the dough for ten minutes.\n",
    # a near-duplicate of bread.txt: cosine ~0.89 under the fake embedder, so dedupe.threshold=0.85
    # merges it and the default 0.95 does not
    "kitchen/bread_v2.txt": "Bread rises because yeast ferments sugar and releases carbon dioxide. "
    "Knead the dough for twelve minutes.\n",
    "net/tcp.txt": "TCP provides reliable, ordered delivery of a byte stream. It opens a connection "
    "with a three-way handshake.\n",
    "garden/tomatoes.md": "# Growing tomatoes\n\nTomatoes need six to eight hours of sun a day.\n",
    "history/printing.txt": " ".join(
        [
            "Johannes Gutenberg built a printing press with movable metal type around 1440 in Mainz.",
            "His workshop printed the famous forty-two line Bible, a book of great beauty and precision.",
            "Printing spread quickly across Europe, and by 1500 presses ran in more than 250 cities.",
            "Cheap books changed how scholars shared ideas, and literacy rose among merchants.",
            "The Reformation relied on pamphlets that printers produced by the thousand each week.",
            "Newspapers appeared in the seventeenth century, first as weekly sheets of foreign news.",
            "Steam-powered presses in the nineteenth century printed thousands of pages every hour.",
        ]
    )
    + "\n",
}
QUERIES = {
    "q1": ("How do black holes form from collapsing stars?", "space/black_holes.md"),
    "q2": ("How does TCP open a connection with a handshake?", "net/tcp.txt"),
    "q3": ("Who built the printing press with movable metal type?", "history/printing.txt"),
}
FAKE_PARAMS = {
    "embed.provider": "fake",
    "embed.model": "fake-hash",
    "eval.map_sample": 50,
}


@dataclass
class Repo:
    """A git + DVC project copy and the environment its commands run in."""

    path: Path
    env: dict[str, str]

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            list(args), cwd=self.path, env=self.env, text=True, capture_output=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        return proc

    def dvc(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.run(str(VENV_BIN / "dvc"), *args, check=check, timeout=timeout)

    def git(self, *args: str) -> str:
        return self.run("git", *args).stdout

    def embedline(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.run(str(VENV_BIN / "embedline"), *args, check=check, timeout=timeout)

    def repro(self, *args: str) -> list[str]:
        """`dvc repro`; returns the names of the stages that ran, in order."""
        proc = self.dvc("repro", *args)
        return RUNNING.findall(proc.stdout + proc.stderr)

    def set_params(self, **dotted: Any) -> None:
        """Edit params.yaml in place (keys as section__key=value)."""
        path = self.path / "params.yaml"
        params = yaml.safe_load(path.read_text())
        _apply(params, {k.replace("__", "."): v for k, v in dotted.items()})
        path.write_text(yaml.safe_dump(params, sort_keys=False))

    def json(self, rel: str) -> Any:
        return json.loads((self.path / rel).read_text())

    def lock(self) -> dict[str, Any]:
        return yaml.safe_load((self.path / "dvc.lock").read_text())

    def commit_all(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)


def _apply(params: dict[str, Any], dotted: dict[str, Any]) -> None:
    for key, value in dotted.items():
        node = params
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value


def repo_env(path: Path, scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "DVC_", "GIT_"))}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(path),
        DVC_NO_ANALYTICS="1",
        DVC_STUDIO_OFFLINE="1",
        DVC_SITE_CACHE_DIR=str(scratch / "dvc-site-cache"),
        DVC_GLOBAL_CONFIG_DIR=str(scratch / "dvc-global"),
        PREFECT_HOME=str(scratch / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        GIT_AUTHOR_NAME="embedline-test",
        GIT_AUTHOR_EMAIL="test@embedline.invalid",
        GIT_COMMITTER_NAME="embedline-test",
        GIT_COMMITTER_EMAIL="test@embedline.invalid",
        GIT_CONFIG_NOSYSTEM="1",
        HOME=str(scratch / "home"),
    )
    (scratch / "home").mkdir(parents=True, exist_ok=True)
    return env


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def build_repo(path: Path, scratch: Path, params: dict[str, Any] | None = None) -> Repo:
    """A committed git + DVC copy of the project at ``path`` (no stage run yet)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("tasks", "flows"):
        shutil.copytree(PROJECT / pkg, path / pkg, ignore=ignore)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore", *GITIGNORES):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / name, path / name)
    settings = yaml.safe_load((PROJECT / "params.yaml").read_text())
    _apply(settings, {**FAKE_PARAMS, **(params or {})})
    _write(path / "params.yaml", yaml.safe_dump(settings, sort_keys=False))
    for rel, text in DOCS.items():
        _write(path / "data" / "raw" / rel, text)
    dataset = path / "data" / "eval"
    _write(
        dataset / "queries.jsonl",
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, (t, _) in QUERIES.items()),
    )
    _write(
        dataset / "qrels" / "test.tsv",
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, (_, d) in QUERIES.items()),
    )
    repo = Repo(path, repo_env(path, scratch))
    repo.git("init", "-q", "-b", "main")
    repo.dvc("init", "-q")
    repo.dvc("config", "core.autostage", "false")
    repo.commit_all("tiny embedline project")
    return repo


def clone(src: Repo, path: Path, scratch: Path) -> Repo:
    """`git clone` of ``src``: Git-tracked files only (no DVC cache, no data/cache, no Qdrant)."""
    subprocess.run(
        ["git", "clone", "-q", str(src.path), str(path)], check=True, env=src.env, capture_output=True
    )
    return Repo(path, repo_env(path, scratch))
