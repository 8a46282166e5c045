"""Fixtures shared by the real-DVC tests: one built project per session, a private copy per test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedline.tasks.vectorsets.stores import close_stores
from tests.dvcrepo import Repo, build_repo


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dvc-scratch")


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, scratch: Path) -> tuple[Repo, list[str]]:
    """The tiny project after its first `dvc repro` (and the stages that run ran)."""
    repo = build_repo(tmp_path_factory.mktemp("dvc") / "proj", scratch)
    ran = repo.repro()
    return repo, ran


@pytest.fixture
def work(built: tuple[Repo, list[str]], tmp_path: Path, scratch: Path) -> Iterator[Repo]:
    """A private copy of the built project (git, DVC cache, outputs, embedding cache, Qdrant)."""
    src, _ = built
    dst = tmp_path / "proj"
    shutil.copytree(src.path, dst, symlinks=True)
    yield Repo(dst, {**src.env, "PYTHONPATH": str(dst)})
    close_stores()
