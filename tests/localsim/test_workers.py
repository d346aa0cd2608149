"""``LocalSimulator(workers=N)``: the sub-sessions of a parallel batch run in worker processes
(`simsync.localsim.workers`) and the client sees exactly what one process gives."""
from __future__ import annotations

import os
import re
import signal
from typing import Any, Dict, List, Tuple

import psutil
import pytest

import simsync
from simsync.localsim import Fault, LocalSimulator
from tests.support import FAST, START, wait_for

pytestmark = pytest.mark.timeout(180)
SYSTEM = "11111111111111111111111111111111"
END = START + 39            # 4 bundles of 10 slots
_ID = re.compile(r"backtest_[0-9a-f-]+")


Seen = Dict[Tuple[Tuple[int, int], str], List[str]]


def run(sim: LocalSimulator, subscribe: bool = True) -> Seen:
    """Drive a parallel batch to its end; per sub-range and event kind (Transaction,
    AccountDiff, the control events: their order between kinds is timing) the events in
    order, session ids masked."""
    seen: Seen = {}
    with simsync.Client(sim.url, config=FAST).start_parallel(
            start_slot=START, end_slot=END, send_summary=True,
            disconnect_timeout_secs=60) as batch:
        if subscribe:
            for sub in batch.sub_sessions:
                sub.subscribe_transactions([SYSTEM])
                sub.subscribe_account_diffs([SYSTEM])
        for sub, event in batch.events(timeout=60):
            kind = type(event).__name__
            kind = kind if kind in ("Transaction", "AccountDiff") else "control"
            seen.setdefault((tuple(sub.range), kind), []).append(_ID.sub("ID", repr(event)))
            if isinstance(event, (simsync.ReadyForContinue, simsync.Paused)):
                sub.send_continue(advance_count=3, timeout=60)
    return seen


def test_two_workers_give_what_one_process_gives() -> None:
    with LocalSimulator(bundle_size=10, bundles=10) as one:
        expected = run(one)
    with LocalSimulator(bundle_size=10, bundles=10, workers=2) as two:
        assert two.workers is not None and len(two.workers.pids) == 2
        assert os.getpid() not in two.workers.pids
        got = run(two)
        assert two.stats.sessions_completed == 4
    assert got == expected
    assert {kind for _, kind in got} == {"Transaction", "AccountDiff", "control"}
    controls = [events for (_, kind), events in got.items() if kind == "control"]
    assert len(controls) == 4
    assert all(events[-1].startswith("Completed(summary=Summary(") for events in controls)


def test_sub_sessions_are_spread_over_the_workers_ports() -> None:
    with LocalSimulator(bundle_size=10, bundles=10, workers=2) as sim, \
            simsync.Client(sim.url, config=FAST).start_parallel(
                start_slot=START, end_slot=END) as batch:
        ports = {sub.info.rpc_endpoint.split("/backtest/")[0] for sub in batch.sub_sessions}
        assert len(ports) == 2 and f":{sim.port}" not in " ".join(ports)


def test_a_control_drop_during_a_run_with_workers_is_exactly_once() -> None:
    with LocalSimulator(bundle_size=10, bundles=10, workers=2) as sim:
        clean = run(sim)
        sim.faults.add(Fault("drop", after_frames=60))
        dropped = run(sim)
        assert sim.faults.fired_on("drop")
    assert dropped == clean


def test_a_killed_worker_is_a_clear_error_and_nothing_is_left_running() -> None:
    with LocalSimulator(bundle_size=10, bundles=10, workers=2) as sim:
        assert sim.workers is not None
        pids = list(sim.workers.pids)
        killed = False
        with pytest.raises(simsync.ControlFailed, match="worker process .* sub-session"), \
                simsync.Client(sim.url, config=FAST).start_parallel(
                    start_slot=START, end_slot=END, disconnect_timeout_secs=60) as batch:
            for sub, event in batch.events(timeout=60):
                if isinstance(event, simsync.ReadyForContinue):
                    if not killed:
                        os.kill(pids[0], signal.SIGKILL)
                        killed = True
                    sub.send_continue(timeout=60)
    assert wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status()
                                    != psutil.STATUS_ZOMBIE for p in pids), 20)


def _alive(pid: int) -> bool:
    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


def test_workers_end_when_their_simulator_process_is_killed() -> None:
    from simsync.localsim.child import ChildSimulator
    with ChildSimulator(["--bundle-size", "10", "--bundles", "4", "--workers", "2"]) as sim:
        assert sim.pid is not None
        workers = [c.pid for c in psutil.Process(sim.pid).children()]
        assert len(workers) == 2
        os.kill(sim.pid, signal.SIGKILL)
        assert wait_for(lambda: not any(_alive(p) for p in workers), 30)


def test_workers_refuse_tls_and_another_rpc_host() -> None:
    with pytest.raises(ValueError, match="workers"):
        LocalSimulator(workers=2, rpc_endpoint_host="localhost")
    with pytest.raises(ValueError, match="at least 1"):
        LocalSimulator(workers=0)


__all__: List[Any] = []
