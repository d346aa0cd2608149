"""Suite-wide guards: every test must leave no thread, socket or child process behind; no test
may raise this process's (or a waited-for child's) peak RSS by more than
``RSS_GROWTH_LIMIT_BYTES``, and the test that first takes it past ``RSS_LIMIT_BYTES`` fails.
The terminal summary lists the tests that raised the peak most and the files that kept most."""
from __future__ import annotations

import collections
import resource
from typing import DefaultDict, Iterator, List, Set, Tuple

import psutil
import pytest

from tests.leaks import leftovers, snapshot, wait_until

#: Grace period for threads and sockets that are already ending (closing is bounded).
SETTLE_SECS = 10.0

#: The peak resident set size of the test process (or any child it waited for).
RSS_LIMIT_BYTES = 2 * 1024 ** 3
#: How much one test may raise that peak (memory it keeps is charged to later tests too,
#: so the absolute limit fails only the first test that crosses it: no cascade).
RSS_GROWTH_LIMIT_BYTES = 512 * 1024 ** 2
_CROSSED: Set[str] = set()

#: ``(growth of the peak in bytes, peak, "self"/"children", test id)`` for each test that
#: raised a peak.
_RSS_PEAKS: List[Tuple[int, int, str, str]] = []
#: How much each test file left this process's current RSS grown by (bytes, summed).
_RSS_KEPT: DefaultDict[str, int] = collections.defaultdict(int)


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
    current = psutil.Process().memory_info().rss
    yield
    _RSS_KEPT[request.node.nodeid.split("::")[0]] += psutil.Process().memory_info().rss - current
    own, kids = _max_rss()
    for peak, before, who in ((own, own_before, "self"), (kids, kids_before, "children")):
        if peak > before:
            _RSS_PEAKS.append((peak - before, peak, who, request.node.nodeid))
            mib = 1024 ** 2
            if who == "children":   # a forked child's peak counts the pages it shares with
                continue            # this process: reported above, not asserted
            assert peak - before <= RSS_GROWTH_LIMIT_BYTES, (
                f"the test raised the peak RSS ({who}) by {(peak - before) / mib:.0f} MiB "
                f"(to {peak / mib:.0f} MiB); at most {RSS_GROWTH_LIMIT_BYTES / mib:.0f} MiB")
            if peak > RSS_LIMIT_BYTES and who not in _CROSSED:
                _CROSSED.add(who)
                raise AssertionError(f"peak RSS ({who}) {peak / mib:.0f} MiB passed "
                                     f"{RSS_LIMIT_BYTES / mib:.0f} MiB in this test")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Lists the tests that raised the suite's peak RSS the most, and the test files that
    left this process's RSS grown the most (memory a test keeps after it ends)."""
    if not _RSS_PEAKS:
        return
    mib = 1024 ** 2
    terminalreporter.section("peak RSS raised by (growth, new peak)")
    for growth, peak, who, nodeid in sorted(_RSS_PEAKS, reverse=True)[:10]:
        terminalreporter.write_line(f"{growth / mib:+8.0f} MiB {peak / mib:8.0f} MiB  {who:8}  "
                                    f"{nodeid}")
    terminalreporter.section("RSS kept after the tests of")
    for path, kept in sorted(_RSS_KEPT.items(), key=lambda item: -item[1])[:10]:
        terminalreporter.write_line(f"{kept / mib:+8.0f} MiB  {path}")
