"""Issue 13: every event exactly once and in order at every edge — failures in order, steps
gated and settled by an explicit state machine, no silent gap, create at most once."""
from __future__ import annotations

import contextlib
import json
import time
from typing import Any, List

import pytest

import simsync
from simsync.localsim import Fault
from tests.support import FAST, START, client, drive, sim, slots, wait_for

pytestmark = pytest.mark.timeout(60)
__all__ = ["sim"]

SYSTEM = "11111111111111111111111111111111"
END = START + 19


def until_pause(session: simsync.Session, timeout: float = 10) -> List[Any]:
    seen: List[Any] = []
    while not seen or not isinstance(seen[-1], (simsync.ReadyForContinue, simsync.Paused)):
        seen.append(session.next_event(timeout))
    return seen


def executed_slots(sim: Any, session_id: str) -> List[int]:
    return sorted({tx.slot for tx in sim.executed(session_id) if tx.source == "history"})


# ------------------------------------------------------------------ 1: failures in order

def test_a_fatal_error_arrives_after_the_slot_before_it_then_session_closed(sim: Any) -> None:
    second = sim.produced_slots(START, END)[1]
    fatal = {"method": "error",
             "params": {"advanceSlotFailed": {"slot": second, "error": "boom"}}}
    # the control frames of a session: sessionCreated, 4 statuses, slot, ready → after 7
    sim.faults.add(Fault("malformed", after_frames=7 + 4, payload=json.dumps(fatal)))
    seen: List[Any] = []
    with client(sim).start_session(start_slot=START, end_slot=END,
                                   disconnect_timeout_secs=60) as session:
        with pytest.raises(simsync.ControlFailed) as failed:
            while True:
                event = session.next_event(10)
                seen.append(event)
                if isinstance(event, simsync.ReadyForContinue):
                    with contextlib.suppress(simsync.ControlFailed):   # not sent: it failed
                        session.send_continue()
        with pytest.raises(simsync.SessionClosed):
            session.next_event(1)
    assert failed.value.server_error is not None
    assert failed.value.server_error.kind == "advanceSlotFailed"
    assert failed.value.server_error.fields["slot"] == second
    # everything the server sent before the error was delivered first
    assert slots(seen) == [START, second]


def test_after_a_drain_failure_every_buffered_event_comes_first(sim: Any) -> None:
    config = FAST.replace(ping_interval=30.0, dead_after=60.0, drain_timeout=1.0)
    seen: List[Any] = []
    with client(sim, config).start_session(start_slot=START, end_slot=END,
                                           disconnect_timeout_secs=60) as session:
        session.subscribe_transactions([SYSTEM])
        link, _ = session._inbox.subscriptions[0]
        seen += until_pause(session)
        sid = session.info.session_id
        wait_for(lambda: link.delivered == len(
            [tx for tx in sim.executed(sid) if SYSTEM in tx.program_ids]))
        # the subscription stalls (no FIN, no pongs) after 3 more notifications
        sim.faults.add(Fault("stall", channel="pubsub", after_frames=link.delivered + 4))
        session.send_continue(advance_count=40)
        wait_for(lambda: sim.session_info(session.info.session_id)["state"] == "completed",
                 what="the server completed the range")
        expected = [tx.signature for tx in sim.executed(session.info.session_id)
                    if SYSTEM in tx.program_ids]
        with pytest.raises(simsync.SubscriptionFailed, match="incomplete"):
            while True:
                seen.append(session.next_event(10))
    delivered = [e.signature for e in seen if isinstance(e, simsync.Transaction)]
    assert delivered and delivered == expected[:len(delivered)]
    assert slots(seen) == sim.produced_slots(START, END)        # every control event too
    assert not any(isinstance(e, simsync.Completed) for e in seen)


# ------------------------------------------------------------------ 2: a rejected step

def test_a_rejected_step_gives_the_error_then_the_pause_and_the_loop_completes(sim: Any) -> None:
    bad_once = [b"\x01not a transaction"]
    seen: List[Any] = []
    with client(sim).start_session(start_slot=START, end_slot=START + 5,
                                   disconnect_timeout_secs=60) as session:
        for event in session.events():
            seen.append(event)
            if isinstance(event, simsync.ReadyForContinue):
                session.send_continue(transactions=bad_once, timeout=10)
                bad_once = []
    errors = [i for i, e in enumerate(seen) if isinstance(e, simsync.ServerError)]
    assert len(errors) == 1 and seen[errors[0]].kind == "invalidTransactionFormat"
    assert isinstance(seen[errors[0] + 1], simsync.ReadyForContinue)   # the pause, once
    assert isinstance(seen[-1], simsync.Completed)
    assert slots(seen) == sim.produced_slots(START, START + 5)


# ------------------------------------------------------------------ 3: gating

