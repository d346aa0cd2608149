"""Issue 15: parallel sessions keep the single session's guarantees; sessions are safe
against failures, closes, forks, other threads and garbage collection."""
from __future__ import annotations

import contextlib
import gc
import json
import os
import threading
import time
import warnings
from typing import Any, Dict, Iterator, List

import pytest

import simsync
from simsync.localsim import Fault, LocalSimulator
from tests.support import FAST, START, drive, slots, wait_for

pytestmark = pytest.mark.timeout(300)
END = START + 10            # four sub-sessions of 3, 3, 3 and 2 slots


@pytest.fixture
def sim4() -> Iterator[LocalSimulator]:
    with LocalSimulator(bundle_size=3, bundles=8) as server:
        yield server


def start(server: LocalSimulator, config: simsync.ClientConfig = FAST,
          end: int = END) -> simsync.ParallelSession:
    return simsync.Client(server.url, config=config).start_parallel(
        start_slot=START, end_slot=end, disconnect_timeout_secs=60)


def one_thread(batch: simsync.ParallelSession) -> Dict[str, List[Any]]:
    seen: Dict[str, List[Any]] = {s.info.session_id: [] for s in batch.sub_sessions}
    for sub, event in batch.events(timeout=30):
        seen[sub.info.session_id].append(event)
        if isinstance(event, (simsync.ReadyForContinue, simsync.Paused)):
            sub.send_continue(timeout=30)
    return seen


def thread_each(batch: simsync.ParallelSession) -> Dict[str, List[Any]]:
    seen: Dict[str, List[Any]] = {}
    errors: List[BaseException] = []

    def run(sub: simsync.SubSession) -> None:
        try:
            seen[sub.info.session_id] = drive(sub, timeout=30)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in batch.sub_sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    return seen


def exactly_once(server: LocalSimulator, batch: simsync.ParallelSession,
                 seen: Dict[str, List[Any]], what: str) -> None:
    assert len(batch.sub_sessions) == 4, what
    for sub in batch.sub_sessions:
        events = seen[sub.info.session_id]
        assert slots(events) == server.produced_slots(*sub.range), what
        assert isinstance(events[-1], simsync.Completed), what
        pauses = [e for e in events if isinstance(e, simsync.ReadyForContinue)]
        assert len(pauses) == len(server.produced_slots(*sub.range)), what


# ------------------------------------------------------------------ 1: the drop sweep

@pytest.mark.slow
@pytest.mark.parametrize("how", ["fin", "rst", "two"])
@pytest.mark.parametrize("mode", [one_thread, thread_each], ids=["one-thread", "thread-each"])
def test_a_drop_after_every_frame_index_of_a_4_way_batch(sim4: LocalSimulator,
                                                         mode: Any, how: str) -> None:
    """FIN or RST after every frame index; ``two``: an RST there and a FIN 25 frames into
    the connection after it (a second drop per batch)."""
    with start(sim4) as batch:
        clean = mode(batch)
    frames = sum(len(events) for events in clean.values()) + 12
    create_frames = len(clean) + 1      # one sessionCreated each, then sessionsCreatedV2
    for index in range(1, frames + 1):
        sim4.faults.clear()
        base = sim4.faults.connections("control") + 1
        sim4.faults.add(Fault("drop", after_frames=index, on_connection=base,
                              how="fin" if how == "fin" else "rst"))
        if how == "two":
            sim4.faults.add(Fault("drop", after_frames=25, on_connection=base + 1))
        if index < create_frames:       # the create's answer is lost: never created twice
            with pytest.raises(simsync.SessionCreateError, match="may exist"):
                start(sim4)
            continue
        with start(sim4) as batch:
            seen = mode(batch)
            exactly_once(sim4, batch, seen, f"drop after frame {index}")


# ------------------------------------------------------------------ 2, 7: failures end events()

def test_events_raises_a_failed_batch_after_the_events_before_it(sim4: LocalSimulator) -> None:
    config = FAST.replace(reconnect_budget=0.3)
    seen: List[Any] = []
    with start(sim4, config) as batch:
        sim4.faults.refuse_connects(10**6)
        with pytest.raises(simsync.ControlFailed, match="gave up"):
            for sub, event in batch.events(timeout=30):
                seen.append(event)
                if len(seen) == 10:
                    batch._connection.abort()
                if isinstance(event, (simsync.ReadyForContinue, simsync.Paused)):
                    with contextlib.suppress(simsync.ControlFailed):   # events() raises it
                        sub.send_continue(timeout=30)
        assert len(seen) >= 10
        # it ends: every sub-session is done after its failure
        assert list(batch.events(timeout=5)) == []


