"""The core client against the local simulator over real sockets: stepping, exactly-once
across drops at every frame index, stalls, refused connects, budgets, close, secrets."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, List

import pytest

import simsync
from simsync.localsim import Fault
from tests.support import FAST, START, Records, client, drive, sim, slots, wait_for

pytestmark = pytest.mark.timeout(120)
__all__ = ["sim"]

END = START + 19          # a 20-slot session


def run_once(server: Any, config: simsync.ClientConfig = FAST, **create: Any) -> List[Any]:
    fields = {"start_slot": START, "end_slot": END, "disconnect_timeout_secs": 60, **create}
    with client(server, config).start_session(**fields) as session:
        return drive(session)


def test_session_steps_to_completed(sim: Any) -> None:
    events = run_once(sim)
    assert slots(events) == sim.produced_slots(START, END)
    assert isinstance(events[-1], simsync.Completed)
    pauses = [e for e in events if isinstance(e, simsync.ReadyForContinue)]
    assert len(pauses) == len(sim.produced_slots(START, END))


def test_session_info_and_rpc_url(sim: Any) -> None:
    with client(sim).start_session(start_slot=START, end_slot=START + 2) as session:
        assert session.info.session_id in sim.session_ids()
        assert session.rpc.url.startswith(sim.http_url + "/backtest/")
        assert session.status.state is simsync.State.UP


def test_drop_after_every_frame_index_is_exactly_once(sim: Any) -> None:
    clean = run_once(sim)
    frames_sent = len(clean) + 8          # events plus handshake frames, with margin
    for index in range(1, frames_sent + 1):
        sim.faults.clear()
        sim.faults.add(Fault("drop", after_frames=index))
        events = run_once(sim)
        assert events == clean, f"drop after frame {index} changed what the user saw"


def test_half_open_stall_after_every_frame_index_is_exactly_once() -> None:
    """A stall (no FIN, no pongs) after each frame index in turn; four simulators share the
    indices so the keepalive windows overlap."""
    from concurrent.futures import ThreadPoolExecutor

    from simsync.localsim import LocalSimulator

    # dead_after is also the create's keepalive: four simulators on a loaded 2-core machine
    # answered a create or its pings more than 0.6 s late (4 runs in 20, eo28), and a create
    # whose connection is declared dead is by design a SessionCreateError (never created
    # twice) -- not what this test is about. 1.2 s keeps each stall's detection short.
    config = FAST.replace(ping_interval=0.1, dead_after=1.2)

    def stall_each(indices: range) -> List[int]:
        fired = []
        with LocalSimulator(bundle_size=100, bundles=4) as server:
            clean = run_once(server, config)
            for index in indices:
                fault = server.faults.add(Fault("stall", after_frames=index))
                assert run_once(server, config) == clean, f"stall after frame {index}"
                server.faults.clear()
                fired += [index] * fault.fired
        return fired

    with LocalSimulator(bundle_size=100, bundles=4) as server:
        frames_sent = len(run_once(server, config)) + 8
    shares = [range(1 + k, frames_sent + 1, 4) for k in range(4)]
    with ThreadPoolExecutor(4) as pool:
        fired = sorted(i for share in pool.map(stall_each, shares) for i in share)
    assert len(fired) >= frames_sent - 8, "most stall faults never fired"


def test_drop_while_step_in_flight_executes_it_once(sim: Any) -> None:
    sim.faults.add(Fault("drop", at="after_continue_received", times=5))
    events = run_once(sim)
    assert slots(events) == sim.produced_slots(START, END)
    assert sim.faults.fired >= 5


def test_half_open_stall_is_detected(sim: Any) -> None:
    records = Records()
    logging.getLogger("simsync").addHandler(records)
    logging.getLogger("simsync").setLevel(logging.DEBUG)
    try:
        sim.faults.add(Fault("stall", after_frames=12))
        events = run_once(sim)
    finally:
        logging.getLogger("simsync").removeHandler(records)
        logging.getLogger("simsync").setLevel(logging.NOTSET)
    assert slots(events) == sim.produced_slots(START, END)
    reconnecting = [r for r in records.records if "RECONNECTING" in r.getMessage()]
    assert reconnecting, "the stall was never detected"
    frames_before = [r for r in records.records if r.name == "simsync.control"
                     and r.created <= reconnecting[0].created and "event" in r.getMessage()]
    detected_after = reconnecting[0].created - frames_before[-1].created
    assert detected_after <= FAST.ping_interval + FAST.dead_after + 1.0


def test_refused_connects_then_success(sim: Any) -> None:
    sim.faults.refuse_connects(3)
    events = run_once(sim)
    assert slots(events) == sim.produced_slots(START, END)


def test_exhausted_budget_at_start_is_a_create_error(sim: Any) -> None:
    sim.faults.refuse_connects(10**6)
    config = FAST.replace(reconnect_budget=0.5, initial_connect_budget=0.5)
    with pytest.raises(simsync.SessionCreateError, match="503"):
        client(sim, config).start_session(start_slot=START, end_slot=END)


def test_exhausted_budget_mid_session_raises_control_failed(sim: Any) -> None:
    config = FAST.replace(reconnect_budget=0.5)
    with client(sim, config).start_session(start_slot=START, end_slot=END,
                                           disconnect_timeout_secs=60) as session:
        while not isinstance(session.next_event(10), simsync.ReadyForContinue):
            pass
        sim.faults.refuse_connects(10**6)
        sim.faults.add(Fault("drop", at="after_continue_received"))
        session.send_continue()
        with pytest.raises(simsync.ControlFailed, match="gave up reconnecting"):
            drive(session)
        assert session.status.state is simsync.State.FAILED


def test_fatal_create_error_carries_the_server_message(sim: Any) -> None:
    with pytest.raises(simsync.SessionCreateError, match="bundleNotFound"):
        client(sim).start_session(start_slot=START - 1000, end_slot=START - 990)


def test_drop_without_detach_window_fails_clearly(sim: Any) -> None:
    sim.faults.add(Fault("drop", after_frames=6))
    with client(sim).start_session(start_slot=START, end_slot=END) as session, \
            pytest.raises(simsync.ControlFailed, match="no detach window"):
        drive(session)


def test_a_second_step_while_one_runs_is_refused(sim: Any) -> None:
    with client(sim).start_session(start_slot=START, end_slot=END) as session:
        while not isinstance(session.next_event(10), simsync.ReadyForContinue):
            pass
        session.send_continue()
        with pytest.raises(simsync.SimsyncError, match="still running"):
            session.send_continue()


def test_continue_until_ready_returns_events_up_to_the_pause(sim: Any) -> None:
    with client(sim).start_session(start_slot=START, end_slot=END) as session:
        while not isinstance(session.next_event(10), simsync.ReadyForContinue):
            pass
        events = session.continue_until_ready(advance_count=3, timeout=10)
        assert isinstance(events[-1], simsync.ReadyForContinue)
        assert slots(events) == sim.produced_slots(START, END)[1:4]


def test_advance_to_discovery_pauses_before_the_batch(sim: Any) -> None:
    program = sim.DISCOVERY_PROGRAM_ID
    with client(sim).start_session(start_slot=START + 1, end_slot=END,
                                   discoveries=[{"programExecuted": program}]) as session:
        events = [session.next_event(10)]
        while not isinstance(events[-1], simsync.ReadyForContinue):
            events.append(session.next_event(10))
        events += session.advance_to_discovery(timeout=10)
        batch = [e for e in events if isinstance(e, simsync.DiscoveryBatch)][-1]
        assert events[-1] == simsync.Paused(batch.slot, batch.batch_index)
        executed = sim.executed(session.info.session_id)
        assert not [t for t in executed if program in t.program_ids
                    and (t.slot, t.batch_index) >= (batch.slot, batch.batch_index)]


def test_events_after_completed_raise_session_closed(sim: Any) -> None:
    with client(sim).start_session(start_slot=START, end_slot=START + 2) as session:
        drive(session)
        with pytest.raises(simsync.SessionClosed, match="completed"):
            session.next_event(1)


def test_next_event_timeout(sim: Any) -> None:
    with client(sim).start_session(start_slot=START, end_slot=END) as session:
        while not isinstance(session.next_event(10), simsync.ReadyForContinue):
            pass
        with pytest.raises(simsync.EventTimeout) as info:
            session.next_event(timeout=0.3)
        assert isinstance(info.value, TimeoutError)


def test_close_is_idempotent_and_wakes_waiters(sim: Any) -> None:
    session = client(sim).start_session(start_slot=START, end_slot=END)
    errors: List[BaseException] = []

    def wait() -> None:
        try:
            while True:
                session.next_event()
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    wait_for(lambda: session.status.state is simsync.State.UP)
    session.close()
    session.close()
    waiter.join(5)
    assert not waiter.is_alive()
    assert isinstance(errors[0], simsync.SessionClosed)
    assert not [t for t in threading.enumerate() if t.name.startswith("simsync-")
                and not t.name.startswith("simsync-localsim")]


def test_close_during_backoff_returns_quickly(sim: Any) -> None:
    config = FAST.replace(backoff_initial=30.0, backoff_max=30.0, reconnect_budget=840.0)
    session = client(sim, config).start_session(start_slot=START, end_slot=END,
                                                disconnect_timeout_secs=60)
    while not isinstance(session.next_event(10), simsync.ReadyForContinue):
        pass
    sim.faults.refuse_connects(10**6)
    sim.faults.add(Fault("drop", at="after_continue_received"))
    session.send_continue()
    wait_for(lambda: session.status.state is simsync.State.RECONNECTING, what="reconnecting")
    refused = sim.stats.connects_refused
    started = time.monotonic()
    session.close(timeout=1.5)
    # the 30 s backoff is cut short; what remains are tries on fresh connections to tell
    # the server (refused here), until the close's own timeout and no longer
    assert time.monotonic() - started < 2.0
    assert sim.stats.connects_refused > refused


def test_wrong_api_key_is_a_create_error_without_the_key() -> None:
    from simsync.localsim import LocalSimulator

    with LocalSimulator(api_key="right-key-123") as server:
        with pytest.raises(simsync.SessionCreateError, match="401") as info:
            client(server, api_key="wrong-key-456").start_session(start_slot=START,
                                                                  end_slot=END)
        assert "wrong-key-456" not in str(info.value)
        assert "wrong-key-456" not in repr(info.value)


def test_api_key_never_logged_or_shown() -> None:
    from simsync.localsim import LocalSimulator

    secret = "s3cr3t-api-key-0123456789"
    records = Records()
    root = logging.getLogger()
    root.addHandler(records)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        with LocalSimulator(api_key=secret) as server:
            server.faults.add(Fault("drop", after_frames=9))
            the_client = client(server, api_key=secret)
            with the_client.start_session(start_slot=START, end_slot=START + 5,
                                          disconnect_timeout_secs=60) as session:
                events = drive(session)
                assert server.faults.fired == 1
                shown = [repr(the_client), str(the_client), repr(session), str(session),
                         repr(session.rpc), repr(the_client.config)] + [repr(e) for e in events]
    finally:
        root.removeHandler(records)
        root.setLevel(old_level)
    assert records.records, "nothing was logged: the check would prove nothing"
    assert secret not in records.text()
    assert all(secret not in text for text in shown)


def test_forked_child_cannot_use_the_session(sim: Any) -> None:
    with client(sim).start_session(start_slot=START, end_slot=END) as session:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                session.next_event(1)
                os.write(write, b"no error")
            except simsync.ForkedSessionError:
                os.write(write, b"forked")
            except BaseException as exc:  # noqa: BLE001
                os.write(write, type(exc).__name__.encode())
            os._exit(0)
        os.close(write)
        answer = os.read(read, 100)
        os.close(read)
        os.waitpid(pid, 0)
        assert answer == b"forked"
        assert isinstance(session.next_event(10), (simsync.Status, simsync.Slot,
                                                   simsync.ReadyForContinue))


CHILD = textwrap.dedent("""
    import signal, sys, simsync
    # A terminal's program gets Ctrl-C; a background suite (cmd &, nohup) hands its
    # children an ignored SIGINT: this child stands for the former.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    config = simsync.ClientConfig(ping_interval=0.2, dead_after=1.5)
    session = simsync.Client(sys.argv[1], config=config).start_session(
        start_slot=400000000, end_slot=400000010)
    while not isinstance(session.next_event(), simsync.ReadyForContinue):
        pass
    try:
        print("blocked", flush=True)
        session.next_event()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        session.close()
        sys.exit(3)
