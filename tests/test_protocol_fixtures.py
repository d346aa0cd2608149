"""The golden frames: every c2s frame produced byte for byte, every s2c frame decoded to the
right type, every malformed frame rejected with ProtocolError and nothing else."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict

import pytest

import simsync.protocol as P
from tests.fixtures import compact, frames, rows

pytestmark = pytest.mark.timeout(30)

SID = "backtest_0199d3c2-5b1e-7a4c-9f1e-2b7c6d5e4f30"
SID2 = "backtest_0199d3c2-6c2f-7b5d-8e2a-3c8d7e6f5a41"
PID = "parallel_0199d3c2-4a0d-7f3b-9a9e-1a6b5c4d3e2f"
SYSTEM = "11111111111111111111111111111111"
JUP = "JUP6LkbZbjS1jKKwapdHNy74zcZ3tLUZoi5QNyVTaV4"

#: The dataclass a user (or simsync) builds for each c2s fixture, by the fixture's note.
REQUESTS: Dict[str, Any] = {
    "create, single session, canonical": P.CreateBacktestSession(P.CreateSessionParams(
        400000000, 400000010, send_summary=True, disconnect_timeout_secs=900)),
    "create, parallel": P.CreateBacktestSession(P.CreateSessionParams(
        400000000, 400100000, parallel=True, disconnect_timeout_secs=900)),
    "create with a discovery filter": P.CreateBacktestSession(P.CreateSessionParams(
        400000000, 400000005, discoveries=[{"programExecuted": JUP}])),
    "continue, one block, nothing injected": P.Continue(P.ContinueParams(1)),
    "continue with a transaction and an account override": P.Continue(P.ContinueParams(
        1, ("AQABAgMEBQYHCAkKCwwNDg8=",),
        {"So11111111111111111111111111111111111111112":
         P.AccountData.of(b"\0\0\0\0", SYSTEM, 33594)})),
    "continueTo a discovered batch": P.ContinueTo(400000003, 2),
    "close": P.CloseBacktestSession(),
    "attach after a drop, with cursor": P.AttachBacktestSession(SID, 42),
    "attach with no cursor: replay everything buffered": P.AttachBacktestSession(SID, None),
    "resume after re-attach and re-subscribe": P.ResumeAttachedSession(),
    "parallel: step one sub-session": P.ContinueSessionV1(SID, P.ContinueParams(5)),
    "parallel: continueTo one sub-session": P.ContinueToSessionV1(SID, 400000003, 2),
    "parallel: close one sub-session": P.CloseSessionV1(SID),
    "parallel: re-attach with per-session cursors":
        P.AttachParallelControlSessionV2(PID, {SID: 17, SID2: 9}),
    "subscribe to transactions": P.Subscribe(1, "transactionSubscribe",
                                             {"programIds": [SYSTEM]}, {"commitment": "confirmed"}),
    "re-subscribe after a drop, resuming at a slot": P.Subscribe(
        2, "transactionSubscribe", {"programIds": [SYSTEM]},
        {"commitment": "confirmed", "replayFromSlot": 400000001}),
    "subscribe to account diffs": P.Subscribe(3, "accountDiffSubscribe",
                                              {"programIds": [SYSTEM]}, {}),
}

#: The type each s2c fixture must decode to (by note), and the seq id it carries.
EXPECTED_TYPE = {
    "session created": P.SessionCreated, "session attached": P.SessionAttached,
    "status": P.Status, "slot notification": P.Slot, "ready for continue": P.ReadyForContinue,
    "discovery batch": P.DiscoveryBatch, "paused": P.Paused, "success": P.Success,
    "completed": P.Completed, "error": P.ServerError, "parallel: one sub-session created":
    P.SessionCreated, "parallel: all created": P.SessionsCreatedV2,
    "parallel: too-old server": P.SessionsCreatedV2, "parallel: multiplexed":
    P.SessionEventV2, "parallel: re-attached": P.ParallelSessionAttachedV2,
    "legacy parallel reply": P.SessionsCreated, "method unknown": P.UnknownResponse,
    "sequenced ready": P.ReadyForContinue, "sequenced slot": P.Slot,
    "sequenced status": P.Status, "subscribe ack": P.SubscriptionAck,
    "subscribe refused": P.SubscriptionRefused, "transaction notification": P.Transaction,
    "account diff notification": P.AccountDiff, "account created": P.AccountDiff,
    "end of stream": P.SubscriptionComplete,
}

C2S = frames("control.jsonl", "c2s") + frames("dataplane.jsonl", "c2s")
S2C = frames("control.jsonl", "s2c") + frames("dataplane.jsonl", "s2c")


def expected_type(note: str) -> type:
    matches = [t for prefix, t in EXPECTED_TYPE.items() if note.startswith(prefix)]
    assert matches, f"no expected type for fixture {note!r}"
    return max(((len(p), t) for p, t in EXPECTED_TYPE.items() if note.startswith(p)),
               key=lambda pair: pair[0])[1]


def test_every_c2s_fixture_has_a_request() -> None:
    assert sorted(REQUESTS) == sorted(row["note"] for row in C2S)


@pytest.mark.parametrize("row", C2S, ids=lambda r: r["note"])
def test_encode_request_is_byte_for_byte(row: Dict[str, Any]) -> None:
    assert P.encode_request(REQUESTS[row["note"]]) == compact(row["frame"])


@pytest.mark.parametrize("row", C2S, ids=lambda r: r["note"])
def test_decode_request_reads_canonical_requests(row: Dict[str, Any]) -> None:
    assert P.decode_request(compact(row["frame"])) == REQUESTS[row["note"]]


@pytest.mark.parametrize("row", S2C, ids=lambda r: r["note"])
def test_decode_response_types(row: Dict[str, Any]) -> None:
    seq_id, response = P.decode_response(compact(row["frame"]))
    assert isinstance(response, expected_type(row["note"]))
    assert seq_id == row["frame"].get("seqId")


@pytest.mark.parametrize("row", S2C, ids=lambda r: r["note"])
def test_decode_accepts_binary_frames(row: Dict[str, Any]) -> None:
    text = compact(row["frame"])
    assert P.decode_response(text.encode("utf-8")) == P.decode_response(text)


def test_camel_case_session_created_equals_snake_case() -> None:
    created = [P.decode_response(compact(r["frame"]))[1] for r in S2C
               if r["note"].startswith("session created")]
    assert created[0] == created[1]
    assert created[2].task_id == "task-7"


def test_error_table_decisions() -> None:
    errors = {r["note"]: P.decode_response(compact(r["frame"]))[1] for r in S2C
              if r["frame"].get("method") == "error"}
    fatal = {note: err.fatal for note, err in errors.items()}
    assert fatal == {
        "error without fields (fatal)": True,
        "error with fields (not fatal)": False,
        "error, PascalCase variant": True,
        "error: per-slot simulation error, log and go on": False,
        "error: bundle not found during create (fatal)": True,
    }
    pascal = errors["error, PascalCase variant"]
    assert pascal.kind == "sessionNotFound" and pascal.fields == {"session_id": SID}


def test_summary_fields() -> None:
    row = next(r for r in S2C if r["note"] == "completed with summary")
    completed = P.decode_response(compact(row["frame"]))[1]
    assert completed.summary == P.Summary(120, 2, 1, 0, 1, 0, None)


def test_transaction_signature_from_wire_bytes() -> None:
    raw = bytes([1]) + bytes(range(64)) + b"\x01\x02"
    import base64

    frame = {"jsonrpc": "2.0", "method": "transactionNotification", "params": {
        "subscription": 1, "result": {"slot": 5, "transaction": [
            base64.b64encode(raw).decode(), "base64"]}}}
    tx = P.decode_response(compact(frame))[1]
    assert tx.signature_bytes == bytes(range(64))
    import base58

    assert tx.signature == base58.b58encode(bytes(range(64))).decode()


@pytest.mark.parametrize("row", rows("malformed.jsonl"), ids=lambda r: repr(r["raw"])[:40])
def test_malformed_frames_raise_protocol_error(row: Dict[str, Any]) -> None:
    with pytest.raises(P.ProtocolError) as info:
        P.decode_response(row["raw"])
    assert len(str(info.value)) < 200


def test_protocol_error_excerpt_is_short() -> None:
    frame = '{"method":"slotNotification","params":"' + "x" * 10_000 + '"}'
    with pytest.raises(P.ProtocolError) as info:
        P.decode_response(frame)
    assert len(str(info.value)) < 200


# ----------------------------------------------------------------------------- schema agreement


def _schema_params(cls: type, params: Any) -> Any:
    """Rename a frame's keys to the schema's wire names (the accepted casings), so that
    dataclasses-json's generic ``from_dict`` reads every accepted form."""
    if not isinstance(params, dict) or not dataclasses.is_dataclass(cls):
        return params
    camel = getattr(cls, "dataclass_json_config", None) is not None
    out = {}
    for key, value in params.items():
        snake = P.server_errors.snake_case(key)
        parts = snake.split("_")
        out[parts[0] + "".join(p.title() for p in parts[1:]) if camel else snake] = value
    return out


