"""No silent tokenizer fallback (issue 14 row 13): without tiktoken's encoding file an API config
fails clearly, before any work; the regex estimate is used only when named in the params."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from embedline.tasks import resources
from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import EmbedParams, load_config
from embedline.tasks.preflight import PreflightError, check_ready
from embedline.tasks.tokenize import (
    COUNTER_KIND,
    ConservativeCounter,
    TokenizerUnavailableError,
    load_token_counter,
)

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def no_tiktoken_data(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import tiktoken

    def missing(name: str) -> None:
        raise ConnectionError("cannot download the encoding file (offline)")

    monkeypatch.setattr(tiktoken, "get_encoding", missing)
    resources.drop(COUNTER_KIND)
    yield
    resources.drop(COUNTER_KIND)


def api(**kw: object) -> EmbedParams:
    return EmbedParams.model_validate({"provider": "openai", "model": "text-embedding-3-small", **kw})


def test_missing_encoding_fails_clearly() -> None:
    with pytest.raises(TokenizerUnavailableError, match=r"'cl100k_base' cannot be loaded.*embed\.tokenizer=conservative"):
        load_token_counter(api())


def test_conservative_only_when_named() -> None:
    counter = load_token_counter(api(tokenizer="conservative"))
    assert isinstance(counter, ConservativeCounter) and counter.name == "conservative"
    assert counter.count("tokens of text") > 0


def test_preflight_reports_it_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "data" / "raw").mkdir(parents=True)
    cfg = load_config(None, {"source": "data/raw", "embed": api().model_dump(mode="json")})
    with pytest.raises(PreflightError, match=r"embed\.tokenizer"):
        check_ready(cfg, Artifacts(tmp_path))
    ok = load_config(None, {"source": "data/raw", "embed": api(tokenizer="conservative").model_dump(mode="json")})
    check_ready(ok, Artifacts(tmp_path))
