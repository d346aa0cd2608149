"""Subscription links: one PubSub connection per subscription, re-subscribed with
``replayFromSlot`` after a drop, replays dropped, ended for good by ``subscriptionComplete``."""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Set, Union

from simsync import urls
from simsync.config import ClientConfig
from simsync.errors import ProtocolError
from simsync.protocol import (
    AccountDiff,
    Notification,
    Subscribe,
    SubscriptionAck,
    SubscriptionComplete,
    SubscriptionRefused,
    Transaction,
    decode_response,
    encode_request,
)
from simsync.transport import SLICE, Channel, Fatal, Link, LinkDone, Transient

log = logging.getLogger(__name__)

#: The subscription kinds simsync drives (PROTOCOL.md §10): the config each sends, and
#: whether a re-subscribe asks for a replay (``slotSubscribe`` does not: a slot stream
#: resumes with the slots after the reconnect).
KINDS: Dict[str, Dict[str, Any]] = {
    "transactionSubscribe": {"commitment": "confirmed"},
    "accountDiffSubscribe": {},
    "logsSubscribe": {"commitment": "confirmed"},
    "accountSubscribe": {"commitment": "confirmed", "encoding": "base64"},
    "programSubscribe": {"commitment": "confirmed", "encoding": "base64"},
    "signatureSubscribe": {"commitment": "confirmed"},
    "slotSubscribe": {},
}
NO_REPLAY = frozenset({"slotSubscribe"})
#: Kinds whose subscription ends after its first notification (Solana's auto-unsubscribe).
ONE_SHOT = frozenset({"signatureSubscribe"})
_DATA = (Transaction, AccountDiff, Notification)


@dataclass(frozen=True)
class SubscriptionSpec:
    """What to subscribe to: the ``<kind>Subscribe`` method, its first parameter (a filter
    object, a base58 pubkey or signature, or ``None``) and extra config. JSON-able."""

    method: str
    filter: Any = None
    config: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in KINDS:
            raise ValueError(f"unknown subscription kind {self.method!r}; one of "
                             f"{sorted(KINDS)}")

    def request(self, request_id: int, replay_from: Optional[int],
                compression: Optional[str] = None) -> Subscribe:
        config = {**KINDS[self.method], **self.config}
        if replay_from is not None and self.method not in NO_REPLAY:
            config["replayFromSlot"] = replay_from
        if compression is not None:
            config["compression"] = compression
        return Subscribe(request_id, self.method, self.filter, config)


def _decompressor() -> Any:
    """A fresh streaming zstd decompression context (one per connection)."""
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj()


class ReplayFilter:
    """Drops notifications already delivered before a reconnect. The server replays from
    the last delivered slot inclusive, in slot order, so only that slot's keys are kept.

    ``since`` is the slot the session stood at when the subscription was opened: a
    subscription lost before its first notification replays from there, not from "now"
    (which would silently skip what was executed while it was down)."""

    def __init__(self, since: int, keys: Iterable[Any] = ()) -> None:
        self.last_slot = since
        self._keys: Set[Any] = set(keys)

    def fresh(self, slot: int, key: Any) -> bool:
        """Whether a notification is new (and remember it). Reader thread only."""
        if slot < self.last_slot or (slot == self.last_slot and key in self._keys):
            return False
        if slot > self.last_slot:
            self._keys.clear()
        self.last_slot = slot
        self._keys.add(key)
        return True


class ReconnectCoordinator:
    """Shared by the subscriptions of a parallel batch, or of independent sessions given
    the same one (``Client.start_session(coordinator=...)``): a dropped subscription makes
    ``quick_attempts`` attempts on its own, then waits until no sibling holds a turn and
    reconnects (and replays) in its own turn, so a crowd reconnects one at a time.
    ``turns_taken``/``most_in_turn`` count what happened (for tests and logs)."""

    def __init__(self, quick_attempts: int = 3) -> None:
        self.quick_attempts = quick_attempts
        self._turn = threading.Lock()
        self._count_lock = threading.Lock()
        self._in_turn = 0
        self.most_in_turn = 0          # the most attempts that ever held a turn at once
        self.turns_taken = 0

    @contextlib.contextmanager
    def turn(self, attempt: int, stopping: Callable[[], bool]) -> Iterator[None]:
        """Reader thread: free for quick attempts, then one at a time (sliced wait)."""
        if attempt <= self.quick_attempts:
            yield
            return
        while not self._turn.acquire(timeout=SLICE):
            if stopping():
                raise LinkDone()
        with self._count_lock:
            self._in_turn += 1
            self.turns_taken += 1
            self.most_in_turn = max(self.most_in_turn, self._in_turn)
        try:
            yield
        finally:
            with self._count_lock:
                self._in_turn -= 1
            self._turn.release()


