"""``ChildSimulator``: the local simulator a command starts in a child process (``simsync
run``/``ranges`` without ``--url``): it serves, and it never outlives its parent."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

import simsync
from simsync.localsim.child import ChildSimulator
from simsync.localsim.testing import START, wait_for

pytestmark = pytest.mark.timeout(90)


def test_a_child_simulator_serves_a_session_and_is_gone_after_the_block() -> None:
    with ChildSimulator(["--bundle-size", "20", "--bundles", "1"]) as sim:
        pid = sim.pid
        assert pid is not None and psutil.pid_exists(pid) and pid != os.getpid()
        with simsync.Client(sim.url) as client, \
                client.start_session(start_slot=START, end_slot=START + 4) as session:
            session.send_continue(advance_count=10)
            events = []
            while not events or not isinstance(events[-1], simsync.Completed):
                events.append(session.next_event(20))
        assert any(isinstance(e, simsync.Slot) for e in events)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


_PARENT = textwrap.dedent("""
    import signal, sys, threading
    # Ctrl-C's default even when the suite runs as a background job (SIGINT ignored there)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from simsync.localsim.child import ChildSimulator
    sim = ChildSimulator().__enter__()
    print(sim.pid, flush=True)
    threading.Event().wait(60)
""")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_the_child_stops_when_its_parent_dies_or_is_interrupted(how: str) -> None:
    """SIGKILL leaves no exit code to run: the child reads the end of its standard input.
    SIGINT from the terminal goes to the parent's process group; the child has a session of
    its own, and stops with its input's end as the parent exits."""
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert psutil.pid_exists(child_pid)
        assert os.getpgid(child_pid) != os.getpgid(parent.pid)   # Ctrl-C reaches the parent only
        parent.send_signal(signal.SIGKILL if how == "SIGKILL" else signal.SIGINT)
        parent.wait(30)
        assert wait_for(lambda: not psutil.pid_exists(child_pid)
                        or psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE, 20)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()


def test_a_child_that_prints_no_url_is_a_clear_error_and_is_stopped() -> None:
    with pytest.raises(simsync.SimsyncError, match="printed no URL") as info, \
            ChildSimulator(["--bundle-size", "0"], startup_timeout=20):
        pass
    assert "child process" in str(info.value)
