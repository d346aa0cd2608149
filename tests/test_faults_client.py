"""simsync's client against the new faults of the local simulator (issue 12). Each test
asserts the RIGHT behaviour; where today's client does not have it yet the test is marked
``xfail(strict=True)`` naming the failure and the issue that fixes it (13, 14 or 15)."""
from __future__ import annotations

import collections
from typing import Any, List

import pytest

import simsync
from simsync.localsim import (
    DISCOVERY_PROGRAM_ID,
    MEMO_PROGRAM_ID,
    SYSTEM_PROGRAM_ID,
    TOKEN_PROGRAM_ID,
    Fault,
    FaultPlan,
    LocalSimulator,
)
from tests.support import FAST, START, client, drive, slots

pytestmark = pytest.mark.timeout(90)

END = START + 11
PROGRAMS = [SYSTEM_PROGRAM_ID, TOKEN_PROGRAM_ID, MEMO_PROGRAM_ID, DISCOVERY_PROGRAM_ID]


def _run(server: LocalSimulator, config: simsync.ClientConfig = FAST, subscribe: bool = False,
         timeout: float = 20.0, **create: Any) -> List[Any]:
    fields = {"start_slot": START, "end_slot": END, "disconnect_timeout_secs": 60, **create}
    with client(server, config).start_session(**fields) as session:
        if subscribe:
            session.subscribe_transactions(PROGRAMS)
        return drive(session, timeout)


def _until_failure(session: simsync.Session, timeout: float = 20.0) -> List[Any]:
    """Every event up to the exception that ends the session (appended last)."""
    seen: List[Any] = []
    while True:
        try:
            event = session.next_event(timeout)
        except simsync.SimsyncError as exc:
            seen.append(exc)
            return seen
        seen.append(event)
        if isinstance(event, (simsync.ReadyForContinue, simsync.Paused)):
            session.send_continue(timeout=timeout)


@pytest.fixture
def sim() -> Any:
    with LocalSimulator(bundle_size=100, bundles=4) as server:
        yield server


# ----------------------------------------------------------------------------- passing today


def test_transactions_arrive_once_with_the_right_signature(sim: LocalSimulator) -> None:
    """The default notification form (base64, no top-level ``signature``)."""
    with client(sim).start_session(start_slot=START, end_slot=END) as session:
        session.subscribe_transactions(PROGRAMS)
        sid = session.info.session_id
        events = drive(session)
    got = [e.signature for e in events if isinstance(e, simsync.Transaction)]
    expected = [e.signature for e in sim.executed(sid) if set(e.program_ids) & set(PROGRAMS)]
    assert len(expected) > 10
    assert collections.Counter(got) == collections.Counter(expected)  # each once
    assert all(len(s) >= 80 for s in got)


def test_duplicate_notifications_are_delivered_once(sim: LocalSimulator) -> None:
    sim.faults.add(Fault("duplicate", channel="pubsub"))
    with client(sim).start_session(start_slot=START, end_slot=END) as session:
        session.subscribe_transactions(PROGRAMS)
        sid = session.info.session_id
        events = drive(session)
    got = [e.signature for e in events if isinstance(e, simsync.Transaction)]
    assert sim.faults.fired_on("duplicate") == [1]
    assert got and collections.Counter(got) == collections.Counter(
        e.signature for e in sim.executed(sid) if set(e.program_ids) & set(PROGRAMS))


def test_late_notifications_still_arrive_before_completed(sim: LocalSimulator) -> None:
    sim.faults.add(Fault("late_notifications", times=0))  # every slot's, after its pause
    with client(sim).start_session(start_slot=START, end_slot=END) as session:
        session.subscribe_transactions(PROGRAMS)
        sid = session.info.session_id
        events = drive(session)
    got = [e.signature for e in events if isinstance(e, simsync.Transaction)]
    assert isinstance(events[-1], simsync.Completed)
    assert collections.Counter(got) == collections.Counter(
        e.signature for e in sim.executed(sid) if set(e.program_ids) & set(PROGRAMS))


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_a_drop_with_fin_or_rst_is_recovered_exactly_once(sim: LocalSimulator, how: str) -> None:
    clean = _run(sim)
    sim.faults.add(Fault("drop", after_frames=12, how=how))
    assert _run(sim) == clean
    assert sim.faults.fired_on("drop") == [2]  # the second session's first connection


