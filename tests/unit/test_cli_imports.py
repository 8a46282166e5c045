"""`embedline --help` and the search path stay light: no heavy module is imported at module level."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

HEAVY = ["pydantic", "prefect", "pyarrow", "torch", "transformers", "sentence_transformers", "httpx",
         "numpy", "qdrant_client", "dvc"]


def _imported_after(code: str) -> set[str]:
    probe = f"import sys; {code}; print(' '.join(sorted(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return {m.split(".")[0] for m in res.stdout.split()}


def test_cli_module_imports_nothing_heavy() -> None:
    loaded = _imported_after("import embedline.flows.cli")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_help_runs_without_heavy_imports() -> None:
    code = ("import sys; sys.argv = ['embedline', '--help']; from embedline.flows.cli import app\n"
            "try:\n    app()\nexcept SystemExit:\n    pass\nprint('MODULES', ' '.join(sorted(sys.modules)))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "search" in res.stdout and "ingest" in res.stdout
    loaded = {m.split(".")[0] for m in res.stdout.split("MODULES", 1)[1].split()}
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_console_params_file_matches_config() -> None:
    from embedline.flows.console import PARAMS_FILE
    from embedline.tasks.config import PARAMS_FILE as CONFIG_PARAMS_FILE

    assert PARAMS_FILE == CONFIG_PARAMS_FILE


def test_search_path_imports_no_pyarrow_pandas_or_tenacity() -> None:
    """What a cold `embedline search` imports before it embeds the query: no Parquet, no pandas
    (pq.read_table's 1.6 s import), no tenacity, no embed stage."""
    loaded = _imported_after(
        "import embedline.tasks.vectorsets.search, embedline.tasks.vectorsets.lifecycle, "
        "embedline.tasks.embed.query, embedline.tasks.embed.registry; "
        "from embedline.tasks.embed import embed_query"
    )
    assert not loaded & {"pyarrow", "pandas", "tenacity", "torch", "transformers"}, sorted(loaded)
    full = _full_modules_after("from embedline.tasks.embed import embed_query")
    assert "embedline.tasks.embed.stage" not in full


def _full_modules_after(code: str) -> set[str]:
    probe = f"import sys; {code}; print(' '.join(sorted(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(res.stdout.split())
