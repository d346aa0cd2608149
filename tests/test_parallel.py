"""Parallel sessions: one control connection, many sub-sessions, exactly once per sub."""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Dict, Iterator, List

import pytest

import simsync
from simsync.localsim import Fault, LocalSimulator
from simsync.localsim.netproxy import FaultProxy
from simsync.parallel import check_created
from simsync.protocol import decode_response
from simsync.transport import Fatal
from tests.fixtures import frames
from tests.support import FAST, START, drive, slots, wait_for

pytestmark = pytest.mark.timeout(180)
END = START + 79            # 8 bundles of 10 slots


@pytest.fixture
def sim8() -> Iterator[LocalSimulator]:
    with LocalSimulator(bundle_size=10, bundles=10) as server:
        yield server


def start(server: LocalSimulator) -> simsync.ParallelSession:
    return simsync.Client(server.url, config=FAST).start_parallel(
        start_slot=START, end_slot=END, disconnect_timeout_secs=60)


def drive_from_one_thread(batch: simsync.ParallelSession) -> Dict[str, List[Any]]:
    seen: Dict[str, List[Any]] = {s.info.session_id: [] for s in batch.sub_sessions}
    for sub, event in batch.events(timeout=30):
        seen[sub.info.session_id].append(event)
        if isinstance(event, (simsync.ReadyForContinue, simsync.Paused)):
            sub.send_continue(timeout=30)
    return seen


def assert_each_sub_complete(server: LocalSimulator, batch: simsync.ParallelSession,
                             seen: Dict[str, List[Any]]) -> None:
    assert len(batch.sub_sessions) == 8
    covered = []
    for sub in batch.sub_sessions:
        events = seen[sub.info.session_id]
        assert slots(events) == server.produced_slots(*sub.range)
        assert isinstance(events[-1], simsync.Completed)
        covered.append(sub.range)
    assert sorted(covered)[0][0] == START and sorted(covered)[-1][1] == END


def test_eight_sub_sessions_from_one_thread(sim8: LocalSimulator) -> None:
    with start(sim8) as batch:
        assert_each_sub_complete(sim8, batch, drive_from_one_thread(batch))


def test_eight_sub_sessions_from_eight_threads(sim8: LocalSimulator) -> None:
    with start(sim8) as batch:
        seen: Dict[str, List[Any]] = {}

        def run(sub: simsync.SubSession) -> None:
            seen[sub.info.session_id] = drive(sub)

        threads = [threading.Thread(target=run, args=(s,)) for s in batch.sub_sessions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert_each_sub_complete(sim8, batch, seen)


def test_a_control_drop_in_the_middle_changes_nothing(sim8: LocalSimulator) -> None:
    with start(sim8) as clean_batch:
        clean = drive_from_one_thread(clean_batch)
    sim8.faults.add(Fault("drop", after_frames=60))
    with start(sim8) as batch:
        seen = drive_from_one_thread(batch)
        assert sim8.faults.fired == 1
        assert_each_sub_complete(sim8, batch, seen)
    assert sorted(map(len, seen.values())) == sorted(map(len, clean.values()))


def test_a_too_old_server_is_refused_loudly() -> None:
    row = next(r for r in frames("control.jsonl", "s2c") if "too-old" in r["note"])
    reply = decode_response(json.dumps(row["frame"]))[1]
    with pytest.raises(Fatal, match="too old"):
        check_created(reply)


def test_subscriptions_of_a_batch_reconnect_one_at_a_time(sim8: LocalSimulator) -> None:
    system = "11111111111111111111111111111111"
    config = FAST.replace(coordinator_quick_attempts=1)
    batch = simsync.Client(sim8.url, config=config).start_parallel(
        start_slot=START, end_slot=START + 39, disconnect_timeout_secs=60)
    with batch:
        for sub in batch.sub_sessions:
            sub.subscribe_transactions([system])
        sim8.faults.add(Fault("drop", channel="pubsub", after_frames=3, times=4))
        sim8.faults.refuse_connects(8, channel="pubsub")
        seen = drive_from_one_thread(batch)
        for sub in batch.sub_sessions:
            delivered = [e.signature for e in seen[sub.info.session_id]
                         if isinstance(e, simsync.Transaction)]
            expected = [t.signature for t in sim8.executed(sub.info.session_id)
                        if system in t.program_ids]
            assert delivered == expected
        assert batch.coordinator.turns_taken > 0
        assert batch.coordinator.most_in_turn == 1


def test_events_resume_after_a_timeout(sim8: LocalSimulator) -> None:
    with start(sim8) as batch:
        seen: Dict[str, List[Any]] = {s.info.session_id: [] for s in batch.sub_sessions}
        unanswered: Dict[str, Any] = {}    # sub-sessions at a pause no step answered yet
        timeouts = 0
        while True:
            try:
                for sub, event in batch.events(timeout=0.5):
                    seen[sub.info.session_id].append(event)
                    if isinstance(event, simsync.ReadyForContinue) and timeouts == 0:
                        unanswered[sub.info.session_id] = sub
                        continue           # leave this one paused: the wait must time out
                    if isinstance(event, (simsync.ReadyForContinue, simsync.Paused)):
                        sub.send_continue(timeout=30)
                break
            except simsync.EventTimeout:
                timeouts += 1
                for sub in unanswered.values():
                    sub.send_continue(timeout=30)
                unanswered.clear()
        assert timeouts >= 1
        assert_each_sub_complete(sim8, batch, seen)


def test_four_worker_processes_each_run_a_session(sim8: LocalSimulator) -> None:
    import concurrent.futures
    import multiprocessing

    from tests.workers import run_range

    ranges = [(START + 10 * i, START + 10 * i + 9) for i in range(4)]   # a bundle each
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=4, mp_context=spawn) as pool:
        results = list(pool.map(run_range, [sim8.url] * 4, *zip(*ranges)))
    for (start_slot, end_slot), result in zip(ranges, results):
        assert result["slots"] == sim8.produced_slots(start_slot, end_slot)
        assert isinstance(result["completed"], simsync.Completed)


