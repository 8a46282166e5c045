"""ruff gates every test run (complexity <= 12 and no unexplained blind except included); mypy
runs in `make lint`, which `make test` runs first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_passes() -> None:
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed in this environment (make install adds it)")
    proc = subprocess.run(
        [str(ruff), "check", "--output-format", "concise", "flows", "tasks", "tests", "benchmarks", "embedline"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_complexity_and_blind_except_rules_are_on() -> None:
    import tomllib

    lint = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert {"C901", "BLE001"} <= set(lint["select"]) and lint["mccabe"]["max-complexity"] == 12
