"""``Session``: the blocking face of one backtest session — the mailbox, ``next_event``,
step gating, the helpers built on steps, and the close order."""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from typing import Any, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from simsync import urls
from simsync.config import ClientConfig
from simsync.control import ControlSide, SessionInfo
from simsync.errors import (
    ControlFailed,
    EventTimeout,
    ForkedSessionError,
    SessionClosed,
    SessionCreateError,
    SimsyncError,
    SlowConsumerError,
    SubscriptionFailed,
)
from simsync.mailbox import Mailbox
from simsync.programs import program_accounts
from simsync.protocol import (
    AccountData,
    Completed,
    Continue,
    ContinueParams,
    ContinueTo,
    CreateSessionParams,
    DiscoveryBatch,
    Event,
    Paused,
    ReadyForContinue,
    Request,
    Slot,
)
from simsync.rpc import SessionRpc, to_base64
from simsync.subscriptions import ReconnectCoordinator, SubscriptionLink
from simsync.transport import SLICE, Connection, ConnectionStatus, Fatal, State

log = logging.getLogger(__name__)

_labels = itertools.count(1)

AccountOverrides = Mapping[Any, Union[AccountData, Mapping[str, Any]]]
PAUSES = (ReadyForContinue, Paused)


def _account_overrides(accounts: Optional[AccountOverrides]) -> dict[str, AccountData]:
    """Check and normalise overrides (``simsync.overrides``): keys to base58 text, values to
    ``AccountData``; raises ``AccountOverrideError`` naming the field at fault."""
    from simsync.overrides import account_overrides

    return account_overrides(accounts)


