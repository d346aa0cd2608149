"""Parallel mode (PROTOCOL.md §8): split by bundle, sessionEventV2, V1 steps, parallel attach."""
from __future__ import annotations

from typing import Dict, List

import pytest

from simsync.localsim import Fault
from simsync.localsim.testing import START, Control, method_of, wait_for

pytestmark = pytest.mark.timeout(30)


def _create(c: Control, start: int, end: int, **extra) -> Dict:
    c.send("createBacktestSession", {"startSlot": start, "endSlot": end, "parallel": True,
                                     **extra})
    created = c.until("sessionsCreatedV2")
    return created[-1]["params"]


def _events(frames: List[Dict], sid: str) -> List[Dict]:
    return [f["params"] for f in frames
            if f["method"] == "sessionEventV2" and f["params"]["session_id"] == sid]


def _drive(c: Control, sids: List[str], nested: bool = False) -> None:
    """Step every sub-session to completion, one block at a time, round robin."""
    ready = {sid: 0 for sid in sids}  # pauses seen
    done: set = set()
    while len(done) < len(sids):
        frame = c.recv()
        if frame["method"] != "sessionEventV2":
            continue
        sid, event = frame["params"]["session_id"], frame["params"]["event"]
        if event["method"] == "completed":
            done.add(sid)
        elif event["method"] == "readyForContinue":
            ready[sid] += 1
            body = {"advanceCount": 3}
            c.send("continueSessionV1", {"sessionId": sid, "request": body} if nested
                   else {"sessionId": sid, **body})


@pytest.mark.parametrize("nested", [False, True])
def test_parallel_split_and_run_to_completion(make_sim, clients, nested: bool) -> None:
    sim = make_sim(bundle_size=20, bundles=3)
    c = clients["control"](sim)
    start, end = START + 5, START + 45
    params = _create(c, start, end)
    created = [f for f in c.frames if f["method"] == "sessionCreated"]
    assert [f["params"]["session_id"] for f in created] == params["session_ids"]
    assert params["control_session_id"].startswith("parallel_")
    assert params["start_slots"] == [start, START + 20, START + 40]
    assert params["end_slots"] == [START + 19, START + 39, end]
    assert params["task_ids"] == [None, None, None]
    _drive(c, params["session_ids"], nested)
    for sid, lo, hi in zip(params["session_ids"], params["start_slots"], params["end_slots"]):
        events = _events(c.frames, sid)
        seqs = [e["seq_id"] for e in events]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        slots = [e["event"]["params"] for e in events
                 if e["event"]["method"] == "slotNotification"]
        assert slots == sim.produced_slots(lo, hi)
        assert {e.slot for e in sim.executed(sid)} == set(sim.produced_slots(lo, hi))
    c.send("closeBacktestSession")
    assert c.recv() == {"method": "success"}
    assert sim.session_ids() == []


def test_parallel_continue_to_and_close_one(make_sim, clients) -> None:
    sim = make_sim(bundle_size=20, bundles=2)
    c = clients["control"](sim)
    params = _create(c, START, START + 39)
    first, second = params["session_ids"]
    target = sim.produced_slots(START + 3, START + 10)[0]
    seen = {first: False, second: False}
    while not all(seen.values()):
        f = c.recv()
        if f["method"] == "sessionEventV2" and f["params"]["event"]["method"] == \
                "readyForContinue":
            seen[f["params"]["session_id"]] = True
    c.send("continueToSessionV1", {"sessionId": first, "slot": target, "batchIndex": 0})
    paused = [f for f in c.until("paused") if method_of(f) == "paused"][-1]
    assert paused["params"]["session_id"] == first
    assert paused["params"]["event"]["params"] == {"slot": target, "batchIndex": 0}
    c.send("closeSessionV1", {"sessionId": second})
    ack = c.until("success")[-1]["params"]
    assert ack["session_id"] == second and ack["event"] == {"method": "success"}
    assert sim.session_ids() == [first]
    c.send("continueSessionV1", {"sessionId": "backtest_unknown", "advanceCount": 1})
    assert "sessionNotFound" in c.recv()["params"]
    c.send("continue", {"advanceCount": 1})
    assert "invalidRequest" in c.recv()["params"]


def test_parallel_attach_with_cursors(make_sim, clients) -> None:
    sim = make_sim(bundle_size=20, bundles=2)
    sim.faults.add(Fault("drop", after_frames=6))
    sim.faults.add(Fault("reannounce", mode="always", times=0))  # re-announce even if replayed
    c = clients["control"](sim)
    c.send("createBacktestSession", {"startSlot": START, "endSlot": START + 39,
                                     "parallel": True, "disconnectTimeoutSecs": 30})
    got = [c.recv() for _ in range(6)]
    assert got[2]["method"] == "sessionsCreatedV2"
    group = got[2]["params"]
    cursors: Dict[str, int] = {}
    for f in got[3:]:
        cursors[f["params"]["session_id"]] = f["params"]["seq_id"]
    for sid in group["session_ids"]:  # both idle, so the resume re-announces both pauses
        wait_for(lambda sid=sid: sim.session_info(sid)["state"] == "idle", what="idle")
    c2 = clients["control"](sim)
    c2.send("attachParallelControlSessionV2", {"control_session_id": group["control_session_id"],
                                               "last_sequences": cursors})
    attached = c2.recv()
    assert attached == {"method": "parallelSessionAttachedV2", "params": {
        "control_session_id": group["control_session_id"],
        "session_ids": group["session_ids"], "task_ids": [None, None]}}
    c2.send("resumeAttachedSession")
    frames = c2.until("success")
    pauses = {sid: 0 for sid in group["session_ids"]}
    for f in frames:
        if method_of(f) == "readyForContinue":
            pauses[f["params"]["session_id"]] += 1
    while sum(pauses.values()) < 4:  # replayed/held pause + re-announced pause, per session
        f = c2.recv()
        frames.append(f)
        if method_of(f) == "readyForContinue":
            pauses[f["params"]["session_id"]] += 1
    assert pauses == {sid: 2 for sid in group["session_ids"]}
    for sid in group["session_ids"]:
        seqs = [e["seq_id"] for e in _events(got + frames, sid)]
        assert seqs == list(range(1, len(seqs) + 1)), sid
    c2.send("attachParallelControlSessionV2", {"control_session_id": "parallel_nope",
                                               "last_sequences": {}})
    assert "invalidRequest" in c2.recv()["params"]  # this connection already drives one
    c3 = clients["control"](sim)
    c3.send("attachParallelControlSessionV2", {"control_session_id": "parallel_nope",
                                               "last_sequences": {}})
    assert c3.recv() == {"method": "error", "params": {"sessionNotFound": {
        "session_id": "parallel_nope"}}}