def test_refused_reconnects_with_429_are_retried(sim: LocalSimulator) -> None:
    clean = _run(sim)
    sim.faults.add(Fault("drop", after_frames=10, on_connection=2))
    for k in (3, 4):  # the first two reconnects
        sim.faults.add(Fault("refuse", status=429, retry_after=0, on_connection=k))
    assert _run(sim) == clean
    assert sim.faults.fired_on("refuse") == [3, 4]


def test_an_expired_detach_window_fails_the_session(sim: LocalSimulator) -> None:
    sim.faults.add(Fault("drop", after_frames=10))
    sim.faults.add(Fault("expire_detach"))
    with client(sim).start_session(start_slot=START, end_slot=END,
                                   disconnect_timeout_secs=60) as session:
        seen = _until_failure(session)
    assert isinstance(seen[-1], simsync.ControlFailed)
    assert "sessionNotFound" in str(seen[-1]) or "not found" in str(seen[-1]).lower()


@pytest.mark.parametrize("action", ["rpc_status", "rpc_non_json"])
def test_rpc_failures_raise_rpc_error(sim: LocalSimulator, action: str) -> None:
    with client(sim).start_session(start_slot=START, end_slot=END) as session:
        assert session.next_event(10)  # the session is up
        sim.faults.add(Fault(action, status=503))
        with pytest.raises(simsync.RpcError) as info:
            session.rpc.get_slot()
        if action == "rpc_status":
            assert info.value.http_status == 503
        assert session.rpc.get_slot() >= START  # spent: the next call works


@pytest.mark.parametrize("fault", [Fault("oversize", after_frames=10, size=1 << 20),
                                   Fault("close", after_frames=10, close_code=1001),
                                   Fault("close", after_frames=10, close_code=1011)],
                         ids=["oversize", "close1001", "close1011"])
def test_big_frames_and_close_codes_are_recovered_exactly_once(sim: LocalSimulator,
                                                               fault: Fault) -> None:
    clean = _run(sim)
    sim.faults.add(fault)
    seen = [e for e in _run(sim) if not isinstance(e, simsync.UnknownEvent)]
    assert seen == clean  # the 1 MB frame has an unknown method: shown as UnknownEvent
    assert sim.faults.fired_on(fault.action) == [2]


def test_an_invalid_utf8_frame_is_skipped(sim: LocalSimulator) -> None:
    clean = _run(sim)
    sim.faults.add(Fault("invalid_utf8", after_frames=10))
    assert _run(sim) == clean


def test_a_heartbeat_server_keeps_a_live_client(sim: LocalSimulator) -> None:
    sim.faults.add(Fault("heartbeat", interval_secs=0.1, timeout_secs=1.0, times=0))
    sim.faults.add(Fault("heartbeat", channel="pubsub", interval_secs=0.1, timeout_secs=1.0,
                         times=0))
    events = _run(sim, subscribe=True)
    assert isinstance(events[-1], simsync.Completed)
    assert "heartbeat timeout" not in [f.trigger for f in sim.faults.history]


def test_binary_and_fragmented_control_frames_are_read(sim: LocalSimulator) -> None:
    clean = _run(sim)
    sim.faults.add(Fault("binary", after_frames=3))
    assert _run(sim) == clean
    sim.faults.add(Fault("fragment", size=5))
    assert _run(sim) == clean


# ----------------------------------------------------------------------------- known failures


def test_a_rejected_step_shows_the_error_then_the_pause_again(sim: LocalSimulator) -> None:
    sim.faults.add(Fault("reject_step", step=2, error="invalidTransactionFormat"))
    with client(sim).start_session(start_slot=START, end_slot=END) as session:
        events = drive(session, timeout=5.0)
    kinds = [type(e).__name__ for e in events]
    i = kinds.index("ServerError")
    assert kinds[i + 1] == "ReadyForContinue"
    assert slots(events) == sim.produced_slots(START, END)


def test_a_slow_session_created_creates_at_most_once(sim: LocalSimulator) -> None:
    sim.faults.add(Fault("slow_reply", at="before_session_created", delay_secs=3.0))
    config = simsync.ClientConfig(**{**FAST.__dict__, "handshake_timeout": 1.0})
    try:
        with client(sim, config).start_session(start_slot=START, end_slot=END,
                                               disconnect_timeout_secs=60) as session:
            drive(session)
    except simsync.SessionCreateError:
        pass  # allowed: the reply was lost; the error says a session may exist
    assert sim.stats.sessions_created == 1


