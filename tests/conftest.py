"""Suite-wide guards: every test must leave no thread, socket or child process behind."""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.leaks import leftovers, snapshot, wait_until

#: Grace period for threads and sockets that are already ending (closing is bounded).
SETTLE_SECS = 10.0


@pytest.fixture(autouse=True)
def nothing_left_running() -> Iterator[None]:
    """Fails a test that leaves a thread, a socket or a child process behind."""
    before = snapshot()
    yield
    wait_until(lambda: not leftovers(before), SETTLE_SECS)
    left = leftovers(before)
    assert not left, f"the test left these running: {left}"