class Session:
    """One backtest session. Create it with ``Client.start_session``; use it from the thread
    that drives it (``next_event`` may be called from one thread at a time)."""

    def __init__(self, control_url: str, create: CreateSessionParams,
                 config: ClientConfig) -> None:
        self._pid = os.getpid()
        self._config = config
        self._control_url = urls.control_url(control_url)
        self._create = create
        self._mailbox = Mailbox(config.max_buffered_events, config.slow_consumer_timeout)
        self._label = str(next(_labels))
        self._control: Optional[ControlSide] = None
        self._coordinator: Optional[ReconnectCoordinator] = None
        self._subscriptions: List[Tuple[SubscriptionLink, Connection]] = []
        self._drain_lock = threading.Lock()
        self._held_completed: Optional[Completed] = None   # waiting for the data plane
        self._last_data_at = time.monotonic()
        self._rpc: Optional[SessionRpc] = None
        self._finished: Optional[str] = None    # why no more events will come
        self._discovery: Optional[DiscoveryBatch] = None   # announced, not yet reached
        self._current_slot = create.start_slot            # the last slot announced
        self._closed = False

    # ------------------------------------------------------------------ start-up

    def _bind(self, control: ControlSide) -> None:
        """Attach the control side (built with this session's hooks) and start it: blocks
        until the session exists; raises ``SessionCreateError`` otherwise."""
        self._attach_control(control)
        control.start()
        try:
            self._check_rpc_host()
        except BaseException:
            self.close()
            raise

    def _attach_control(self, control: ControlSide) -> None:
        """Take ``control`` as this session's control side (any thread, once)."""
        self._control = control
        control.status.watch(self._on_status)

    @property
    def _side(self) -> ControlSide:
        if self._control is None:
            raise SimsyncError("the session has no control channel yet")
        return self._control

    def _check_rpc_host(self) -> None:
        """Refuse an untrusted ``rpc_endpoint`` unless the config allows it (user thread)."""
        rpc = urls.rpc_url(self._control_url, self.info.rpc_endpoint)
        problem = urls.rpc_endpoint_problem(self._control_url, rpc)
        if problem and not self._config.allow_foreign_rpc_host:
            raise SessionCreateError(f"{problem}; refusing it (set "
                                     "ClientConfig.allow_foreign_rpc_host=True to trust it)")

    def _on_status(self, status: ConnectionStatus) -> None:
        """Reader thread: a failed control connection fails the mailbox."""
        if status.state is State.FAILED:
            self._mailbox.fail(ControlFailed(f"the control connection failed: {status.reason}"))

    def _before_resume(self, timeout: float) -> None:
        """Control reader, during a re-attach: wait (bounded) until every open subscription
        is back, so the resumed session streams into live subscriptions."""
        deadline = time.monotonic() + timeout
        for connection in self._open_subscriptions():
            connection.status.wait_for({State.UP}, max(0.0, deadline - time.monotonic()))

    def _on_control_event(self, event: Any) -> None:
        """Control reader: note the slot; hold ``Completed`` back until every subscription
        has ended."""
        if type(event) is Slot:
            self._current_slot = event.slot
        elif type(event) is Completed and self._subscriptions:
            with self._drain_lock:
                self._held_completed = event
                self._last_data_at = time.monotonic()
            self._release_completed()
            return
        self._mailbox.put(event)

    def _release_completed(self) -> None:
        """Any reader: deliver the held ``Completed`` once no subscription is open."""
        with self._drain_lock:
            if self._held_completed is None or self._open_subscriptions():
                return
            event, self._held_completed = self._held_completed, None
        self._mailbox.put(event)

    def _open_subscriptions(self) -> List[Connection]:
        """Subscriptions still streaming: not at their end-of-stream, not failed or closed."""
        return [connection for link, connection in self._subscriptions
                if not link.complete and not connection.status.value.final]

    # ------------------------------------------------------------------ properties

    @property
    def info(self) -> SessionInfo:
        """The server's ``SessionInfo`` (session id, rpc endpoint, task id)."""
        return self._side.info

    @property
    def status(self) -> ConnectionStatus:
        """The control connection's current ``ConnectionStatus``."""
        return self._side.status.value

    @property
    def rpc(self) -> SessionRpc:
        """The session's JSON-RPC client (created on first use)."""
        self._check_process()
        if self._rpc is None:
            self._rpc = SessionRpc(urls.rpc_url(self._control_url, self.info.rpc_endpoint),
                                   self._config, ended=lambda: self._finished)
        return self._rpc

    def __repr__(self) -> str:
        try:
            return f"{type(self).__name__}(id={self.info.session_id!r}, status={self.status})"
        except (AssertionError, SimsyncError):
            return f"{type(self).__name__}(not created)"

    # ------------------------------------------------------------------ data plane

    def subscribe_transactions(self, program_ids: Iterable[Any]) -> None:
        """Stream every executed transaction that touches ``program_ids`` as ``Transaction``
        events (user thread; blocks until the server acknowledged, bounded by the
        handshake timeout and the reconnect budget). Subscribe before the first step."""
        self._subscribe("transactionSubscribe", program_ids)

    def subscribe_account_diffs(self, program_ids: Iterable[Any]) -> None:
        """Stream every account change made by ``program_ids`` as ``AccountDiff`` events."""
        self._subscribe("accountDiffSubscribe", program_ids)

    def _subscribe(self, kind: str, program_ids: Iterable[Any]) -> None:
        self._check_usable()
        ids = [str(p) for p in program_ids]
        if not ids:
            raise ValueError("subscribe needs at least one program id")
        link = SubscriptionLink(self.rpc.url, kind, ids, self._config, self._deliver_data,
                                self._release_completed, self._current_slot,
                                self._coordinator)
        connection = Connection(link, self._config,
                                f"{self._label}-{len(self._subscriptions) + 1}")
        connection.start()
        status = connection.status.wait_for({State.UP}, None)
        if status.state is not State.UP:
            connection.close(self._config.close_timeout)
            raise SubscriptionFailed(f"{kind} failed: {status.reason}")
        connection.status.watch(self._on_subscription_status)
        self._subscriptions.append((link, connection))

    def _deliver_data(self, event: Any) -> None:
        """Subscription reader: enqueue, waiting while the user is too far behind."""
        try:
            self._mailbox.put_data(event, lambda: self._closed)
        except SlowConsumerError as exc:
            raise Fatal(str(exc)) from exc
        self._last_data_at = time.monotonic()

    def _on_subscription_status(self, status: ConnectionStatus) -> None:
        if status.state is State.FAILED:
            self._mailbox.fail(SubscriptionFailed(f"a subscription failed: {status.reason}"))

    def modify_program(self, program_id: Any, elf: bytes) -> dict[str, AccountData]:
        """The account overrides that install ``elf`` as ``program_id`` (ProgramData of the
        upgradeable loader, deployed at start slot − 1); pass them to ``send_continue``."""
        return program_accounts(program_id, elf, max(0, self._create.start_slot - 1))

    # ------------------------------------------------------------------ events

    def next_event(self, timeout: Optional[float] = None) -> Event:
        """The next event, in order, exactly once (user thread). Blocks up to ``timeout``
        (``None``: until something happens), in short slices so Ctrl-C gets through.

        Raises ``EventTimeout`` when nothing came, ``SessionClosed`` after ``Completed`` or
        ``close()``, ``ControlFailed``/``SubscriptionFailed``/``SlowConsumerError`` when
        the session failed."""
        self._check_process()
        if self._finished is not None:
            raise SessionClosed(self._finished)
        event: Event = self._get(timeout)
        kind = type(event)                  # exact types: isinstance on ABCs is slow
        if kind is Completed:
            self._finished = "the session has completed"
        if kind is DiscoveryBatch or self._discovery is not None:
            self._track_discovery(event)
        return event

    def _track_discovery(self, event: Any) -> None:
        """Remember the announced ``DiscoveryBatch`` until the session reaches or passes it
        (user thread), so ``advance_to_discovery`` also finds one announced early."""
        found = self._discovery
        if isinstance(event, DiscoveryBatch):
            self._discovery = event
        elif found is not None and (
                isinstance(event, Completed)
                or (isinstance(event, Slot) and event.slot > found.slot)
                or (isinstance(event, Paused) and event.slot >= found.slot and (
                    event.batch_index is None or event.batch_index >= found.batch_index))):
            self._discovery = None

    def _get(self, timeout: Optional[float]) -> Any:
        """Take from the mailbox. With subscriptions open the wait is sliced, so that once
        ``Completed`` is held back a data plane silent past ``drain_timeout`` fails the
        session instead of leaving the user waiting for ever."""
        if not self._subscriptions:
            return self._mailbox.get(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._check_drain()
            wait = SLICE if deadline is None else min(SLICE, deadline - time.monotonic())
            try:
                return self._mailbox.get(max(0.0, wait))
            except EventTimeout:
                if deadline is not None and time.monotonic() >= deadline:
                    raise EventTimeout(f"no event within {timeout:g}s") from None

    def _check_drain(self) -> None:
        silent = time.monotonic() - self._last_data_at
        if self._held_completed is not None and silent > self._config.drain_timeout:
            self._mailbox.fail(SubscriptionFailed(
                f"the session completed but a subscription sent nothing for {silent:.1f}s "
                "before its end of stream: the stream is incomplete"))

    def events(self) -> Iterator[Event]:
        """Every event until and including ``Completed`` (user thread)."""
        while True:
            event = self.next_event()
            yield event
            if isinstance(event, Completed):
                return

    # ------------------------------------------------------------------ steps

    def send_continue(self, advance_count: int = 1, transactions: Iterable[Any] = (),
                      modify_account_states: Optional[AccountOverrides] = None,
                      timeout: Optional[float] = None) -> None:
        """Execute ``advance_count`` blocks, with ``transactions`` (bytes, base64 or solders
        transactions) and account overrides applied first. Waits (up to ``timeout``) until
        the connection is up; one step may be outstanding at a time."""
        step = ContinueParams(advance_count, tuple(to_base64(tx) for tx in transactions),
                              _account_overrides(modify_account_states))
        self._send_step(Continue(step), timeout)

    def send_continue_to(self, slot: int, batch_index: Optional[int] = None,
                         timeout: Optional[float] = None) -> None:
        """Execute up to (not including) batch ``batch_index`` of ``slot``; answered by
        ``Paused``. ``batch_index=None`` stops at the block boundary."""
        self._send_step(ContinueTo(int(slot), batch_index), timeout)

    def _send_step(self, request: Request, timeout: Optional[float]) -> None:
        self._check_usable()
        self._wait_up(timeout)
        self._side.send_step(request)

    def _wait_up(self, timeout: Optional[float]) -> None:
        """Wait until the control link and every open subscription are up."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for connection in self._open_subscriptions():
            connection.status.wait_for(
                {State.UP}, None if deadline is None else max(0.0, deadline - time.monotonic()))
        status = self._side.status.wait_for(
            {State.UP}, None if deadline is None else max(0.0, deadline - time.monotonic()))
        if status.state is State.UP:
            return
        if status.final:
            self.next_event(0)      # raises the failure
            raise ControlFailed(f"the control connection is {status}")
        raise EventTimeout(f"the connection was not back within {timeout:g}s ({status})")

    def continue_until_ready(self, advance_count: int = 1, transactions: Iterable[Any] = (),
                             modify_account_states: Optional[AccountOverrides] = None,
                             timeout: Optional[float] = None) -> List[Any]:
        """Step, then return every event up to and including the next pause (or
        ``Completed``). ``timeout`` bounds each wait for an event."""
        self.send_continue(advance_count, transactions, modify_account_states, timeout)
        return self._until(PAUSES + (Completed,), timeout)

    def advance_to_discovery(self, timeout: Optional[float] = None) -> List[Any]:
        """From a pause, step block by block until a ``DiscoveryBatch`` is announced, then
        ``continueTo`` it; returns the events seen, ending with the ``Paused`` just before
        the batch (or with ``Completed`` when no batch came before the end)."""
        seen: List[Any] = self._drain_ready()
        while self._discovery is None:
            if seen and isinstance(seen[-1], Completed):
                return seen
            seen += self.continue_until_ready(timeout=timeout)
        batch = self._discovery
        self.send_continue_to(batch.slot, batch.batch_index, timeout)
        return seen + self._until((Paused, Completed), timeout)

    def _drain_ready(self) -> List[Any]:
        """Events already waiting (none block), to catch a discovery announced early."""
        out: List[Any] = []
        while self._mailbox.buffered:
            out.append(self.next_event(0))
        return out

    def _until(self, kinds: tuple[type, ...], timeout: Optional[float]) -> List[Any]:
        out: List[Any] = []
        while not out or not isinstance(out[-1], kinds):
            out.append(self.next_event(timeout))
        return out

    # ------------------------------------------------------------------ close

    def close(self, timeout: Optional[float] = None) -> None:
        """Close the session (idempotent; user thread): ``closeBacktestSession`` → ``success``
        → WebSocket close, then join every internal thread. Blocks at most ``timeout``
        (default ``ClientConfig.close_timeout``). Waiters get ``SessionClosed``."""
        self._check_process()
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + (timeout or self._config.close_timeout)
        if self._control is not None:
            self._control.close(deadline)
        for _, connection in self._subscriptions:
            connection.close(max(0.0, deadline - time.monotonic()))
        if self._rpc is not None:
            self._rpc.close()
        self._finished = self._finished or "the session was closed"
        self._mailbox.close("the session was closed")

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ guards

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise ForkedSessionError(
                "this session was created in another process (before a fork); create "
                "sessions inside the worker process instead")

    def _check_usable(self) -> None:
        self._check_process()
        if self._closed:
            raise SessionClosed("the session was closed")