def test_a_fatal_error_comes_after_every_earlier_event(sim: LocalSimulator) -> None:
    slot = sim.produced_slots(START + 3, END)[0]
    sim.faults.add(Fault("error", slot=slot, error="advanceSlotFailed"))
    with client(sim).start_session(start_slot=START, end_slot=END) as session:
        seen = _until_failure(session)
    assert isinstance(seen[-1], simsync.ControlFailed)
    assert slots(seen[:-1])[-1] == slot  # the user saw Slot(S) before the failure


def test_a_non_fatal_error_does_not_stop_the_session(sim: LocalSimulator) -> None:
    slot = sim.produced_slots(START + 3, END)[0]
    sim.faults.add(Fault("error", slot=slot))
    events = _run(sim)
    errors = [e for e in events if isinstance(e, simsync.ServerError)]
    assert len(errors) == 1 and isinstance(events[-1], simsync.Completed)


def test_a_replayed_non_fatal_error_does_not_kill_the_session(sim: LocalSimulator) -> None:
    """The first step's frames (with a simulationError) are emitted while the control link
    is down, so they reach the client in the attach replay."""
    clean = _run(sim)
    sim.faults.add(Fault("error", slot=START))
    sim.faults.add(Fault("drop", at="after_continue_received", on_connection=2))
    events = _run(sim)
    assert [type(e).__name__ for e in events if not isinstance(e, simsync.ServerError)] == [
        type(e).__name__ for e in clean]
    assert sum(isinstance(e, simsync.ServerError) for e in events) == 1


def test_a_gap_beyond_the_replay_window_is_reported() -> None:
    """The PubSub connection stalls (half-open) after two notifications: the control link
    steps on while the client takes ``dead_after`` to notice; the re-subscribe asks to replay
    from a slot the 1-slot replay window no longer holds (the client is told the window:
    ``ClientConfig.replay_window_slots``)."""
    plan = FaultPlan([Fault("replay_window", slots=1)])
    config = FAST.replace(replay_window_slots=1)
    with LocalSimulator(bundle_size=100, bundles=4, faults=plan) as server:
        server.faults.add(Fault("stall", channel="pubsub", after_frames=3))
        events: List[Any] = []
        with client(server, config).start_session(start_slot=START, end_slot=END) as session:
            session.subscribe_transactions(PROGRAMS)
            sid = session.info.session_id
            try:
                events = drive(session)
            except simsync.SubscriptionFailed:
                return  # the right outcome
        expected = [e.signature for e in server.executed(sid)
                    if set(e.program_ids) & set(PROGRAMS)]
        assert server.faults.fired_on("stall", "pubsub") == [1]
    got = [e.signature for e in events if isinstance(e, simsync.Transaction)]
    assert collections.Counter(got) == collections.Counter(expected)  # else: silent gap


def _short_budget() -> simsync.ClientConfig:
    return simsync.ClientConfig(**{**FAST.__dict__, "reconnect_budget": 3.0})


def test_an_upgrade_answered_404_fails_at_once(sim: LocalSimulator) -> None:
    sim.faults.add(Fault("refuse", status=404, times=0))
    with pytest.raises(simsync.SessionCreateError) as info:
        client(sim, _short_budget()).start_session(start_slot=START, end_slot=END)
    assert sim.faults.fired_on("refuse") == [1]  # no retry
    assert "404" in str(info.value) and sim.url in str(info.value)


@pytest.mark.parametrize("code", [1009, 4000])
def test_a_fatal_close_code_fails_the_session_naming_it(sim: LocalSimulator, code: int) -> None:
    sim.faults.add(Fault("close", after_frames=10, close_code=code, close_reason="go away",
                         times=0))
    with client(sim, _short_budget()).start_session(start_slot=START, end_slot=END,
                                                    disconnect_timeout_secs=60) as session:
        seen = _until_failure(session)
    assert isinstance(seen[-1], simsync.ControlFailed)
    assert str(code) in str(seen[-1]) and "go away" in str(seen[-1])
    assert sim.faults.fired_on("close") == [1]  # no reconnect


def test_rpc_timeout_bounds_a_trickled_response(sim: LocalSimulator) -> None:
    config = simsync.ClientConfig(**{**FAST.__dict__, "rpc_timeout": 0.5})
    with client(sim, config).start_session(start_slot=START, end_slot=END) as session:
        assert session.next_event(10)
        sim.faults.add(Fault("rpc_trickle", part="body", interval_secs=0.1))
        with pytest.raises(simsync.RpcError):
            session.rpc.get_slot()