def test_a_fatal_error_in_one_sub_session_reaches_it_and_the_others_go_on(
        sim4: LocalSimulator) -> None:
    with start(sim4) as batch:
        victim = batch.sub_sessions[1]
        fatal = {"method": "sessionEventV2", "params": {
            "session_id": victim.info.session_id, "seq_id": None,
            "event": {"method": "error", "params": {"internal": {"error": "boom"}}}}}
        sim4.faults.add(Fault("malformed", after_frames=45, payload=json.dumps(fatal)))
        seen: Dict[str, List[Any]] = {s.info.session_id: [] for s in batch.sub_sessions}
        failures: List[simsync.ControlFailed] = []
        while True:
            try:
                for sub, event in batch.events(timeout=30):
                    seen[sub.info.session_id].append(event)
                    if isinstance(event, (simsync.ReadyForContinue, simsync.Paused)):
                        sub.send_continue(timeout=30)
                break
            except simsync.ControlFailed as exc:
                failures.append(exc)
        assert len(failures) == 1 and failures[0].server_error.kind == "internal"
        for sub in batch.sub_sessions:
            if sub is not victim:
                assert isinstance(seen[sub.info.session_id][-1], simsync.Completed)
        with pytest.raises(simsync.SessionClosed):
            victim.next_event(1)


def test_events_ends_after_the_user_closed_a_sub_session(sim4: LocalSimulator) -> None:
    with start(sim4) as batch:
        closed = batch.sub_sessions[0]
        closed.close()
        seen = one_thread(batch)
        assert closed.info.session_id in seen
        for sub in batch.sub_sessions[1:]:
            assert isinstance(seen[sub.info.session_id][-1], simsync.Completed)


# ------------------------------------------------------------------ 3: fork

@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_events_in_a_forked_child_raises(sim4: LocalSimulator) -> None:
    with start(sim4) as batch:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:                                  # pragma: no cover - the child
            try:
                next(iter(batch.events(timeout=1)))
                os.write(write, b"no error")
            except simsync.ForkedSessionError:
                os.write(write, b"ok")
            except BaseException as exc:  # noqa: BLE001
                os.write(write, type(exc).__name__.encode())
            os._exit(0)
        os.close(write)
        answer = os.read(read, 100)
        os.close(read)
        os.waitpid(pid, 0)
        assert answer == b"ok"


# ------------------------------------------------------------------ 4, 5: threads

def test_one_thread_per_sub_session_keeps_no_arrival_record(sim4: LocalSimulator) -> None:
    with start(sim4) as batch:
        exactly_once(sim4, batch, thread_each(batch), "thread each")
        assert batch._batch.arrivals is None     # nothing accumulates per event
        with pytest.raises(simsync.SimsyncError, match="own next_event"):
            next(iter(batch.events(timeout=1)))


def test_a_timeout_holds_while_another_thread_waits(sim4: LocalSimulator) -> None:
    with start(sim4) as batch:
        sub = batch.sub_sessions[0]
        while not isinstance(sub.next_event(10), simsync.ReadyForContinue):
            pass
        waiter = threading.Thread(target=lambda: pytest.raises(
            simsync.SessionClosed, sub.next_event))
        waiter.start()
        began = time.monotonic()
        with pytest.raises(simsync.EventTimeout):
            sub.next_event(timeout=0.5)
        assert time.monotonic() - began < 3
        batch.close()
        waiter.join(10)
        assert not waiter.is_alive()


# ------------------------------------------------------------------ 10, 11: gc and Completed

def test_a_collected_session_closes_itself_with_a_resource_warning(sim4: LocalSimulator) -> None:
    before = {t.name for t in threading.enumerate()}
    client = simsync.Client(sim4.url, config=FAST)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = client.start_session(start_slot=START, end_slot=START + 2,  # one bundle
                                       disconnect_timeout_secs=60)
        batch = start(sim4)
        del session, batch
        gc.collect()
    assert sum(issubclass(w.category, ResourceWarning) for w in caught) == 2
    wait_for(lambda: not [t for t in threading.enumerate()
                          if t.name.startswith("simsync-") and t.name not in before],
             what="the collected sessions' threads ending")


def test_after_completed_the_connections_close_by_themselves(sim4: LocalSimulator) -> None:
    session = simsync.Client(sim4.url, config=FAST).start_session(
        start_slot=START, end_slot=START + 2, disconnect_timeout_secs=60)
    try:
        drive(session)
        assert session.status.state is simsync.State.CLOSED
        wait_for(lambda: not sim4.session_ids(), what="the server session closed")
    finally:
        session.close()
