"""``Connection`` on real sockets: a crashing link fails loudly, transitions are logged with
attempt, delay and reason, and ``close()`` leaves nothing behind."""
from __future__ import annotations

import logging
from typing import Any, Iterator, Union

import pytest

import simsync
from simsync.protocol import CreateBacktestSession, CreateSessionParams, encode_request
from simsync.transport import Channel, Connection, Link, State
from tests.support import FAST, START, Records, sim

pytestmark = pytest.mark.timeout(60)
__all__ = ["sim"]


class CrashingLink(Link):
    """Creates a session, then fails inside the reader on the first routed frame."""

    name = "crashing"

    def __init__(self, url: str) -> None:
        self._url = url

    def url(self) -> str:
        return self._url

    def handshake(self, channel: Channel, attempt: int) -> None:
        channel.send(encode_request(CreateBacktestSession(CreateSessionParams(START, START))))

    def on_frame(self, data: Union[str, bytes]) -> None:
        raise RuntimeError("bug in a link")


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("simsync")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


def test_a_crash_in_the_reader_fails_the_connection_with_its_reason(sim: Any) -> None:
    connection = Connection(CrashingLink(sim.url), FAST, "crash")
    connection.start()
    try:
        status = connection.status.wait_for({State.FAILED}, 10)
        assert status.state is State.FAILED
        assert "internal error" in (status.reason or "")
        assert "bug in a link" in (status.reason or "")
        assert isinstance(connection.failure, RuntimeError)
    finally:
        assert connection.close(5)


def test_transitions_are_logged_with_attempt_delay_and_reason(sim: Any, records: Records) -> None:
    sim.faults.refuse_connects(2)
    with simsync.Client(sim.url, config=FAST).start_session(start_slot=START, end_slot=START):
        pass
    lines = [r.getMessage() for r in records.records
             if r.name == "simsync.transport" and r.levelno == logging.INFO]
    reconnecting = [line for line in lines if "RECONNECTING" in line]
    assert len(reconnecting) == 2
    assert all("503" in line and "(attempt" in line and "s" in line.split(" in ")[-1]
               for line in reconnecting)
    assert any("UP (attempt 3)" in line for line in lines)
