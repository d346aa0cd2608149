"""PROTOCOL.md §13 as a state machine: each pause seen once, each step executed once, across
any number of connection generations."""
from __future__ import annotations

import threading
import time
from typing import Any, List

import pytest

from simsync.control import Step, StepGate, StepState, Verdict
from simsync.errors import EventTimeout, SessionClosed, SimsyncError
from simsync.protocol import (
    Completed,
    Continue,
    ContinueTo,
    Paused,
    ReadyForContinue,
    ServerError,
    Slot,
    Status,
)

pytestmark = pytest.mark.timeout(10)
READY = ReadyForContinue()
STEP = Continue()


def no_wait(remaining: float) -> None:
    if remaining <= 0:
        raise EventTimeout("no pause")


def verdicts(gate: StepGate, gen: int, *events: object) -> List[Verdict]:
    return [gate.admit(None, e, gen) for e in events]


def holding(gen: int = 1, pause: Any = READY) -> StepGate:
    gate = StepGate()
    assert gate.admit(None, pause, gen) is Verdict.DELIVER
    assert gate.state is StepState.HOLDING_PAUSE
    return gate


def sent(gate: StepGate, gen: int, request: Any = STEP) -> Step:
    step = gate.begin_step(request, request, no_wait, None)
    assert gate.state is StepState.STEP_UNSENT
    assert gate.take_unsent(gen) is step and gate.state is StepState.STEP_SENT
    return step


def test_replayed_sequence_numbers_are_dropped() -> None:
    gate = StepGate()
    assert gate.admit(10, Status("a"), 1) is Verdict.DELIVER
    assert gate.admit(10, Status("a"), 1) is Verdict.DROP
    assert gate.admit(9, Slot(5), 1) is Verdict.DROP
    assert gate.admit(None, Slot(6), 1) is Verdict.DELIVER   # unsequenced frames pass
    assert gate.last_seq == 10


def test_rule_1_a_pause_already_held_is_absorbed() -> None:
    gate = holding()
    assert verdicts(gate, 2, READY, READY) == [Verdict.DROP, Verdict.DROP]


def test_rule_2_the_origin_reannounced_on_a_newer_generation_resends_once() -> None:
    gate = holding(gen=1)
    step = sent(gate, 1)
    assert gate.admit(None, READY, 2) is Verdict.RESEND
    assert gate.state is StepState.STEP_UNSENT and step.sent_gen is None
    assert gate.take_unsent(2) is step          # written on generation 2
    assert gate.take_unsent(2) is None          # and only once
    # the same pause announced again on generation 2: a re-announcement, absorbed
    assert gate.admit(None, READY, 2) is Verdict.DROP


def test_a_step_resent_then_lost_again_is_resent_once_per_generation() -> None:
    gate = holding(gen=1)
    step = sent(gate, 1)
    for gen in (2, 3, 4):
        assert gate.admit(None, READY, gen) is Verdict.RESEND
        assert gate.take_unsent(gen) is step
    assert verdicts(gate, 4, Status("x"), READY) == [Verdict.DELIVER, Verdict.DELIVER]
    assert gate.state is StepState.HOLDING_PAUSE and gate.step is None


def test_a_step_whose_frames_arrived_is_never_resent() -> None:
    gate = holding(gen=1)
    sent(gate, 1)
    assert gate.admit(None, Status("executing"), 2) is Verdict.DELIVER
    assert gate.state is StepState.STEP_RUNNING
    assert gate.admit(None, READY, 3) is Verdict.DELIVER   # its answer, on any generation


def test_a_reannouncement_raced_by_a_quick_step_is_absorbed() -> None:
    gate = holding(gen=1)
    sent(gate, 2)                                # stepped right after the resume
    assert verdicts(gate, 2, READY, Slot(3), READY) == [
        Verdict.DROP, Verdict.DELIVER, Verdict.DELIVER]


def test_a_bare_paused_that_answers_a_continue_to_is_delivered() -> None:
    """A server that does not re-announce: ``paused`` may be the whole answer."""
    origin = Paused(5, 2)
    gate = holding(gen=1, pause=origin)
    sent(gate, 2, ContinueTo(5, 2))
    assert gate.admit(None, Paused(5, 2), 2) is Verdict.DELIVER
    assert gate.state is StepState.HOLDING_PAUSE


def test_a_rejected_step_delivers_the_error_then_the_pause_again() -> None:
    gate = holding()
    sent(gate, 1)
    error = ServerError("invalidTransactionFormat", {"index": 0, "error": "bad"})
    assert verdicts(gate, 1, error, READY) == [Verdict.DELIVER, Verdict.DELIVER]
    assert gate.state is StepState.HOLDING_PAUSE
    sent(gate, 1)                                # and the user can step again


def test_a_simulation_error_does_not_end_the_step() -> None:
    gate = holding()
    sent(gate, 1)
    assert verdicts(gate, 1, ServerError("simulationError", {"error": "x"}), READY) == [
        Verdict.DELIVER, Verdict.DELIVER]


def test_only_one_step_at_a_time_and_none_after_completed() -> None:
    gate = holding()
    sent(gate, 1)
    with pytest.raises(SimsyncError, match="still running"):
        gate.begin_step(STEP, STEP, no_wait, None)
    assert gate.admit(None, Completed(), 1) is Verdict.DELIVER
    assert gate.admit(None, READY, 1) is Verdict.DROP
    with pytest.raises(SessionClosed):
        gate.begin_step(STEP, STEP, no_wait, None)


def test_a_step_waits_for_the_first_pause_and_is_bounded() -> None:
    gate = StepGate()
    deadline = time.monotonic() + 0.2
    with pytest.raises(EventTimeout):
        gate.begin_step(STEP, STEP, no_wait, deadline)
    assert gate.step is None                     # nothing recorded, nothing sent
    threading.Timer(0.1, gate.admit, (None, READY, 1)).start()
    step = gate.begin_step(STEP, STEP, no_wait, time.monotonic() + 5)
    assert step.origin == READY and gate.state is StepState.STEP_UNSENT


def test_a_failed_write_makes_the_step_unsent_again() -> None:
    gate = holding()
    step = sent(gate, 1)
    gate.unsent(step, 2)                         # another generation: no effect
    assert gate.state is StepState.STEP_SENT
    gate.unsent(step, 1)
    assert gate.state is StepState.STEP_UNSENT and gate.take_unsent(2) is step


def test_a_step_this_gate_did_not_send_spends_the_pause_held() -> None:
    """Attached without a cursor: the replay shows another process's steps."""
    gate = holding()
    assert verdicts(gate, 1, Status("executing"), Slot(2), READY) == [
        Verdict.DELIVER, Verdict.DELIVER, Verdict.DELIVER]
    assert gate.state is StepState.HOLDING_PAUSE