class SubscriptionLink(Link):
    """One subscription of one session. ``deliver`` hands an event to the session (it may
    block while the user is behind); ``finished`` is called once after end-of-stream."""

    name = "pubsub"

    def __init__(self, rpc_url: str, spec: SubscriptionSpec, config: ClientConfig,
                 deliver: Callable[[Any], None], finished: Callable[[], None],
                 since_slot: int, executed_slot: Callable[[], int],
                 coordinator: Optional[ReconnectCoordinator] = None,
                 resume_keys: Optional[Iterable[Any]] = None,
                 server_slot: Optional[Callable[[], Optional[int]]] = None) -> None:
        """``executed_slot``: the last slot the control link routed; ``server_slot``: where
        the server stands now (the session's JSON-RPC ``getSlot``; ``None`` when it cannot
        tell), asked after each replaying subscribe is acknowledged."""
        self.spec = spec
        self.kind = spec.method
        self._url = urls.pubsub_url(rpc_url)
        self._config = config
        self._deliver = deliver
        self._finished = finished
        self._replay = ReplayFilter(since_slot, resume_keys or ())
        self._executed_slot = executed_slot
        self._server_slot = server_slot
        self.last_frame_at = time.monotonic()   # the server's last word (drain silence)
        # resumed from a cursor: the very first subscribe already replays
        self._subscribed_once = resume_keys is not None
        self._subscription: Optional[int] = None
        self._request_id = 0
        self._waiting_on_user = False
        self._inflate: Any = None       # this connection's zstd context, when compressed
        self._coordinator = coordinator
        self.complete = False
        self.delivered = 0

    def __repr__(self) -> str:
        return f"SubscriptionLink({self.kind}, {self.spec.filter!r})"

    def url(self) -> str:
        return self._url

    @contextlib.contextmanager
    def attempt_turn(self, attempt: int, stopping: Callable[[], bool]) -> Iterator[None]:
        if self._coordinator is None:
            yield
        else:
            with self._coordinator.turn(attempt, stopping):
                yield

    def holding_back(self) -> bool:
        return self._waiting_on_user

    def handshake(self, channel: Channel, attempt: int) -> None:
        """Subscribe (again) and wait for the ack (reader thread; bounded per frame)."""
        replay_from = None
        if self._subscribed_once and self.kind not in NO_REPLAY:
            self._check_replay_reach(self._executed_slot())
            replay_from = self._replay.last_slot
        self._request_id += 1
        compression = self._config.pubsub_compression
        self._inflate = _decompressor() if compression == "zstd" else None   # per connection
        channel.send(encode_request(self.spec.request(self._request_id, replay_from,
                                                      compression)))
        while True:
            event = self._decode(channel.recv(self._config.handshake_timeout))
            if isinstance(event, SubscriptionAck) and event.id == self._request_id:
                self._subscription = event.subscription
                self._subscribed_once = True
                if replay_from is not None and self._server_slot is not None:
                    # the control link's last slot may be stale (an outage took it down
                    # too, or another process drove the session): judge the replay against
                    # where the server stands; it stood there or before at the subscribe
                    server = self._server_slot()
                    if server is not None:
                        self._check_replay_reach(max(server, self._executed_slot()))
                self.last_frame_at = time.monotonic()
                return
            if isinstance(event, SubscriptionRefused):
                raise Fatal(f"the server refused {self.kind}: {event.message}")
            if event is not None:
                self._route(event)

    def _check_replay_reach(self, executed: int) -> None:
        """Fail (never a silent gap) when the server's replay window cannot reach back to
        the last slot this subscription delivered: the session has executed (up to
        ``executed``) further than ``ClientConfig.replay_window_slots`` past it while the
        subscription was down."""
        since = self._replay.last_slot
        oldest_kept = executed - self._config.replay_window_slots + 1
        if since < oldest_kept:
            raise Fatal(f"{self.kind} was down too long: the server replays only slots "
                        f"{oldest_kept}..{executed}, so notifications of slots "
                        f"{since}..{oldest_kept - 1} may be lost")

    def on_frame(self, data: Union[str, bytes]) -> None:
        """Route one notification (reader thread)."""
        self.last_frame_at = time.monotonic()
        event = self._decode(data)
        if event is not None:
            self._route(event)

    def _decode(self, data: Union[str, bytes]) -> Any:
        if self._inflate is not None and isinstance(data, bytes):
            try:
                data = self._inflate.decompress(data)
            except Exception as exc:        # zstandard.ZstdError: the stream is broken
                raise Transient(f"corrupt zstd stream on {self.kind}: {exc}") from exc
        try:
            return decode_response(data)[1]
        except ProtocolError as exc:
            log.warning("simsync %s: ignoring a malformed frame: %s", self.kind, exc)
            return None

    def _route(self, event: Any) -> None:
        if isinstance(event, _DATA):
            if event.subscription != self._subscription:
                return
            slot = event.slot
            if slot is None or self._replay.fresh(slot, event.dedup_key):
                self._waiting_on_user = True
                try:
                    self._deliver(event)
                finally:
                    # time parked on the user is not the server's silence: the clock
                    # restarts now, before the flag drops (``Inbox.check_drain`` reads
                    # the flag first)
                    self.last_frame_at = time.monotonic()
                    self._waiting_on_user = False
                self.delivered += 1
            if self.kind in ONE_SHOT:
                self._end()
        elif type(event) is SubscriptionComplete and event.subscription == self._subscription:
            self._end()

    def _end(self) -> None:
        self.complete = True
        self._finished()
        raise LinkDone()