def test_a_step_while_a_subscription_is_down_times_out_and_nothing_is_sent(sim: Any) -> None:
    with client(sim).start_session(start_slot=START, end_slot=END,
                                   disconnect_timeout_secs=60) as session:
        session.subscribe_transactions([SYSTEM])
        until_pause(session)
        sim.faults.refuse_connects(10**6, "pubsub")
        link, connection = session._inbox.subscriptions[0]
        connection.abort()
        wait_for(lambda: connection.status.value.state is simsync.State.RECONNECTING,
                 what="the subscription down")
        before = sim.session_info(session.info.session_id)
        with pytest.raises(simsync.EventTimeout, match="not sent"):
            session.send_continue(advance_count=10, timeout=0.5)
        assert sim.session_info(session.info.session_id) == before      # nothing executed
        sim.faults.refuse_connects(0, "pubsub")
        session.send_continue(timeout=10)          # the user still holds the pause
        events = drive(session)
    assert isinstance(events[-1], simsync.Completed)


def test_a_step_with_a_failed_subscription_raises_subscription_failed(sim: Any) -> None:
    config = FAST.replace(reconnect_budget=0.5)
    with client(sim, config).start_session(start_slot=START, end_slot=END,
                                           disconnect_timeout_secs=60) as session:
        session.subscribe_transactions([SYSTEM])
        until_pause(session)
        sim.faults.refuse_connects(10**6, "pubsub")
        _, connection = session._inbox.subscriptions[0]
        connection.abort()
        wait_for(lambda: connection.status.value.state is simsync.State.FAILED,
                 what="the subscription failed")
        before = sim.session_info(session.info.session_id)
        with pytest.raises(simsync.SubscriptionFailed):
            session.send_continue(timeout=5)
        assert sim.session_info(session.info.session_id) == before


# ------------------------------------------------------------------ 4: no silent gap

def test_a_subscription_down_past_the_replay_window_fails_naming_the_gap(sim: Any) -> None:
    config = FAST.replace(replay_window_slots=5)
    seen: List[Any] = []
    with client(sim, config).start_session(start_slot=START, end_slot=END,
                                           disconnect_timeout_secs=60) as session:
        session.subscribe_transactions([SYSTEM])
        link, connection = session._inbox.subscriptions[0]
        seen += until_pause(session)
        session.send_continue()
        seen += until_pause(session)
        sid = session.info.session_id
        so_far = [tx for tx in sim.executed(sid) if SYSTEM in tx.program_ids]
        wait_for(lambda: link.delivered == len(so_far), what="the data plane caught up")
        # drop the subscription right after its next notification and keep it down while a
        # long step runs past the replay window
        sim.faults.refuse_connects(10**6, "pubsub")
        sim.faults.add(Fault("drop", channel="pubsub", after_frames=link.delivered + 2))
        session.send_continue(advance_count=15)
        wait_for(lambda: sim.session_info(sid)["slot"] >= START + 16, what="the long step")
        wait_for(lambda: connection.status.value.state is simsync.State.RECONNECTING)
        sim.faults.refuse_connects(0, "pubsub")
        with pytest.raises(simsync.SubscriptionFailed, match="may be lost") as failed:
            while True:
                seen.append(session.next_event(10))
    assert "down too long" in str(failed.value)
    assert slots(seen)[-1] >= START + 16      # the control events before it were delivered



def test_the_completion_drain_does_not_count_a_subscription_reconnect_as_silence(
        sim: Any) -> None:
    """``Completed`` is held while a subscription is down and reconnecting for longer than
    ``drain_timeout``: the outage is the client's, bounded by the reconnect budget, not the
    server's silence, so the drain waits and every transaction arrives (found by the
    model-based test: a 3 s blackhole around a sub-session's completion failed it with
    "a subscription sent nothing")."""
    config = FAST.replace(drain_timeout=1.0)
    seen: List[Any] = []
    with client(sim, config).start_session(start_slot=START, end_slot=START + 4,
                                           disconnect_timeout_secs=60) as session:
        session.subscribe_transactions([SYSTEM])
        link, connection = session._inbox.subscriptions[0]
        seen += until_pause(session)
        # the subscription drops during the last step and stays down past its completion
        sim.faults.refuse_connects(10**6, "pubsub")
        sim.faults.add(Fault("drop", channel="pubsub", after_frames=link.delivered + 2))
        session.send_continue(advance_count=10)
        sid = session.info.session_id
        wait_for(lambda: sim.session_info(sid)["state"] == "completed", what="completed")
        wait_for(lambda: connection.status.value.state is simsync.State.RECONNECTING)
        outage_until = time.monotonic() + 2 * config.drain_timeout
        while time.monotonic() < outage_until:          # the drain check runs in here
            with contextlib.suppress(simsync.EventTimeout):
                seen.append(session.next_event(0.2))
        sim.faults.refuse_connects(0, "pubsub")
        while not isinstance(seen[-1], simsync.Completed):
            seen.append(session.next_event(10))
    want = [tx.signature for tx in sim.executed(sid) if SYSTEM in tx.program_ids]
    assert [e.signature for e in seen if isinstance(e, simsync.Transaction)] == want


# ------------------------------------------------------------------ 5: create at most once

