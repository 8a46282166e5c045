"""Issue 14 row 10: a hub model not on disk yet must get one cache namespace, before and after its
first load (it got "hf:<id>@unresolved" first and the hash of its files later: the final assembly
found no cached vectors and the next run re-embedded everything)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest

from embedline.tasks.config import EmbedParams
from embedline.tasks.embed import registry
from embedline.tasks.embed.cache import namespace_for
from embedline.tasks.tokenize import resolve_model

pytestmark = pytest.mark.unit


class FakeHub:
    """A hub holding one model: `snapshot_download` copies it into a local cache folder."""

    def __init__(self, cache: Path):
        self.cache = cache
        self.downloads = 0

    def snapshot_download(self, repo_id: str, revision: str | None = None, local_files_only: bool = False,
                          **_: Any) -> str:
        target = self.cache / repo_id.replace("/", "--")
        if target.is_dir():
            return str(target)
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError(f"{repo_id} is not in the cache")
        shutil.copytree(resolve_model("all-MiniLM-L6-v2"), target)  # what a first load downloads
        self.downloads += 1
        return str(target)


def test_namespace_is_the_same_before_and_after_the_model_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    params = EmbedParams.model_validate({"provider": "sentence-transformers", "model": "acme/tiny-embedder"})
    before = namespace_for(params, registry.revision_for(params))  # nothing on disk yet
    hub.snapshot_download("acme/tiny-embedder")  # the first model load fetches the files
    after = namespace_for(params, registry.revision_for(params))
    assert before == after
    assert hub.downloads == 1
    assert not registry.revision_for(params).startswith("hf:")  # the files' hash, not a placeholder
