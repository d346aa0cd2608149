"""``Mailbox``: the one queue between a session's reader threads and the user's thread(s).

Readers put events; the user takes them in arrival order. A failure travels *in band*: it is
queued behind every event that arrived before it, raised once when the consumer reaches it,
and followed by ``SessionClosed`` for every later call. Control events always enqueue;
data-plane events count against a limit and make their reader wait (never drop).

The events live in a ``collections.deque``; waiting is on ``queue.SimpleQueue`` doorbells
(one for consumers, one for producers waiting for room). Both are reentrant (safe from a
signal handler or ``__del__``), and a doorbell ring lost to an interrupt costs at most one
wait slice, never an event.

Hand-over under interrupts (``KeyboardInterrupt`` raised by a signal handler at any
bytecode): a consumer *claims* the head with ``items[0]`` then ``del items[0]``, neither of
which is a call, so CPython runs no signal handler and switches no thread between them;
from then on the event is covered by ``give_back`` (the caller's ``except BaseException``
puts it back at the front), so an interrupted ``get`` leaves it for the next call.
"""
from __future__ import annotations

import collections
import queue
import threading
import time
from typing import Any, Callable, Deque, Optional

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
        self._items: Deque[Any] = collections.deque()
        self._bell: queue.SimpleQueue[None] = queue.SimpleQueue()    # consumers wait here
        self._room: queue.SimpleQueue[None] = queue.SimpleQueue()    # producers wait here
        self._room_lock = threading.Lock()      # producers only: one counts at a time
        self._waiting = 0        # consumers waiting on the doorbell
        self._room_waiting = 0   # producers waiting for room
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

    def _push(self, item: Any) -> None:
        self._items.append(item)
        if self._waiting:                      # read after the append: no wake-up is missed
            self._bell.put(None)
        if self._on_put is not None:
            self._on_put()

    def put(self, event: Any) -> None:
        """Enqueue a control event (any thread; never blocks). Ignored after the end."""
        if self._ended is None:
            self._push(event)

    def put_data(self, event: Any, stopping: Callable[[], bool]) -> None:
        """Enqueue a data-plane event, waiting (sliced) while the user is ``data_limit``
        behind. Runs on a subscription reader; blocks at most ``slow_consumer_timeout``,
        then fails the mailbox with ``SlowConsumerError`` (in band) and raises it."""
        deadline = None        # read the clock only once the limit makes it wait
        while True:
            with self._room_lock:              # held for the count only, never a wait
                if self._ended is not None:
                    return
                if self._data_in - self._data_out < self._data_limit:
                    self._data_in += 1
                    break
            if stopping():
                return
            if deadline is None:
                deadline = time.monotonic() + self._slow_timeout
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                error = SlowConsumerError(
                    f"the consumer fell {self._data_limit} events behind for more than "
                    f"{self._slow_timeout:g}s (ClientConfig.max_buffered_events / "
                    f"slow_consumer_timeout)")
                self.fail(error)
                raise error
            self._room_waiting += 1
            try:
                if self._data_in - self._data_out >= self._data_limit:
                    self._room.get(timeout=min(SLICE, remaining))
            except queue.Empty:
                pass
            finally:
                self._room_waiting -= 1
        self._push(_Data(event))

    def fail(self, error: BaseException) -> bool:
        """Queue the session's failure behind every event put so far (any thread; the first
        end wins). Returns whether this call ended the stream."""
        return self._end(_End(error, f"the session failed: {error}"))

    def close(self, reason: str) -> None:
        """End the stream without error: waiters and later calls get ``SessionClosed``.
        Events still queued are not delivered (``get`` checks ``closed`` first)."""
        if self._end(_End(None, reason)):
            self._reached = self._ended
            self._bell.put(None)                # a waiter passes it on when it reaches it

    def finish(self, reason: str) -> None:
        """End the stream without error *behind* what is queued (the session completed):
        every consumer that reaches it, waiting or later, gets ``SessionClosed(reason)``."""
        self._end(_End(None, reason))

    def _end(self, end: _End) -> bool:
        # never waits on a producer's lock: a signal handler may close while the consumer
        # runs; producers waiting for room see ``_ended`` within one slice
        with self._end_lock:
            if self._ended is not None:
                return False
            self._ended = end
        self._push(end)
        if self._room_waiting:
            self._room.put(None)
        return True

    # ------------------------------------------------------------------ consumers

    def get(self, timeout: Optional[float] = None) -> Any:
        """The next event (any user thread). Waits in slices so Ctrl-C gets through; raises
        the failure once it is reached, ``SessionClosed`` after it or after ``close``, or
        ``EventTimeout`` after ``timeout`` seconds (``None``: no limit).

        The event returned is the caller's: until the caller has handed it on, an
        exception (an interrupt) must ``give_back`` it."""
        deadline = None         # read the clock only once there is something to wait for
        items = self._items
        while True:
            reached = self._reached
            if reached is not None:
                raise SessionClosed(reached.reason)
            if not items:
                if timeout is None:
                    wait = SLICE
                else:
                    if deadline is None:
                        deadline = time.monotonic() + timeout
                    wait = min(SLICE, deadline - time.monotonic())
                if wait <= 0:
                    raise EventTimeout(f"no event within {timeout:g}s")
                self._waiting += 1
                try:
                    if not items:                  # checked after counting as waiting
                        self._bell.get(timeout=wait)
                except queue.Empty:
                    continue
                finally:
                    self._waiting -= 1
            if not items:
                continue
            # the claim: no call (so no signal handler, no thread switch) between these
            item = items[0]
            kind = item.__class__
            if kind is _End:                    # stays queued: every consumer reaches it
                self._bell.put(None)            # wake the next waiting consumer (a chain)
                first = self._reached is None
                self._reached = item
                if first and item.error is not None:
                    raise item.error
                raise SessionClosed(item.reason)
            del items[0]
            if kind is _Data:
                self._data_out += 1
                return item.event
            return item

    def give_back(self, event: Any, data: bool) -> None:
        """Put an event ``get`` returned back at the front (its consumer was interrupted
        before it could hand it on; ``data``: it came from ``put_data``). Any thread."""
        if data:
            self._data_out -= 1
            self._items.appendleft(_Data(event))
        else:
            self._items.appendleft(event)
        self._bell.put(None)
        if self._on_put is not None:
            self._on_put()

    def read(self, data: bool) -> None:
        """After a hand-over of a data-plane event (``data``): let a producer waiting for
        room go on. A ring lost to an interrupt costs the producer one wait slice."""
        if data and self._room_waiting:
            self._room.put(None)

    @property
    def ended(self) -> bool:
        """Whether a failure or close has been queued (nothing more will be accepted)."""
        return self._ended is not None

    @property
    def buffered(self) -> int:
        """Items waiting to be read (approximate while producers run)."""
        return len(self._items)

    @property
    def buffered_data(self) -> int:
        """Data-plane events waiting to be read (never above the limit)."""
        return self._data_in - self._data_out
