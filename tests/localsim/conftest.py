"""Fixtures for the local simulator's tests: simulators that cannot leak, plain wire clients."""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional

import psutil
import pytest

from simsync.localsim import LocalSimulator
from simsync.localsim.testing import Control, PubSub, Rpc, wait_for


def _listening(port: int) -> bool:
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
               for c in psutil.Process().net_connections(kind="tcp"))


def _sim_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("simsync-localsim")]


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """After each test: no simulator thread and no listening socket of a simulator is left."""
    before = set(_sim_threads())
    yield
    wait_for(lambda: set(_sim_threads()) <= before, 5.0, "simulator threads to end")


@pytest.fixture
def make_sim() -> Iterator[Callable[..., LocalSimulator]]:
    """Factory: started simulators, stopped (and checked for a closed port) after the test."""
    sims: List[LocalSimulator] = []

    def make(**kwargs: Any) -> LocalSimulator:
        sim = LocalSimulator(**kwargs).start()
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        sim.stop()
        assert not _listening(sim.port), f"port {sim.port} still listening"


@pytest.fixture
def sim(make_sim: Callable[..., LocalSimulator]) -> LocalSimulator:
    return make_sim()


@pytest.fixture
def clients() -> Iterator[Dict[str, Any]]:
    """Factories for wire clients that are closed after the test."""
    opened: List[Any] = []

    def control(sim: LocalSimulator, api_key: Optional[str] = None) -> Control:
        c = Control(sim.url, api_key)
        opened.append(c)
        return c

    def pubsub(sim: LocalSimulator, session_id: str) -> PubSub:
        p = PubSub(f"ws://127.0.0.1:{sim.port}/backtest/{session_id}")
        opened.append(p)
        return p

    def rpc(sim: LocalSimulator, session_id: str) -> Rpc:
        r = Rpc(sim.http_url, session_id)
        opened.append(r)
        return r

    yield {"control": control, "pubsub": pubsub, "rpc": rpc}
    for item in opened:
        with contextlib.suppress(Exception):
            item.close()
