"""Resources: open/close cycles leave no thread and no file descriptor behind, and a session
abandoned without ``close()`` does not keep the interpreter from exiting."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from typing import Callable, List, Tuple

import psutil
import pytest

import simsync
from simsync.localsim import Fault, LocalSimulator
from tests.leaks import above, wait_until
from tests.support import FAST, START, drive, sim

pytestmark = pytest.mark.timeout(300)
__all__ = ["sim"]

SYSTEM = "11111111111111111111111111111111"
END = START + 5
CYCLES = 100
EXIT_BOUND = 2.0


def fds() -> int:
    """Every open file descriptor of this process (not only sockets). Listing the directory
    opens one more descriptor for the duration of the listing: the same in every count."""
    return len(os.listdir("/proc/self/fd"))


def usage() -> Tuple[int, int, int]:
    """(file descriptors, Python threads, OS threads)."""
    return fds(), threading.active_count(), psutil.Process().num_threads()


def client_threads() -> List[str]:
    return [t.name for t in threading.enumerate()
            if t.name.startswith("simsync-") and not t.name.startswith("simsync-localsim")]


def until_pause(session: simsync.Session) -> None:
    while not isinstance(session.next_event(10), simsync.ReadyForContinue):
        pass


def close_at_once(session: simsync.Session, server: LocalSimulator) -> None:
    """Closed right after the create."""


def completed_with_streams(session: simsync.Session, server: LocalSimulator) -> None:
    session.subscribe_transactions([SYSTEM])
    session.subscribe_account_diffs([SYSTEM])
    drive(session)


def closed_mid_step(session: simsync.Session, server: LocalSimulator) -> None:
    until_pause(session)
    session.send_continue(advance_count=3)       # closed while the step runs


def closed_mid_step_with_streams(session: simsync.Session, server: LocalSimulator) -> None:
    session.subscribe_transactions([SYSTEM])
    until_pause(session)
    session.rpc.get_slot()
    session.send_continue(advance_count=3)


def completed_after_drops_and_rpc(session: simsync.Session, server: LocalSimulator) -> None:
    server.faults.add(Fault("drop", after_frames=9))
    server.faults.add(Fault("drop", channel="pubsub", after_frames=3))
    session.subscribe_transactions([SYSTEM])
    until_pause(session)
    session.rpc.get_slot()
    with pytest.raises(simsync.RpcError):
        session.rpc.call("noSuchMethod", [])
    session.send_continue()
    drive(session)
    with pytest.raises(simsync.RpcError):        # the endpoint has ended: fails fast
        session.rpc.get_slot()


CYCLE_KINDS: Tuple[Callable[[simsync.Session, LocalSimulator], None], ...] = (
    close_at_once, completed_with_streams, closed_mid_step, closed_mid_step_with_streams,
    completed_after_drops_and_rpc)


def cycle(server: LocalSimulator, index: int) -> None:
    server.faults.clear()
    session = simsync.Client(server.url, config=FAST).start_session(
        start_slot=START, end_slot=END, disconnect_timeout_secs=60)
    try:
        CYCLE_KINDS[index % len(CYCLE_KINDS)](session, server)
    finally:
        session.close()


def test_open_close_cycles_leave_threads_and_fds_at_baseline(sim: LocalSimulator) -> None:
    for index in range(len(CYCLE_KINDS)):          # warm up: lazy imports, pools, loggers
        cycle(sim, index)
    assert sim.wait_idle()
    assert wait_until(lambda: not client_threads(), 10), client_threads()
    baseline = usage()
    before = sim.stats.as_dict()
    peaks = [0, 0, 0]
    for index in range(CYCLES):
        cycle(sim, index)
        peaks = [max(p, u) for p, u in zip(peaks, usage())]
    opened = {k: v - before[k] for k, v in sim.stats.as_dict().items()}
    assert opened["control_connections"] >= CYCLES            # the cycles did open things
    assert opened["pubsub_connections"] >= CYCLES // 2
    assert opened["rpc_requests"] >= CYCLES // 2
    # Closing is bounded but the server side of a socket closes on its own loop a moment
    # after the client's: wait for the counts to settle back to at most the baseline (a
    # count below it is a thread or descriptor of the warm-up ending, not a leak).
    settled = wait_until(lambda: not above(usage(), baseline), 10)
    after = usage()
    print(f"fds/threads/OS threads: baseline {baseline}, peak {tuple(peaks)}, after {after}")
    assert settled, (f"after {CYCLES} cycles: above baseline {above(after, baseline)}; "
                     f"after {CYCLES} cycles: fds/threads/OS threads {after}, "
                     f"baseline {baseline}")


CHILD = textwrap.dedent("""
    import gc, sys, time
    import simsync
    url, mode = sys.argv[1], sys.argv[2]
    config = simsync.ClientConfig(ping_interval=0.2, dead_after=1.5, backoff_initial=0.01,
                                  backoff_max=0.1, reconnect_budget=60)
    client = simsync.Client(url, config=config)
    if mode == "parallel":
        session = client.start_parallel(start_slot=400000000, end_slot=400000150,
                                        disconnect_timeout_secs=60)
        sub = session.sub_sessions[0]
        sub.subscribe_transactions(["11111111111111111111111111111111"])
        while not isinstance(sub.next_event(10), simsync.ReadyForContinue):
            pass
        sub.send_continue()
    else:
        session = client.start_session(start_slot=400000000, end_slot=400000020,
                                       disconnect_timeout_secs=60)
        if mode != "paused":
            session.subscribe_transactions(["11111111111111111111111111111111"])
            session.subscribe_account_diffs(["11111111111111111111111111111111"])
        while not isinstance(session.next_event(10), simsync.ReadyForContinue):
            pass
        session.rpc.get_slot()
        if mode == "reconnecting":
            print("ready", flush=True)
            sys.stdin.readline()
            session.send_continue()
            deadline = time.monotonic() + 10     # in backoff after a refused reconnect
            while not (session.status.state is simsync.State.RECONNECTING
                       and "503" in (session.status.reason or "")):
                assert time.monotonic() < deadline, session.status
                time.sleep(0.01)
        elif mode == "stepping":
            session.send_continue(advance_count=10)
    del session
    gc.collect()
    print(repr(time.time()), flush=True)  # the last statement
""")


@pytest.mark.parametrize("mode", ["paused", "stepping", "reconnecting", "parallel"])
def test_an_abandoned_session_does_not_hold_the_interpreter(sim: LocalSimulator,
                                                            mode: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, sim.url, mode],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        go = None
        if mode == "reconnecting":
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready", child.stderr
            sim.faults.refuse_connects(10**6)        # it stays in backoff until it exits
            sim.faults.add(Fault("drop", at="after_continue_received"))
            go = "go\n"
        out, err = child.communicate(go, timeout=60)
        exited = time.time()
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, err
    last_statement = float(out.strip().splitlines()[-1])
    print(f"{mode}: exited {exited - last_statement:.3f}s after its last statement")
    assert exited - last_statement <= EXIT_BOUND, (
        f"the interpreter took {exited - last_statement:.2f}s to exit ({mode})")
    if mode == "reconnecting":
        assert sim.stats.connects_refused >= 1
