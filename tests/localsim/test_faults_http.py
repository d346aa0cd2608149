"""Fault plan kinds, API key, refusals, and the plain HTTP endpoints."""
from __future__ import annotations

import json
import time

import pytest
import websocket

from simsync.localsim import Fault, FaultPlan, LocalSimulator
from simsync.localsim.testing import START, Control, http_get, wait_for

pytestmark = pytest.mark.timeout(30)


def _start(c: Control, window: int = 30) -> None:
    c.send("createBacktestSession", {"startSlot": START, "endSlot": START + 10,
                                     "disconnectTimeoutSecs": window})


def _gone(c: Control) -> bool:
    try:
        c.recv()
    except (ConnectionError, websocket.WebSocketConnectionClosedException):
        return True
    return False


@pytest.mark.parametrize("n", [1, 3, 5])
def test_drop_after_n_frames_delivers_exactly_n(sim: LocalSimulator, clients, n: int) -> None:
    fault = sim.faults.add(Fault("drop", after_frames=n))
    c = clients["control"](sim)
    _start(c)
    got = [c.recv() for _ in range(n)]
    assert _gone(c)
    assert fault.fired == 1 and sim.faults.fired == 1 and sim.stats.faults_fired == 1
    assert sim.faults.pending() == []
    sid = got[0]["params"]["session_id"]
    assert sid in sim.session_ids()  # the window keeps it
    c2 = clients["control"](sim)  # spent: the next connection is fine
    c2.send("attachBacktestSession", {"session_id": sid,
                                      "last_sequence": got[-1].get("seqId")})
    assert c2.recv()["method"] == "sessionAttached"
    assert c2.until("readyForContinue")


def test_drop_times_fires_on_that_many_connections(sim: LocalSimulator, clients) -> None:
    sim.faults.add(Fault("drop", after_frames=1, times=2))
    for _ in range(2):
        c = clients["control"](sim)
        _start(c)
        assert c.recv()["method"] == "sessionCreated"
        assert _gone(c)
    c = clients["control"](sim)
    _start(c)
    assert c.until("readyForContinue")
    assert sim.faults.fired == 2


def test_drop_at_after_session_created(sim: LocalSimulator, clients) -> None:
    sim.faults.add(Fault("drop", at="after_session_created"))
    c = clients["control"](sim)
    _start(c)
    assert c.recv()["method"] == "sessionCreated"
    assert _gone(c)


def test_drop_at_after_continue_received_step_still_runs(sim: LocalSimulator,
                                                          clients) -> None:
    sim.faults.add(Fault("drop", at="after_continue_received"))
    c = clients["control"](sim)
    sid = c.create(end=START + 10, disconnectTimeoutSecs=30)
    last = c.frames[-1]["seqId"]
    c.send("continue", {"advanceCount": 2})
    assert _gone(c)  # not one frame of the step arrived
    c2 = clients["control"](sim)
    c2.send("attachBacktestSession", {"session_id": sid, "last_sequence": last})
    assert c2.recv()["method"] == "sessionAttached"
    replay = c2.until("readyForContinue")
    assert replay[0]["seqId"] == last + 1
    assert [f["params"] for f in replay if f["method"] == "slotNotification"] == \
        sim.produced_slots(START + 1, START + 10)[:2]


