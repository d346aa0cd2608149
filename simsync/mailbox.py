"""``Mailbox``: the one queue between a session's reader threads and the user's thread(s).

Readers put events; the user takes them in arrival order. A failure travels *in band*: it is
queued behind every event that arrived before it, raised once when the consumer reaches it,
and followed by ``SessionClosed`` for every later call. Control events always enqueue;
data-plane events count against a limit and make their reader wait (never drop).

The queue is a ``queue.SimpleQueue``: its ``put`` is reentrant (safe from a signal handler or
``__del__``), and each consumer's ``get`` waits on its own, so one thread's timeout holds
whatever another thread waits for.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Optional

from simsync.errors import EventTimeout, SessionClosed, SlowConsumerError
from simsync.transport import SLICE


class _Data:
    """Marks a data-plane event inside the queue (it counts against the limit)."""

    __slots__ = ("event",)

    def __init__(self, event: Any) -> None:
        self.event = event


class _End:
    """The end of the stream: a failure to raise once, then ``SessionClosed(reason)``."""

    __slots__ = ("error", "reason")

    def __init__(self, error: Optional[BaseException], reason: str) -> None:
        self.error = error
        self.reason = reason


class Mailbox:
    """A FIFO of events ending in at most one failure or close; many producers, and any
    number of consumer threads (each event goes to exactly one of them)."""

    def __init__(self, data_limit: int, slow_consumer_timeout: float,
                 on_put: Optional[Callable[[], None]] = None) -> None:
        self._on_put = on_put
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._space = threading.Condition(threading.Lock())    # producers wait for room
        self._end_lock = threading.RLock()     # reentrant: close() from a signal handler
        self._data_limit = data_limit
        self._slow_timeout = slow_consumer_timeout
        self._data_in = 0        # data events put
        self._data_out = 0       # data events read by the user
        self._ended: Optional[_End] = None     # set once, when the end is queued
        self._reached: Optional[_End] = None   # set once a consumer reached it

    def set_on_put(self, on_put: Callable[[], None]) -> None:
        """Call ``on_put`` after every later put (set once, before consumers start)."""
        self._on_put = on_put

    # ------------------------------------------------------------------ producers

    def put(self, event: Any) -> None:
        """Enqueue a control event (any thread; never blocks). Ignored after the end."""
        if self._ended is None:
            self._queue.put(event)
            if self._on_put is not None:
                self._on_put()

    def put_data(self, event: Any, stopping: Callable[[], bool]) -> None:
        """Enqueue a data-plane event, waiting (sliced) while the user is ``data_limit``
        behind. Runs on a subscription reader; blocks at most ``slow_consumer_timeout``,
        then fails the mailbox with ``SlowConsumerError`` (in band) and raises it."""
        deadline = time.monotonic() + self._slow_timeout
        with self._space:
            while self._data_in - self._data_out >= self._data_limit:
                if self._ended is not None or stopping():
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    error = SlowConsumerError(
                        f"the consumer fell {self._data_limit} events behind for more than "
                        f"{self._slow_timeout:g}s (ClientConfig.max_buffered_events / "
                        f"slow_consumer_timeout)")
                    self.fail(error)
                    raise error
                self._space.wait(min(SLICE, remaining))
            if self._ended is not None:
                return
            self._data_in += 1
        self._queue.put(_Data(event))
        if self._on_put is not None:
            self._on_put()

    def fail(self, error: BaseException) -> bool:
        """Queue the session's failure behind every event put so far (any thread; the first
        end wins). Returns whether this call ended the stream."""
        return self._end(_End(error, f"the session failed: {error}"))

    def close(self, reason: str) -> None:
        """End the stream without error: waiters and later calls get ``SessionClosed``.
        Events still queued are not delivered (``get`` checks ``closed`` first)."""
        if self._end(_End(None, reason)):
            self._reached = self._ended

    def _end(self, end: _End) -> bool:
        # never takes ``_space``: the consumer may hold it when a signal handler closes;
        # producers waiting for room see ``_ended`` within one slice
        with self._end_lock:
            if self._ended is not None:
                return False
            self._ended = end
        self._queue.put(end)
        if self._on_put is not None:
            self._on_put()
        return True

    # ------------------------------------------------------------------ consumers

    def get(self, timeout: Optional[float] = None) -> Any:
        """The next event (any user thread). Waits in slices so Ctrl-C gets through; raises
        the failure once it is reached, ``SessionClosed`` after it or after ``close``, or
        ``EventTimeout`` after ``timeout`` seconds (``None``: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            reached = self._reached
            if reached is not None:
                raise SessionClosed(reached.reason)
            wait = SLICE if deadline is None else min(SLICE, deadline - time.monotonic())
            try:
                item = self._queue.get(timeout=max(0.0, wait)) if wait > 0 \
                    else self._queue.get_nowait()
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise EventTimeout(f"no event within {timeout:g}s") from None
                continue
            kind = type(item)                   # exact types: isinstance is slower
            if kind is _Data:
                self._read_data()
                return item.event
            if kind is _End:
                first = self._reached is None
                self._reached = item
                self._queue.put(item)           # wake every other consumer too
                if first and item.error is not None:
                    raise item.error
                raise SessionClosed(item.reason)
            return item

    def _read_data(self) -> None:
        with self._space:
            self._data_out += 1
            if self._data_in - self._data_out == self._data_limit - 1:
                self._space.notify_all()

    @property
    def ended(self) -> bool:
        """Whether a failure or close has been queued (nothing more will be accepted)."""
        return self._ended is not None

    @property
    def buffered(self) -> int:
        """Items waiting to be read (approximate while producers run)."""
        return self._queue.qsize()

    @property
    def buffered_data(self) -> int:
        """Data-plane events waiting to be read (never above the limit)."""
        return self._data_in - self._data_out
