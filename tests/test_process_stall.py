"""A stall of the client's own process is not the server's silence.

A garbage collection, native code holding the GIL, SIGSTOP or a suspended laptop stop the
reader and the keepalive together. When they run again the last inbound frame is old, but
the server may have answered long ago (its frames wait unread in the socket buffer) or had
nothing to say. Judged as silence, such a stall aborts a healthy link; during the create it
is fatal, since simsync never creates twice. This failed CI once: a loaded 2-core run paused
a test process for 2.3 s and its create was abandoned (``SessionCreateError``, code 1006).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from simsync.localsim import LocalSimulator
from simsync.localsim.netproxy import FaultProxy
from tests.support import START, sim

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="POSIX signals")]
__all__ = ["sim"]

DEAD_AFTER = 1.0

#: The client: start a session, say so, wait at the first pause for a line on stdin, idle
#: there a while (a would-be reconnect happens now), then run the session to its end.
CHILD = textwrap.dedent(f"""
    import sys, time, simsync, logging, os
    logging.basicConfig(level=os.environ.get("CHILD_LOG", "WARNING"))
    config = simsync.ClientConfig(ping_interval=0.2, dead_after={DEAD_AFTER},
                                  backoff_initial=0.01, backoff_max=0.1)
    client = simsync.Client(sys.argv[1], config=config)
    with client.start_session(start_slot={START}, end_slot={START + 4},
                              disconnect_timeout_secs=60) as session:
        pauses = (simsync.ReadyForContinue, simsync.Paused)
        event = session.next_event(30)
        while not isinstance(event, pauses):
            event = session.next_event(30)
        print("paused", flush=True)
        sys.stdin.readline()
        time.sleep({3 * DEAD_AFTER})
        while True:
            if isinstance(event, pauses):
                session.send_continue()
            if isinstance(event, simsync.Completed):
                break
            event = session.next_event(30)
    print("completed", flush=True)
""")


def start_child(url: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONSAFEPATH="1")
    return subprocess.Popen([sys.executable, "-c", CHILD, url], text=True, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def stop_child(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
    proc.communicate(timeout=30)


def test_a_stopped_client_process_keeps_its_link_when_it_runs_again(
        sim: LocalSimulator) -> None:
    proc = start_child(sim.url)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "paused"
        connections = sim.faults.connections("control")
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(3 * DEAD_AFTER)      # the fault itself: the process stands still this long
        os.kill(proc.pid, signal.SIGCONT)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        stop_child(proc)
    assert proc.returncode == 0, err
    assert out.strip() == "completed"
    assert "nothing received" not in err, err
    assert sim.faults.connections("control") == connections


def test_a_silent_server_is_still_found_while_the_client_process_keeps_stalling(
        sim: LocalSimulator) -> None:
    """The stall credit is only the keepalive's own lateness: a server that went silent is
    found however often the client process is stopped and resumed."""
    with FaultProxy(upstream=("127.0.0.1", sim.port)) as proxy:
        proc = start_child(proxy.url(sim.url))
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "paused"
            proxy.blackhole("down")
            deadline = time.monotonic() + 30
            while sim.faults.connections("control") < 2 and time.monotonic() < deadline:
                os.kill(proc.pid, signal.SIGSTOP)
                time.sleep(0.3)         # the fault: stopped 0.3 s of every 0.4 s
                os.kill(proc.pid, signal.SIGCONT)
                time.sleep(0.1)
            assert sim.faults.connections("control") >= 2, "the silent server was never found"
        finally:
            stop_child(proc)