def test_drop_mid_replay(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    sid = c.create(end=START + 10, disconnectTimeoutSecs=30)
    c.close()
    sim.faults.add(Fault("drop", at="mid_replay"))
    c2 = clients["control"](sim)
    c2.send("attachBacktestSession", {"session_id": sid, "last_sequence": None})
    assert c2.recv()["method"] == "sessionAttached"
    total = len(c.frames) - 1
    replay = [c2.recv() for _ in range(total // 2)]
    assert _gone(c2)
    assert [f["seqId"] for f in replay] == list(range(1, total // 2 + 1))


def test_stall_stops_frames_and_pongs_until_peer_closes(sim: LocalSimulator,
                                                         clients) -> None:
    sim.faults.add(Fault("stall", after_frames=2))
    c = clients["control"](sim)
    _start(c)
    c.recv()
    c.recv()
    c.ws.ping(b"are you there")
    c.ws.settimeout(0.5)
    with pytest.raises(websocket.WebSocketTimeoutException):
        c.ws.recv_data_frame(control_frame=True)  # neither data nor pong
    sid = c.frames[0]["params"]["session_id"]
    assert sim.session_info(sid)["attached"]  # half-open: the server still thinks it is up
    c.ws.shutdown()  # the peer gives up
    wait_for(lambda: not sim.session_info(sid)["attached"], what="stalled connection cleanup")
    assert sid in sim.session_ids()


def test_pings_are_answered_normally(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    c.ws.ping(b"hello")
    opcode, frame = c.ws.recv_data_frame(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_PONG and frame.data == b"hello"


def test_malformed_and_unknown_method_frames(sim: LocalSimulator, clients) -> None:
    sim.faults.add(Fault("malformed", after_frames=1))
    sim.faults.add(Fault("malformed", after_frames=2, payload='{"method":'))
    sim.faults.add(Fault("unknown_method", after_frames=3))
    c = clients["control"](sim)
    _start(c)
    assert c.recv()["method"] == "sessionCreated"
    assert c.recv_text() == "{not json"
    assert c.recv()["method"] == "status"
    assert c.recv_text() == '{"method":'
    assert c.recv()["method"] == "status"
    assert c.recv() == {"method": "agentHeartbeat", "params": {"x": 1}}
    assert c.until("readyForContinue")  # and the session goes on


def test_delay_fault_slows_every_frame(sim: LocalSimulator, clients) -> None:
    sim.faults.add(Fault("delay", delay_secs=0.05))
    c = clients["control"](sim)
    began = time.monotonic()
    _start(c)
    frames = c.until("readyForContinue")
    assert time.monotonic() - began >= 0.05 * len(frames)


def test_refuse_connects_then_accept(sim: LocalSimulator) -> None:
    sim.faults.refuse_connects(2)
    for _ in range(2):
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            websocket.create_connection(sim.url, timeout=5)
        assert info.value.status_code == 503
    ws = websocket.create_connection(sim.url, timeout=5)
    ws.close()
    assert sim.stats.connects_refused == 2
    assert sim.faults.refusals_left() == 0


def test_faults_given_at_construction(make_sim, clients) -> None:
    sim = make_sim(faults=FaultPlan([Fault("drop", after_frames=2)]))
    c = clients["control"](sim)
    _start(c)
    c.recv()
    c.recv()
    assert _gone(c)


def test_pubsub_channel_drop(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    sid = c.create(end=START + 5)
    sim.faults.add(Fault("drop", channel="pubsub", after_frames=1))
    p = clients["pubsub"](sim, sid)
    assert p.subscribe("slotSubscribe")["result"] >= 1
    with pytest.raises((ConnectionError, websocket.WebSocketConnectionClosedException)):
        p.recv()
    assert c.step()[-1]["method"] == "readyForContinue"  # the control side is unaffected


def test_api_key(make_sim) -> None:
    sim = make_sim(api_key="s3cret")
    for header in ([], ["X-API-Key: wrong"]):
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            websocket.create_connection(sim.url, header=header, timeout=5)
        assert info.value.status_code == 401
    ws = websocket.create_connection(sim.url, header=["X-API-Key: s3cret"], timeout=5)
    ws.close()
    assert http_get(f"{sim.http_url}/available-ranges").status_code == 401
    ok = http_get(f"{sim.http_url}/available-ranges", headers={"X-API-Key": "s3cret"})
    assert ok.status_code == 200
    sim.faults.reject_key = True
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(sim.url, header=["X-API-Key: s3cret"], timeout=5)
    assert info.value.status_code == 401
    assert "s3cret" not in repr(sim)


def test_available_ranges_health_ready(make_sim) -> None:
    sim = make_sim(bundle_size=500, bundles=3, first_slot=1000)
    ranges = http_get(f"{sim.http_url}/available-ranges").json()
    assert [(r["bundleStartSlot"], r["maxBundleEndSlot"]) for r in ranges] == [
        (1000, 1499), (1500, 1999), (2000, 2499)]
    assert set(ranges[0]) == {"bundleStartSlot", "bundleStartSlotUtc", "maxBundleEndSlot",
                              "maxBundleEndSlotUtc", "maxBundleSize", "kind", "scope"}
    assert ranges[0]["bundleStartSlotUtc"].endswith("Z") and ranges[0]["maxBundleSize"] == 500
    health = http_get(f"{sim.http_url}/health")
    assert (health.status_code, health.text) == (200, "ok")
    assert http_get(f"{sim.http_url}/ready").status_code == 200
    assert http_get(f"{sim.http_url}/backtest").status_code == 400


def test_many_simulators_side_by_side(make_sim, clients) -> None:
    sims = [make_sim(seed=i) for i in range(4)]
    assert len({s.port for s in sims}) == 4
    for s in sims:
        c = clients["control"](s)
        c.create(end=START + 2)
    sims[0].stop()
    with pytest.raises(OSError):
        websocket.create_connection(sims[0].url, timeout=2)
    assert json.loads(json.dumps(sims[1].stats.as_dict()))["sessions_created"] == 1


def test_start_and_stop_are_fast_and_clean() -> None:
    began = time.monotonic()
    with LocalSimulator() as sim:
        assert time.monotonic() - began < 1.0
        port = sim.port
        assert http_get(f"{sim.http_url}/health").status_code == 200
    with pytest.raises(OSError):
        websocket.create_connection(f"ws://127.0.0.1:{port}/backtest", timeout=2)
    sim.stop()  # idempotent