def test_a_lost_create_answer_is_never_followed_by_a_second_create(sim: Any) -> None:
    config = FAST.replace(handshake_timeout=0.5)
    sim.faults.add(Fault("stall", after_frames=0))     # the create is read, never answered
    with pytest.raises(simsync.SessionCreateError, match="may exist"):
        client(sim, config).start_session(start_slot=START, end_slot=END,
                                           disconnect_timeout_secs=60)
    # the create went out on one connection, and no second connection created again
    assert sim.stats.control_connections == 1


@pytest.mark.parametrize("after_frames", [0, 1, 2])
def test_a_parallel_create_on_a_dead_connection_fails_within_dead_after(
        sim: Any, after_frames: int) -> None:
    """A parallel create waits up to ``parallel_create_frame_timeout`` (minutes) for each
    frame; a connection that goes silent mid-create (no frame, no pong) is declared dead after
    ``dead_after`` like any other, never waited on for the frame timeout (found by the soak:
    a stall after the first ``sessionCreated`` hung ``start_parallel`` for 900 s)."""
    config = FAST.replace(parallel_create_frame_timeout=120.0)
    sim.faults.add(Fault("stall", after_frames=after_frames))
    began = time.monotonic()
    with pytest.raises(simsync.SessionCreateError, match="may exist"):
        client(sim, config).start_parallel(start_slot=START, end_slot=START + 250,
                                           disconnect_timeout_secs=60)
    assert time.monotonic() - began < config.dead_after + config.ping_interval + 5
    assert sim.stats.control_connections == 1      # and it never created twice


# ------------------------------------------------------------------ 8: state after effects

@pytest.mark.parametrize("run", range(10))
def test_a_failed_control_makes_send_continue_raise_control_failed(sim: Any, run: int) -> None:
    config = FAST.replace(reconnect_budget=0.2)
    with client(sim, config).start_session(start_slot=START, end_slot=END,
                                           disconnect_timeout_secs=60) as session:
        until_pause(session)
        sim.faults.refuse_connects(10**6)
        session._control.connection.abort()
        deadline = time.monotonic() + 20
        with pytest.raises(simsync.ControlFailed):
            while time.monotonic() < deadline:
                session.send_continue(timeout=5)
                until_pause(session)


# ------------------------------------------------------------------ non-fatal errors

def test_the_readme_loop_completes_after_a_non_fatal_error_at_any_slot(sim: Any) -> None:
    produced = sim.produced_slots(START, END)
    for slot in produced:
        sim.faults.clear()
        sim.faults.add(Fault("error", slot=slot, error="simulationError"))
        seen: List[Any] = []
        with client(sim).start_session(start_slot=START, end_slot=END,
                                       disconnect_timeout_secs=60) as session:
            for event in session.events():          # the README's event loop
                seen.append(event)
                if isinstance(event, (simsync.ReadyForContinue, simsync.Paused)):
                    session.send_continue(timeout=10)
        errors = [e for e in seen if isinstance(e, simsync.ServerError)]
        assert len(errors) == 1 and errors[0].kind == "simulationError", slot
        assert slots(seen) == produced and isinstance(seen[-1], simsync.Completed)


# ------------------------------------------------------------------ 6: the step machine

@pytest.mark.parametrize("mode", ["never", "always", "default"])
def test_every_pause_once_whatever_the_reannounce_rule_with_a_drop_at_every_index(
        sim: Any, mode: str) -> None:
    """A server that never re-announces a pause the client had (the protocol allows it),
    one that always does, and the default; a drop after every frame index."""
    def run() -> List[Any]:
        with client(sim).start_session(start_slot=START, end_slot=START + 9,
                                       disconnect_timeout_secs=60) as session:
            return drive(session)

    clean = run()
    for index in range(1, len(clean) + 6):
        sim.faults.clear()
        sim.faults.add(Fault("reannounce", mode=mode, times=0))
        sim.faults.add(Fault("drop", after_frames=index))
        assert run() == clean, f"reannounce={mode}, drop after frame {index}"


def test_a_step_sent_while_the_link_reattaches_waits_for_the_resume(sim: Any) -> None:
    """The step is begun while the new connection is between connect and resume (the
    attach answer held for a second): it is written after the resume, once."""
    with client(sim).start_session(start_slot=START, end_slot=END,
                                   disconnect_timeout_secs=60) as session:
        until_pause(session)
        sim.faults.add(Fault("slow_reply", at="before_session_attached", delay_secs=1.0))
        session._control.connection.abort()
        wait_for(lambda: session.status.state is not simsync.State.UP)
        link = session._control.link
        wait_for(lambda: link._channel is not None and link._live is None,
                 what="the new connection attaching")
        link.send_step(simsync.protocol.Continue(), lambda remaining: None, None)
        assert link.gate.state.name == "STEP_UNSENT"        # not written before the resume
        events = until_pause(session)
        session.send_continue(timeout=10)
        events += drive(session)
        sid = session.info.session_id
    assert slots(events) == sim.produced_slots(START, END)[1:]
    signatures = [tx.signature for tx in sim.executed(sid)]
    assert len(signatures) == len(set(signatures))
