"""PROTOCOL.md §13 as a state machine: each pause seen once, each step executed once."""
from __future__ import annotations

import pytest

from simsync.control import StepGate, Verdict
from simsync.errors import SessionClosed, SimsyncError
from simsync.protocol import (
    Completed,
    Continue,
    Paused,
    ReadyForContinue,
    ServerError,
    Slot,
    Status,
)

pytestmark = pytest.mark.timeout(10)
READY = ReadyForContinue()
STEP = Continue()


def verdicts(gate: StepGate, *events: object) -> list:
    return [gate.admit(None, e)[0] for e in events]


def test_replayed_sequence_numbers_are_dropped() -> None:
    gate = StepGate()
    assert gate.admit(10, Status("a"))[0] is Verdict.DELIVER
    assert gate.admit(10, Status("a"))[0] is Verdict.DROP
    assert gate.admit(9, Status("b"))[0] is Verdict.DROP
    assert gate.admit(11, Status("c"))[0] is Verdict.DELIVER
    assert gate.last_seq == 11


def test_rule_1_a_pause_already_held_is_absorbed() -> None:
    gate = StepGate()
    assert verdicts(gate, READY, READY) == [Verdict.DELIVER, Verdict.DROP]
    gate.reattached()
    assert verdicts(gate, Paused(5, 1)) == [Verdict.DROP]


def test_rule_2_a_step_lost_in_the_drop_is_resent_once() -> None:
    gate = StepGate()
    gate.admit(None, READY)
    gate.begin_step(STEP)
    gate.reattached()
    assert gate.admit(None, READY) == (Verdict.RESEND, STEP)
    assert verdicts(gate, Slot(1), READY) == [Verdict.DELIVER, Verdict.DELIVER]


def test_a_step_whose_frames_arrived_is_not_resent() -> None:
    gate = StepGate()
    gate.admit(None, READY)
    gate.begin_step(STEP)
    gate.admit(None, Status("executingBlockTransactions"))
    gate.reattached()
    assert verdicts(gate, READY, READY) == [Verdict.DELIVER, Verdict.DROP]


def test_without_a_reattach_the_pause_ends_the_step() -> None:
    gate = StepGate()
    gate.admit(None, READY)
    gate.begin_step(STEP)
    assert verdicts(gate, READY) == [Verdict.DELIVER]
    assert not gate.step_outstanding


def test_only_one_step_at_a_time_and_none_after_completed() -> None:
    gate = StepGate()
    gate.admit(None, READY)
    gate.begin_step(STEP)
    with pytest.raises(SimsyncError, match="still running"):
        gate.begin_step(STEP)
    gate.admit(None, Completed())
    with pytest.raises(SessionClosed):
        gate.begin_step(STEP)


def test_a_rejected_step_returns_to_the_pause() -> None:
    gate = StepGate()
    gate.admit(None, READY)
    gate.begin_step(STEP)
    rejection = ServerError("invalidTransactionEncoding", {"index": 0, "error": "bad"})
    assert verdicts(gate, rejection, READY) == [Verdict.DELIVER, Verdict.DROP]
    gate.begin_step(STEP)


def test_a_simulation_error_does_not_end_the_step() -> None:
    gate = StepGate()
    gate.admit(None, READY)
    gate.begin_step(STEP)
    gate.admit(None, ServerError("simulationError", {"error": "x"}))
    assert gate.step_outstanding


def test_a_reannounced_pause_racing_a_quick_step_is_absorbed() -> None:
    gate = StepGate()
    gate.admit(None, READY)
    gate.reattached()                      # drop while the user held the pause
    gate.begin_step(STEP)                  # the user stepped before the re-announcement
    assert verdicts(gate, READY) == [Verdict.DROP]
    assert verdicts(gate, Status("x"), Slot(2), READY) == [Verdict.DELIVER] * 3
    assert not gate.step_outstanding


def test_without_a_reannouncement_the_step_frames_clear_the_expectation() -> None:
    gate = StepGate()
    gate.admit(None, READY)
    gate.reattached()
    gate.begin_step(STEP)
    assert verdicts(gate, Slot(2), READY) == [Verdict.DELIVER, Verdict.DELIVER]
