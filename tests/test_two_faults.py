"""Two faults at once (issue 13): a second drop, FIN or RST, at every frame index of the
recovery from a first drop, stall, or drop of a step in flight. Each run must deliver every
event exactly once, and the server must execute each step exactly once."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, List, Optional, Tuple

import pytest

import simsync
from simsync.localsim import Fault, LocalSimulator
from tests.support import FAST, START, client, drive

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

END = START + 19
#: The recovery connection's frames: sessionAttached, the replay, success, a re-announced
#: pause, then the session's own frames; 0 fires as soon as it opens.
RECOVERY_INDEXES = range(0, 9)


def run_once(server: LocalSimulator, config: simsync.ClientConfig) -> List[Any]:
    with client(server, config).start_session(start_slot=START, end_slot=END,
                                              disconnect_timeout_secs=60) as session:
        return drive(session)


def executed_once(server: LocalSimulator) -> None:
    """The server executed each historical transaction of each session once."""
    for sid in server.session_ids():
        signatures = [tx.signature for tx in server.executed(sid)]
        assert len(signatures) == len(set(signatures)), f"a step ran twice in {sid}"


def sweep(first: Fault, how: str, config: simsync.ClientConfig,
          indexes: range = RECOVERY_INDEXES) -> List[Tuple[str, int]]:
    """For each index: ``first`` on the next control connection, then a ``how`` drop after
    that index on the connection after it (the first recovery). Returns misfires."""
    missed: List[Tuple[str, int]] = []
    with LocalSimulator(bundle_size=100, bundles=4) as server:
        clean = run_once(server, config)
        for index in indexes:
            server.faults.clear()
            base = server.faults.connections("control") + 1
            server.faults.add(Fault(first.action, after_frames=first.after_frames,
                                    at=first.at, on_connection=base, how=first.how))
            second = server.faults.add(Fault("drop", how=how, after_frames=index,
                                             on_connection=base + 1))
            events = run_once(server, config)
            assert events == clean, (f"{first.action} {first.after_frames or first.at}, "
                                     f"then {how} after frame {index} of the recovery")
            executed_once(server)
            if not second.fired:
                missed.append((how, index))
    return missed


def in_parallel(jobs: List[Tuple[Fault, str, simsync.ClientConfig]]) -> None:
    with ThreadPoolExecutor(4) as pool:
        missed = [m for result in pool.map(lambda job: sweep(*job), jobs) for m in result]
    # the late indexes may fall after the session ended; most must have fired
    assert len(missed) <= len(jobs) * 2, missed


def first_drops(how: str) -> List[Fault]:
    return [Fault("drop", after_frames=index, how=how) for index in (1, 7, 15, 40, 80)]


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_a_drop_during_the_recovery_of_a_drop(how: str) -> None:
    in_parallel([(first, second, FAST) for first in first_drops(how)
                 for second in ("fin", "rst")])


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_a_drop_during_the_recovery_of_a_step_lost_in_flight(how: str) -> None:
    """The step is lost in the first drop and must be resent once, however many
    re-attaches the recovery takes."""
    first = Fault("drop", at="after_continue_received", how=how)
    in_parallel([(first, second, FAST) for second in ("fin", "rst")])


def test_a_drop_during_the_recovery_of_a_half_open_stall() -> None:
    config = FAST.replace(ping_interval=0.1, dead_after=0.6)
    stalls: List[Optional[int]] = [3, 30, 70]
    in_parallel([(Fault("stall", after_frames=index), second, config)
                 for index in stalls for second in ("fin", "rst")])
