"""The ingest flow's failure hook: one line with the cause, whatever the state carries."""

from __future__ import annotations

import pytest
from prefect.states import Failed

from embedline.flows.runtime import failure_cause

pytestmark = pytest.mark.unit


def test_cause_is_the_exception_first_line() -> None:
    state = Failed(data=ValueError("no usable documents in data/raw\nsee rejected.jsonl"))
    assert failure_cause(state) == "ValueError: no usable documents in data/raw"


def test_cause_falls_back_to_the_state_message() -> None:
    assert failure_cause(Failed(message="Flow run crashed: killed")) == "Flow run crashed: killed"


def test_ingest_flow_declares_the_hook() -> None:
    from embedline.flows.ingest import ingest
    from embedline.flows.runtime import report_failure

    assert report_failure in ingest.on_failure_hooks
    assert report_failure in ingest.on_crashed_hooks
