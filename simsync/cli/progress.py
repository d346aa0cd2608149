"""Progress of ``simsync run`` on stderr: a tqdm bar on a terminal, plain periodic lines
otherwise (a log file or a pipe gets one readable line every ``interval`` seconds).
Reconnects are read from the control connections' ``ConnectionStatus.reconnects``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from typing import Any, Callable, ContextManager, Dict, Optional, TextIO, Tuple

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from simsync import ConnectionStatus, State


def _size(stream: TextIO) -> Tuple[int, int]:
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return 0, 0
    return size.columns, size.lines


#: tqdm's default line with a shorter right part: the slot rate and the postfix of
#: ``Progress._postfix`` (no ``key=value`` pairs), so a 100-column terminal keeps a bar.
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class Progress:
    """Slots done of the whole range, slots/s, events seen, reconnects (user thread)."""

    def __init__(self, start_slot: int, end_slot: int, interval: float = 2.0,
                 stream: Optional[TextIO] = None, label: str = "simsync run") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = end_slot - start_slot + 1
        self.interval = interval
        self.label = label
        self.events = 0
        self._ranges: Dict[str, Tuple[int, int]] = {}
        self._done: Dict[str, int] = {}
        self._counters: list[Callable[[], ConnectionStatus]] = []
        self._started = time.monotonic()
        self._next_line = self._started
        self._shown = 0
        self._bar: Optional[tqdm[Any]] = None
        if getattr(self.stream, "isatty", lambda: False)():
            sized = min(_size(self.stream)) > 0     # a fresh pty may report 0 x 0
            self._bar = tqdm(total=self.total, unit="slot", desc=label, file=self.stream,
                             dynamic_ncols=sized, ncols=None if sized else 100,
                             nrows=None if sized else 24, leave=True, bar_format=BAR_FORMAT)

    @property
    def reconnects(self) -> int:
        return sum(status().reconnects for status in self._counters)

    @property
    def done(self) -> int:
        return sum(self._done.values())

    def watch(self, status: Callable[[], ConnectionStatus]) -> None:
        """Count the reconnects of a control connection (``lambda: session.status``)."""
        self._counters.append(status)

    def track(self, key: str, start_slot: int, end_slot: int) -> None:
        """A (sub-)session covering ``start_slot..end_slot``."""
        self._ranges[key] = (start_slot, end_slot)
        self._done.setdefault(key, 0)

    def slot(self, key: str, slot: int) -> None:
        start, end = self._ranges[key]
        self._done[key] = max(self._done[key], min(slot, end) - start + 1)

    def finished(self, key: str) -> None:
        start, end = self._ranges[key]
        self._done[key] = end - start + 1

    def event(self) -> None:
        self.events += 1

    def tick(self, force: bool = False) -> None:
        """Refresh what is shown (call after events and while waiting)."""
        now = time.monotonic()
        if self._bar is not None:
            self._bar.update(self.done - self._shown)
            self._shown = self.done
            columns = (self._bar.ncols or 99) + 1       # tqdm keeps the last column free
            self._bar.set_postfix_str(self._postfix(columns), refresh=force)
            return
        if force or now >= self._next_line:
            self._next_line = now + self.interval
            percent = 100.0 * self.done / self.total if self.total else 100.0
            rate = self.events / max(now - self._started, 1e-6)
            print(f"{self.label}: {self.done}/{self.total} slots ({percent:.0f}%), "
                  f"{self.events} events, {rate:.1f} events/s, {self.reconnects} reconnects, "
                  f"{now - self._started:.1f}s", file=self.stream, flush=True)

    def _postfix(self, columns: int) -> str:
        """Events and reconnects, short enough to leave the bar about a sixth of the line:
        below 100 columns the reconnect count shows only once there is one."""
        reconnects = self.reconnects
        if columns >= 100 or reconnects:
            return f"{self.events:,} events, {reconnects} reconnects"
        return f"{self.events:,} events"

    def logging(self) -> ContextManager[Any]:
        """While the bar shows, route console log lines through it (so they do not tear it)."""
        return logging_redirect_tqdm() if self._bar is not None else contextlib.nullcontext()

    def close(self) -> None:
        self.tick(force=True)
        if self._bar is not None:
            self._bar.close()


class ConnectStatusLine(logging.Handler):
    """While the first connection is retried, one updating line on a terminal instead of a
    log line per attempt: it shows the latest ``connecting to … failed (attempt N) …`` record
    of ``simsync.transport`` (the records that carry ``simsync_connect_retry``) and is erased
    when a connection comes up or fails for good, or by ``end()``. Runs on whichever thread
    logs (a connection's reader thread); writes never block on anything but ``stream``."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(logging.INFO)
        self.stream = stream
        self._shown = False
        self._lock_line = threading.Lock()

    @staticmethod
    def owns(record: logging.LogRecord) -> bool:
        """The records this line shows, which the ordinary log handler leaves out."""
        return hasattr(record, "simsync_connect_retry")

    def emit(self, record: logging.LogRecord) -> None:
        if self.owns(record):
            self._write(f"\r\x1b[Ksimsync: {self.format(record)}", shown=True)
        elif getattr(record, "simsync_state", None) in (State.UP, State.FAILED, State.CLOSED):
            self.end()

    def end(self) -> None:
        """Erase the line if it is shown (before other output takes the terminal)."""
        if self._shown:
            self._write("\r\x1b[K", shown=False)

    def _write(self, text: str, shown: bool) -> None:
        with self._lock_line:
            if not shown and not self._shown:
                return
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):      # a closed terminal: nothing left to show
                pass
            self._shown = shown
