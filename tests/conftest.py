"""Suite-wide guards: every test must leave no thread, socket or child process behind, and no
test may grow this process (or a child it waited for) beyond ``RSS_LIMIT_BYTES``."""
from __future__ import annotations

import resource
from typing import Iterator, List, Tuple

import pytest

from tests.leaks import leftovers, snapshot, wait_until

#: Grace period for threads and sockets that are already ending (closing is bounded).
SETTLE_SECS = 10.0

#: The peak resident set size a test may reach (this process, or any child it waited for).
RSS_LIMIT_BYTES = 2 * 1024 ** 3

#: ``(peak RSS in bytes, "self"/"children", test id)`` for each test that raised a peak.
_RSS_PEAKS: List[Tuple[int, str, str]] = []


def _max_rss() -> Tuple[int, int]:
    """The peak RSS in bytes of this process and of its largest waited-for child (Linux
    reports ``ru_maxrss`` in KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return own, kids


@pytest.fixture(autouse=True)
def nothing_left_running() -> Iterator[None]:
    """Fails a test that leaves a thread, a socket or a child process behind."""
    before = snapshot()
    yield
    wait_until(lambda: not leftovers(before), SETTLE_SECS)
    left = leftovers(before)
    assert not left, f"the test left these running: {left}"


@pytest.fixture(autouse=True)
def rss_below_limit(request: pytest.FixtureRequest) -> Iterator[None]:
    """Records the tests that raise the peak RSS and fails one that passes the limit. The
    peaks are monotonic, so a test is only charged with a peak it raised itself."""
    own_before, kids_before = _max_rss()
    yield
    own, kids = _max_rss()
    for peak, before, who in ((own, own_before, "self"), (kids, kids_before, "children")):
        if peak > before:
            _RSS_PEAKS.append((peak, who, request.node.nodeid))
            assert peak <= RSS_LIMIT_BYTES, (
                f"peak RSS ({who}) {peak / 1024 ** 2:.0f} MiB above "
                f"{RSS_LIMIT_BYTES / 1024 ** 2:.0f} MiB")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Lists the tests that raised the suite's peak RSS (largest first)."""
    if not _RSS_PEAKS:
        return
    terminalreporter.section("peak RSS raised by")
    for peak, who, nodeid in sorted(_RSS_PEAKS, reverse=True)[:10]:
        terminalreporter.write_line(f"{peak / 1024 ** 2:8.0f} MiB  {who:8}  {nodeid}")
