"""Shared test helpers: a fast client config and a local simulator per test."""
from __future__ import annotations

import logging
import socket
from typing import Any, Callable, Iterator, List, Optional

import pytest

import simsync
from simsync.localsim import LocalSimulator
from simsync.localsim.testing import wait_for as wait_for  # re-exported for the tests

START = 400_000_000

#: Small timeouts so faults are found quickly; nothing here depends on machine speed
#: except the keepalive window, which is generous compared to a loaded machine's jitter.
FAST = simsync.ClientConfig(connect_timeout=5.0, handshake_timeout=10.0, ping_interval=0.2,
                            dead_after=1.5, backoff_initial=0.01, backoff_max=0.1,
                            reconnect_budget=20.0, stable_after=60.0, drain_timeout=10.0,
                            close_timeout=5.0, rpc_timeout=10.0)


@pytest.fixture
def sim() -> Iterator[LocalSimulator]:
    with LocalSimulator(bundle_size=100, bundles=4) as server:
        yield server


def client(server: LocalSimulator, config: simsync.ClientConfig = FAST,
           api_key: Optional[str] = None) -> simsync.Client:
    return simsync.Client(server.url, api_key=api_key, config=config)


def drive(session: simsync.Session, timeout: float = 30.0,
          on_event: Optional[Callable[[Any], None]] = None) -> List[Any]:
    """Step one block at every pause until ``Completed``; returns every event seen."""
    seen: List[Any] = []
    for event in iter(lambda: session.next_event(timeout), None):
        seen.append(event)
        if on_event is not None:
            on_event(event)
        if isinstance(event, simsync.Completed):
            return seen
        if isinstance(event, (simsync.ReadyForContinue, simsync.Paused)):
            session.send_continue(timeout=timeout)
    raise AssertionError("unreachable")


def slots(events: List[Any]) -> List[int]:
    return [e.slot for e in events if isinstance(e, simsync.Slot)]


class Records(logging.Handler):
    """Collects log records of every level from every logger (for secret checks)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(self.format(r) for r in self.records)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
