"""Detach windows, attach + replay, resume + re-announced pauses (PROTOCOL.md §2, §12, §13)."""
from __future__ import annotations

import pytest
import websocket

from simsync.localsim import Fault, LocalSimulator
from simsync.localsim.testing import START, slots_of, wait_for

pytestmark = pytest.mark.timeout(30)


def _seqs(frames) -> list:
    return [f["seqId"] for f in frames if "seqId" in f]


def test_attach_replays_after_cursor_then_resume_reannounces_pause(sim: LocalSimulator,
                                                                   clients) -> None:
    sim.faults.add(Fault("reannounce", mode="always"))  # the pause is in the replay too
    c = clients["control"](sim)
    sid = c.create(end=START + 10, disconnectTimeoutSecs=30)
    c.step()
    seqs = _seqs(c.frames)
    cursor = seqs[len(seqs) // 2]
    c.close()
    wait_for(lambda: not sim.session_info(sid)["attached"], what="detached")
    assert sid in sim.session_ids()

    c2 = clients["control"](sim)
    c2.send("attachBacktestSession", {"session_id": sid, "last_sequence": cursor})
    attached = c2.recv()
    assert attached == {"method": "sessionAttached", "params": {
        "session_id": sid, "rpc_endpoint": f"/backtest/{sid}", "task_id": None}}
    replay = [c2.recv() for _ in range(seqs[-1] - cursor)]
    assert _seqs(replay) == list(range(cursor + 1, seqs[-1] + 1))
    assert [f["method"] for f in replay] == [f["method"] for f in c.frames[-len(replay):]]
    c2.send("resumeAttachedSession")
    assert c2.recv() == {"method": "success"}
    again = c2.recv()
    assert again == {"seqId": seqs[-1] + 1, "method": "readyForContinue"}
    frames = c2.step()
    assert frames[-1]["method"] == "readyForContinue"
    assert _seqs(frames)[0] == seqs[-1] + 2


def test_attach_with_null_cursor_replays_everything(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    sid = c.create(end=START + 5, disconnectTimeoutSecs=30)
    c.close()
    c2 = clients["control"](sim)
    c2.send("attachBacktestSession", {"session_id": sid, "last_sequence": None})
    assert c2.recv()["method"] == "sessionAttached"
    replay = c2.until("readyForContinue")
    assert replay == c.frames[1:]


def test_paused_is_reannounced_after_resume(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    slot = sim.produced_slots(START + 2, START + 9)[0]
    sid = c.create(end=START + 9, disconnectTimeoutSecs=30)
    c.send("continueTo", {"slot": slot, "batchIndex": 0})
    last = c.until("paused")[-1]
    c.close()
    c2 = clients["control"](sim)
    c2.send("attachBacktestSession", {"session_id": sid, "last_sequence": last["seqId"]})
    assert c2.recv()["method"] == "sessionAttached"
    c2.send("resumeAttachedSession")
    assert c2.recv() == {"method": "success"}
    assert c2.recv() == {"seqId": last["seqId"] + 1, "method": "paused",
                         "params": {"slot": slot, "batchIndex": 0}}


def test_step_running_at_drop_goes_on_and_is_replayed(make_sim, clients) -> None:
    sim = make_sim(slot_delay=0.05)
    c = clients["control"](sim)
    sid = c.create(end=START + 30, disconnectTimeoutSecs=30)
    cursor = c.frames[-1]["seqId"]
    c.send("continue", {"advanceCount": 8})
    c.close()
    wait_for(lambda: sim.session_info(sid)["state"] == "idle", what="step to finish")
    c2 = clients["control"](sim)
    c2.send("attachBacktestSession", {"session_id": sid, "last_sequence": cursor})
    assert c2.recv()["method"] == "sessionAttached"
    replay = c2.until("readyForContinue")
    assert slots_of(replay) == sim.produced_slots(START + 1, START + 30)[:8]
    c2.send("resumeAttachedSession")
    assert c2.recv() == {"method": "success"}
    _no_reannounce(c2)  # the pause was in the replay


def _no_reannounce(c) -> None:
    """The next step's frames follow at once: no pause was re-announced after the resume."""
    c.send("continue", {"advanceCount": 1})
    assert c.recv()["method"] == "status"


def test_output_is_held_until_resume(make_sim, clients) -> None:
    sim = make_sim(slot_delay=0.2)
    c = clients["control"](sim)
    sid = c.create(end=START + 30, disconnectTimeoutSecs=30)
    c.send("continue", {"advanceCount": 6})
    c.recv()  # the step started
    c.close()
    c2 = clients["control"](sim)
    c2.send("attachBacktestSession", {"session_id": sid, "last_sequence": None})
    assert c2.recv()["method"] == "sessionAttached"
    wait_for(lambda: sim.session_info(sid)["state"] == "idle", what="step to finish")
    c2.send("resumeAttachedSession")
    replay = c2.until("success")[:-1]
    held = c2.until("readyForContinue")
    assert slots_of(held), "frames emitted while attached must wait for the resume"
    assert max(_seqs(replay)) < min(_seqs(held))
    every = replay + held
    assert _seqs(every) == list(range(1, len(every) + 1))
    assert slots_of(every) == sim.produced_slots(START, START + 30)[:7]
    assert held[-1]["method"] == "readyForContinue"
    _no_reannounce(c2)  # the client got the pause with the held output


def test_attach_takes_over_a_stalled_connection(sim: LocalSimulator, clients) -> None:
    sim.faults.add(Fault("stall", after_frames=3))
    c = clients["control"](sim)
    c.send("createBacktestSession", {"startSlot": START, "endSlot": START + 5,
                                     "disconnectTimeoutSecs": 30})
    got = [c.recv() for _ in range(3)]
    sid = got[0]["params"]["session_id"]
    with pytest.raises(websocket.WebSocketTimeoutException):
        c.recv(timeout=0.3)  # stalled: nothing more arrives
    c2 = clients["control"](sim)
    c2.send("attachBacktestSession", {"session_id": sid, "last_sequence": got[-1]["seqId"]})
    assert c2.recv()["method"] == "sessionAttached"
    rest = c2.until("readyForContinue")
    assert _seqs(got[1:] + rest) == list(range(1, len(got) + len(rest)))
    assert c.closed_by_server(timeout=5)  # the old connection was closed by the server
    c2.send("resumeAttachedSession")
    assert c2.recv() == {"method": "success"}
    _no_reannounce(c2)  # the pause was in the replay


def test_window_expiry_destroys_the_session(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    sid = c.create(end=START + 5, disconnectTimeoutSecs=1)
    c.close()
    wait_for(lambda: sid not in sim.session_ids(), what="window to expire")
    c2 = clients["control"](sim)
    c2.send("attachBacktestSession", {"session_id": sid, "last_sequence": None})
    assert c2.recv() == {"method": "error", "params": {"sessionNotFound": {"session_id": sid}}}


def test_completed_session_can_still_be_attached_within_the_window(sim: LocalSimulator,
                                                                   clients) -> None:
    sim.faults.add(Fault("drop", after_frames=9))
    c = clients["control"](sim)
    sid = c.create(end=START, disconnectTimeoutSecs=30)  # 7 frames
    c.send("continue", {"advanceCount": 1})
    got = [c.recv(), c.recv()]  # executing, executed; the drop comes before completed
    with pytest.raises((ConnectionError, websocket.WebSocketConnectionClosedException)):
        c.recv()
    c2 = clients["control"](sim)
    c2.send("attachBacktestSession", {"session_id": sid, "last_sequence": got[-1]["seqId"]})
    assert c2.recv()["method"] == "sessionAttached"
    assert c2.recv()["method"] == "completed"
    c2.send("resumeAttachedSession")
    assert c2.recv() == {"method": "success"}
    c2.send("closeBacktestSession")
    assert c2.recv() == {"method": "success"}
