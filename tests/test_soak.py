"""The soak engine (tests/soak.py) in the default suite: a short run that must show nothing
lost, duplicated or left incomplete; the full run behind ``-m soak``; the engine's own
comparison; and the known bug the soak found (a PubSub stall before the first notification)."""
from __future__ import annotations

import os
from typing import Any

import pytest

import simsync
from simsync.localsim import Fault, LocalSimulator
from tests.soak import Planner, Report, compare, recoveries, run_soak
from tests.support import FAST, START, drive

pytestmark = pytest.mark.timeout(300)

SYSTEM = "11111111111111111111111111111111"


def check(report: Report) -> None:
    table = report.table()
    print(table)
    problems = "\n".join(report.problems())
    tally = report.tally
    assert not report.not_completed, f"sessions not completed:\n{problems}\n{table}"
    assert (tally.lost, tally.duplicated) == (0, 0), f"{problems}\n{table}"
    assert (tally.unexpected, tally.out_of_order) == (0, 0), f"{problems}\n{table}"
    assert report.ok
    # not vacuous: the faults fired and were recovered from
    assert sum(report.faults.values()) >= len(report.results), table
    assert report.reconnects >= len(report.results) // 3, table
    assert report.recoveries("drop") and report.recoveries("stall"), table


def test_short_soak_loses_and_duplicates_nothing() -> None:
    """About 30 s: the first 80 sessions of ``python -m tests.soak --seed 1`` (another seed
    with ``SIMSYNC_SOAK_SEED``; the replay command is printed)."""
    seed = int(os.environ.get("SIMSYNC_SOAK_SEED", "1"))
    print(f"\nshort soak, replay with: python -m tests.soak --sessions 80 --seed {seed}")
    report = run_soak(sessions=80, seed=seed, workers=3)
    assert len(report.results) == 80
    kinds = {r.plan.kind for r in report.results}
    assert kinds == {"single", "subscribed", "parallel"}
    check(report)


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_full_soak_200_sessions() -> None:
    """``python -m tests.soak --sessions 200 --seed 1`` as a test (``pytest -m soak``)."""
    report = run_soak(sessions=200, seed=1, workers=3)
    assert len(report.results) == 200
    check(report)


def test_plans_are_reproducible_and_varied() -> None:
    first, again = Planner(1), Planner(1)
    plans = [first.plan(i) for i in range(200)]
    assert plans == [again.plan(i) for i in range(200)]
    assert plans != [Planner(2).plan(i) for i in range(200)]
    kinds = {f.kind for p in plans for f in p.faults}
    assert kinds == {"drop", "stall", "delay", "refuse", "step_drop", "recovery_drop",
                     "close", "refuse_status", "reannounce", "heartbeat", "duplicate", "late",
                     "net_reset", "net_blackhole", "net_latency", "net_slicing",
                     # issue 28
                     "net_lost_step", "net_partition", "fatal", "threads", "interrupt",
                     "crash"}
    assert {f.how for p in plans for f in p.faults if f.kind == "drop"} == {"fin", "rst"}
    channels = {f.channel for p in plans for f in p.faults}
    assert channels == {"control", "pubsub", "network", "user"}
    pubsub_frames = {f.after_frames for p in plans for f in p.faults if f.channel == "pubsub"}
    assert 1 in pubsub_frames, "a fault right after the subscribe ack must be drawn"
    assert 0 not in pubsub_frames


def test_compare_counts_lost_duplicated_unexpected_and_order() -> None:
    assert compare([1, 2, 3], [1, 2, 3]).__dict__ == {
        "delivered": 3, "lost": 0, "duplicated": 0, "unexpected": 0, "out_of_order": 0}
    assert compare([1, 2, 3], [1, 3]).lost == 1
    assert compare([1, 2, 3], [1, 2, 2, 3, 3, 3]).duplicated == 3
    assert compare([1, 2, 3], [1, 2, 3, 9]).unexpected == 1
    assert compare([1, 2, 3], [2, 1, 3]).out_of_order == 1
    assert compare([], ["UnknownEvent"]).unexpected == 1


def test_recovery_is_the_longest_wait_after_a_fault() -> None:
    stamps = [10.0, 10.1, 10.2, 11.9, 12.0, 12.1]
    # a drop at 10.15: the in-flight event at 10.2 comes at once, then a wait to 11.9
    (action, wait), = recoveries([("drop", "control", 10.15)], stamps)
    assert action == "drop" and wait == pytest.approx(1.7)
    # two faults: each is measured up to the next one
    got = recoveries([("drop", "control", 10.05), ("drop", "pubsub", 11.95)], stamps)
    assert [a for a, _ in got] == ["drop", "drop"]
    assert got[0][1] == pytest.approx(1.7) and got[1][1] == pytest.approx(0.1)
    # a drop soon after a stall is waiting for the stall's detection
    assert recoveries([("stall", "control", 10.05), ("drop", "pubsub", 10.15)],
                      stamps)[1][0] == "stall"


def test_pubsub_stall_before_the_first_notification_loses_nothing() -> None:
    with LocalSimulator(bundle_size=100, bundles=2) as server:
        server.faults.add(Fault("stall", channel="pubsub", after_frames=1))  # after the ack
        with simsync.Client(server.url, config=FAST).start_session(
                start_slot=START, end_slot=START + 9, disconnect_timeout_secs=60) as session:
            session.subscribe_transactions([SYSTEM])
            events: Any = drive(session)
            session_id = session.info.session_id
        assert server.faults.fired == 1
        expected = [t.signature for t in server.executed(session_id)
                    if SYSTEM in t.program_ids]
    delivered = [e.signature for e in events if isinstance(e, simsync.Transaction)]
    assert expected and delivered == expected
