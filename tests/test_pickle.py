"""Configs, create params, events and summaries are plain data: they pickle, so work can be
fanned out to processes (multiprocessing, concurrent.futures, Dask-like executors)."""
from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

import simsync
from simsync.protocol import decode_response
from tests.fixtures import compact, frames

pytestmark = pytest.mark.timeout(30)

EVENTS = [decode_response(compact(r["frame"]))[1]
          for r in frames("control.jsonl", "s2c") + frames("dataplane.jsonl", "s2c")]


@pytest.mark.parametrize("value", [
    simsync.ClientConfig(ping_interval=1.0, dead_after=3.0, extra_headers={"X-Trace": "1"}),
    simsync.CreateSessionParams(1, 2, send_summary=True, discoveries=[{"programExecuted": "x"}],
                                extra={"agents": [{"name": "a"}]}),
    simsync.AccountData.of(b"\x01\x02", "11111111111111111111111111111111", 5),
    simsync.Summary(1, 2, 3, 4, 5, 6, None, {"newField": 7}),
    simsync.SessionInfo("id", "/backtest/id", None),
    *EVENTS,
], ids=lambda v: type(v).__name__)
def test_round_trips_through_pickle(value: Any) -> None:
    assert pickle.loads(pickle.dumps(value)) == value


def test_transaction_signature_survives_pickle() -> None:
    transaction = next(e for e in EVENTS if isinstance(e, simsync.Transaction))
    copy = pickle.loads(pickle.dumps(transaction))
    assert copy.signature == transaction.signature


def test_events_serialise_to_plain_dicts() -> None:
    completed = next(e for e in EVENTS if isinstance(e, simsync.Completed) and e.summary)
    as_dict = completed.to_dict()
    json.dumps(as_dict)
    assert as_dict["summary"]["correctSimulation"] == 120