def test_close_while_reconnecting_closes_every_server_sub_session(sim8: LocalSimulator
                                                                   ) -> None:
    """The batch's connection is down when the user closes: the server would hold every
    sub-session for its detach window, so close attaches on a fresh connection and closes
    them (bounded by the close timeout)."""
    config = FAST.replace(backoff_initial=5.0, backoff_max=5.0)
    batch = simsync.Client(sim8.url, config=config).start_parallel(
        start_slot=START, end_slot=END, disconnect_timeout_secs=600)
    ids = [s.info.session_id for s in batch.sub_sessions]
    assert set(ids) <= set(sim8.session_ids())
    batch._connection.abort()                # then a backoff sleep of up to 5 s
    wait_for(lambda: batch.status.state is simsync.State.RECONNECTING)
    began = time.monotonic()
    batch.close(timeout=3)
    assert time.monotonic() - began < 4
    wait_for(lambda: not set(ids) & set(sim8.session_ids()), timeout=5,
             what="the sub-sessions closed, not left for their 600 s detach window")


def test_close_whose_fresh_connection_goes_silent_retries_on_another(
        sim8: LocalSimulator) -> None:
    """The close's fresh connection loses its server side at its first byte while the
    client side stays open and silent (the single-session case was found by the model
    test, seed 3): that attempt gives way to another fresh connection, which closes every
    sub-session within the close timeout."""
    config = FAST.replace(backoff_initial=5.0, backoff_max=5.0)
    with FaultProxy(upstream=("127.0.0.1", sim8.port)) as proxy:
        batch = simsync.Client(proxy.url(sim8.url), config=config).start_parallel(
            start_slot=START, end_slot=END, disconnect_timeout_secs=600)
        ids = [s.info.session_id for s in batch.sub_sessions]
        proxy.reset_after(1, side="upstream", direction="up")
        proxy.reset(side="client")                 # then a backoff sleep of up to 5 s
        wait_for(lambda: batch.status.state is simsync.State.RECONNECTING)
        began = time.monotonic()
        batch.close(timeout=3)
        assert time.monotonic() - began < 4
        assert proxy.armed_resets() == 0, "the fault never fired"
    wait_for(lambda: not set(ids) & set(sim8.session_ids()), timeout=5,
             what="the sub-sessions closed, not left for their 600 s detach window")


def test_a_sub_session_closed_while_down_is_closed_after_the_reconnect(
        sim8: LocalSimulator) -> None:
    batch = simsync.Client(sim8.url, config=FAST).start_parallel(
        start_slot=START, end_slot=END, disconnect_timeout_secs=600)
    with batch:
        first, rest = batch.sub_sessions[0], batch.sub_sessions[1:]
        sim8.faults.refuse_connects(3)               # a reconnect of a few attempts
        batch._connection.abort()
        wait_for(lambda: batch.status.state is simsync.State.RECONNECTING)
        first.close(timeout=1)
        wait_for(lambda: batch.status.state is simsync.State.UP, timeout=10)
        wait_for(lambda: first.info.session_id not in sim8.session_ids(), timeout=5,
                 what="the closed sub-session ended on the server after the reconnect")
        # the others are untouched and run to the end
        for sub in rest:
            assert isinstance(drive(sub)[-1], simsync.Completed)


def test_completed_sub_sessions_are_closed_on_the_server(sim8: LocalSimulator) -> None:
    """A completed sub-session is still held by the server (until the batch's detach window
    ends) unless the client closes it: each ``Completed`` delivered closes its sub-session,
    and ``close()`` the rest."""
    with start(sim8) as batch:
        ids = [s.info.session_id for s in batch.sub_sessions]
        drive_from_one_thread(batch)
        wait_for(lambda: not set(ids) & set(sim8.session_ids()), timeout=5,
                 what="every completed sub-session closed on the server")
