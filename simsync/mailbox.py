"""``Mailbox``: the one queue between a session's reader threads and the user's thread.

Readers put events; the user takes them in arrival order. Control events always enqueue;
data-plane events count against a limit and make their reader wait (never drop). The
consumer takes everything that is ready in one hand-off, which keeps the per-event cost low.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Deque, Optional

from simsync.errors import EventTimeout, SessionClosed, SlowConsumerError
from simsync.transport import SLICE


class Mailbox:
    """A FIFO of events with a failure slot; safe for many producers and consumers."""

    def __init__(self, data_limit: int, slow_consumer_timeout: float,
                 on_put: Optional[Callable[[], None]] = None) -> None:
        self._on_put = on_put
        self._items: Deque[Any] = collections.deque()
        self._ready: Deque[Any] = collections.deque()   # taken by the consumer, not yet read
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._drained = threading.Condition(self._lock)
        self._consumer = threading.Lock()
        self._data_limit = data_limit
        self._slow_timeout = slow_consumer_timeout
        self._data_in = 0        # data events put
        self._data_out = 0       # data events read by the user
        self._failure: Optional[BaseException] = None
        self._closed: Optional[str] = None

    # ------------------------------------------------------------------ producers

    def put(self, event: Any) -> None:
        """Enqueue a control event (any thread; never blocks on the user)."""
        with self._lock:
            self._items.append(event)
            self._arrived.notify()
        if self._on_put is not None:
            self._on_put()

    def put_data(self, event: Any, stopping: Callable[[], bool]) -> None:
        """Enqueue a data-plane event, waiting (sliced) while the user is ``data_limit``
        behind. Runs on a subscription reader; blocks at most ``slow_consumer_timeout``,
        then fails the mailbox with ``SlowConsumerError`` and raises it."""
        deadline = time.monotonic() + self._slow_timeout
        with self._lock:
            while self._data_in - self._data_out >= self._data_limit:
                if self._failure is not None or self._closed or stopping():
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    error = SlowConsumerError(
                        f"the consumer fell {self._data_limit} events behind for more than "
                        f"{self._slow_timeout:g}s (ClientConfig.max_buffered_events / "
                        f"slow_consumer_timeout)")
                    self._fail_locked(error)
                    raise error
                self._drained.wait(min(SLICE, remaining))
            self._data_in += 1
            self._items.append(_Data(event))
            self._arrived.notify()
        if self._on_put is not None:
            self._on_put()

    def fail(self, error: BaseException) -> None:
        """Publish the session's failure; the next ``get`` raises it (first failure wins)."""
        with self._lock:
            self._fail_locked(error)

    def close(self, reason: str) -> None:
        """No more events: waiters and later calls get ``SessionClosed(reason)``."""
        with self._lock:
            if self._closed is None:
                self._closed = reason
            self._arrived.notify_all()
            self._drained.notify_all()

    def _fail_locked(self, error: BaseException) -> None:
        if self._failure is None:
            self._failure = error
        self._arrived.notify_all()
        self._drained.notify_all()

    # ------------------------------------------------------------------ consumer

    def get(self, timeout: Optional[float] = None) -> Any:
        """The next event (user thread). Waits in slices so Ctrl-C gets through; raises the
        failure, ``SessionClosed`` once closed, or ``EventTimeout`` after ``timeout``."""
        with self._consumer:
            if self._failure is not None:
                raise self._failure
            if not self._ready:
                self._take(timeout)
            event = self._ready.popleft()
            if type(event) is _Data:
                self._data_out += 1
                return event.event
            return event

    def _take(self, timeout: Optional[float]) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._drained.notify_all()      # everything handed over so far has been read
            while not self._items:
                if self._failure is not None:
                    raise self._failure
                if self._closed is not None:
                    raise SessionClosed(self._closed)
                remaining = SLICE if deadline is None else min(SLICE, deadline - time.monotonic())
                if remaining <= 0:
                    raise EventTimeout(f"no event within {timeout:g}s")
                self._arrived.wait(remaining)
            self._ready, self._items = self._items, self._ready
            self._drained.notify_all()

    @property
    def buffered(self) -> int:
        """Events waiting to be read (control and data)."""
        return len(self._items) + len(self._ready)

    @property
    def buffered_data(self) -> int:
        """Data-plane events waiting to be read (never above the limit)."""
        return self._data_in - self._data_out


class _Data:
    """Marks a data-plane event inside the queue (it counts against the limit)."""

    __slots__ = ("event",)

    def __init__(self, event: Any) -> None:
        self.event = event