def schema_decode(frame: Dict[str, Any]) -> Any:
    """The slow reference path: dataclasses-json ``from_dict`` of the frame's params."""
    method, params = frame["method"], frame.get("params")
    types = {t.METHOD: t for t in (P.SessionCreated, P.SessionAttached, P.SessionsCreatedV2,
                                   P.SessionsCreated, P.ParallelSessionAttachedV2, P.Paused,
                                   P.DiscoveryBatch, P.Status, P.Completed)}
    if method in ("readyForContinue", "success"):
        return {"readyForContinue": P.ReadyForContinue, "success": P.Success}[method]()
    if method == "slotNotification":
        return P.Slot.from_dict({"slot": params})
    if method == "sessionEventV2":
        inner = P.decode_response(compact(params["event"]))[1]
        return P.SessionEventV2(params["session_id"], params["seq_id"], inner)
    cls = types.get(method)
    if cls is None:
        return P.UnknownResponse.from_dict({"method": method, "params": params})
    return cls.from_dict(_schema_params(cls, params), infer_missing=True)


#: Error frames are tagged unions that dataclasses-json cannot express; the table test
#: above covers them.
TYPED_S2C = [r for r in frames("control.jsonl", "s2c") if r["frame"]["method"] != "error"]


@pytest.mark.parametrize("row", TYPED_S2C, ids=lambda r: r["note"])
def test_fast_path_agrees_with_dataclasses_json(row: Dict[str, Any]) -> None:
    reference = schema_decode(row["frame"])
    assert P.decode_response(compact(row["frame"]))[1] == reference