""")


def test_sigint_reaches_a_child_blocked_in_next_event(sim: Any) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, sim.url], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "blocked"
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        assert child.stdout.readline().strip() == "interrupted", child.stderr
        interrupted_after = time.monotonic() - sent
        assert child.wait(10) == 3
    finally:
        child.kill()
        child.wait()
    assert interrupted_after < 1.0


def test_a_discovery_announced_before_the_first_pause_is_not_skipped(sim: Any) -> None:
    program = sim.DISCOVERY_PROGRAM_ID
    for start in range(START, START + 40):
        with client(sim).start_session(start_slot=start, end_slot=start + 5,
                                       discoveries=[{"programExecuted": program}]) as session:
            early = []
            while not isinstance(event := session.next_event(10), simsync.ReadyForContinue):
                early.append(event)
            announced = [e for e in early if isinstance(e, simsync.DiscoveryBatch)]
            if not announced:
                continue
            events = session.advance_to_discovery(timeout=10)
            assert events[-1] == simsync.Paused(announced[0].slot, announced[0].batch_index)
            return
    pytest.fail("no start slot had its discovery announced before the first pause")


def test_status_counts_reconnects(sim: Any) -> None:
    sim.faults.add(Fault("drop", at="after_continue_received", times=3))
    with client(sim).start_session(start_slot=START, end_slot=END,
                                   disconnect_timeout_secs=60) as session:
        assert session.status.reconnects == 0
        drive(session)
        assert session.status.reconnects == 3
