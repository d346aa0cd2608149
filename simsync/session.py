"""``Session``: the blocking face of one backtest session — ``next_event``, step gating, the
helpers built on steps, and the close order — and ``Inbox``, where a session's readers put
what arrives (control events, data-plane events, failures), in order."""
from __future__ import annotations

import abc
import atexit
import contextlib
import itertools
import logging
import os
import queue
import sys
import threading
import time
import warnings
from typing import (
    Any,
    Callable,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Tuple,
    Union,
    cast,
)

from simsync import urls
from simsync.config import ClientConfig
from simsync.control import ControlSide, SessionEnded, SessionInfo, SingleControl
from simsync.cursor import SessionCursor, StreamPosition, SubscriptionCursor
from simsync.errors import (
    ControlFailed,
    EventTimeout,
    ForkedSessionError,
    InvalidArgumentError,
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
from simsync.subscriptions import ReconnectCoordinator, SubscriptionLink, SubscriptionSpec
from simsync.transport import SLICE, Connection, ConnectionStatus, Fatal, State, StatusCell

log = logging.getLogger(__name__)

_labels = itertools.count(1)

AccountOverrides = Mapping[Any, Union[AccountData, Mapping[str, Any]]]
PAUSES = (ReadyForContinue, Paused)


def next_label() -> str:
    """A short unique label for thread names (``simsync-control-reader-<label>``)."""
    return str(next(_labels))


def _account_overrides(accounts: Optional[AccountOverrides]) -> dict[str, AccountData]:
    """Check and normalise overrides (``simsync.overrides``): keys to base58 text, values to
    ``AccountData``; raises ``AccountOverrideError`` naming the field at fault."""
    from simsync.overrides import account_overrides

    return account_overrides(accounts)


def _key_filter(program_ids: Iterable[Any], account_keys: Iterable[Any]) -> dict[str, Any]:
    """``{"programIds": [...], "accountKeys": [...]}`` (empty lists left out)."""
    flt = {name: [str(k) for k in keys] for name, keys in
           (("programIds", program_ids), ("accountKeys", account_keys))}
    flt = {name: keys for name, keys in flt.items() if keys}
    if not flt:
        raise ValueError("subscribe needs at least one program id or account key")
    return flt


def _server_slot(rpc: SessionRpc) -> Optional[int]:
    """Where the server stands (``getSlot``; a subscription's reader thread, bounded by
    ``rpc_timeout``), or None when it does not answer (the session ended, say): the replay
    is then judged against the control link's last slot."""
    try:
        return rpc.get_slot()
    except SimsyncError as exc:
        log.info("simsync: getSlot failed (%s); judging the replay by the control link's "
                 "last slot", exc)
        return None


def failure_of(status: ConnectionStatus, cause: Optional[BaseException],
               what: str = "control connection") -> SimsyncError:
    """The user-facing error for a FAILED control connection (typed when a server error
    frame ended it)."""
    if isinstance(cause, SessionEnded):
        return ControlFailed(str(cause), cause.server_error)
    return ControlFailed(f"the {what} failed: {status.reason}", cause=cause)


def _waits_for_data(error: BaseException) -> bool:
    """Whether a failure ends the session on the server's word (a fatal server error, of a
    session or of a parallel sub-session): the subscriptions may still carry what the
    server executed before it, so it waits for them like ``Completed``."""
    return isinstance(error, ControlFailed) and error.server_error is not None


class Inbox:
    """Where one session's readers put what arrives; the user's thread takes it through
    the ``Mailbox`` in order. It holds ``Completed``, and a fatal server error, back until
    every subscription has ended (the completion drain: what the subscriptions carry was
    executed before it), knows the slot the control link last announced, and records the
    session's first failure, which travels in band behind earlier events.

    Reader threads call ``on_control_event``/``deliver_data``/``fail``; the user's thread
    ``check_drain`` and the rest."""

    def __init__(self, config: ClientConfig, start_slot: int,
                 on_put: Optional[Callable[[], None]] = None) -> None:
        self.mailbox = Mailbox(config.max_buffered_events, config.slow_consumer_timeout, on_put)
        self._config = config
        self._lock = threading.RLock()
        self.subscriptions: List[Tuple[SubscriptionLink, Connection]] = []
        self.positions: List[StreamPosition] = []       # what each delivered to the user
        self._held_completed: Optional[Tuple[Optional[int], Completed]] = None  # held back
        self._held_failure: Optional[BaseException] = None     # a fatal error, held back
        self.current_slot = start_slot                      # the last slot announced
        self.failure: Optional[BaseException] = None
        self.closing = False

    # ------------------------------------------------------------------ readers

    def on_control_event(self, event: Any, seq: Optional[int] = None) -> None:
        """Control reader: note the slot; hold ``Completed`` back while subscriptions run.
        Queued as ``(seq, event)`` (the cursor follows what the user has read)."""
        kind = type(event)
        if kind is Slot:
            self.current_slot = event.slot
        elif kind is Completed and self.subscriptions:
            self._held_completed = (seq, event)
            self.release_completed()
            return
        self.mailbox.put((seq, event))

    def deliver_data(self, event: Any, position: StreamPosition) -> None:
        """Subscription reader: enqueue ``(position, event)``, waiting while the user is too
        far behind."""
        try:
            self.mailbox.put_data((position, event), self._closing)
        except SlowConsumerError as exc:
            self.fail(exc)
            raise Fatal(str(exc)) from exc

    def _closing(self) -> bool:
        return self.closing

    def release_completed(self) -> None:
        """Any reader: deliver the held ``Completed`` (or fatal failure) once no
        subscription is open."""
        if self.open_subscriptions():
            return
        # swaps without a call between read and write: atomic under the GIL, and no lock
        # that an interrupt on the user's thread could leave taken
        item, self._held_completed = self._held_completed, None
        failure, self._held_failure = self._held_failure, None
        if item is not None:
            self.mailbox.put(item)
        if failure is not None:
            self.mailbox.fail(failure)

    def fail(self, error: BaseException) -> BaseException:
        """Record the session's failure (the first one wins) behind every event so far;
        returns the failure that is recorded. A fatal server error waits for the open
        subscriptions (``release_completed``, ``check_drain``). Any thread."""
        with self._lock:
            if self.failure is None:
                self.failure = error
                if _waits_for_data(error) and self.open_subscriptions():
                    self._held_failure = error
                else:
                    self.mailbox.fail(error)
            elif self._held_failure is not None and not _waits_for_data(error):
                # a later failure of the data plane itself: nothing more will come
                held, self._held_failure = self._held_failure, None
                self.mailbox.fail(held)
            return self.failure

    def before_resume(self, timeout: float) -> bool:
        """Control reader, during a re-attach: wait (bounded) until every open subscription
        is back, so the resumed session streams into live subscriptions. Returns whether
        none is still on its way back (each is up, or ended)."""
        deadline = time.monotonic() + timeout
        for connection in self.open_subscriptions():
            status = connection.status.wait_for({State.UP},
                                                max(0.0, deadline - time.monotonic()))
            if status.state is not State.UP and not status.final:
                return False
        return True

    # ------------------------------------------------------------------ wiring

    def watch_control(self, status: StatusCell, cause: Callable[[], Optional[BaseException]]
                      ) -> None:
        """Fail the session when its control connection fails (before it starts)."""
        def on_status(value: ConnectionStatus) -> None:
            if value.state is State.FAILED:
                self.fail(failure_of(value, cause()))
        status.watch(on_status)

    def add_subscription(self, link: SubscriptionLink, connection: Connection,
                         position: StreamPosition) -> None:
        """Track a subscription that is up; its failure fails the session (in band), and
        its end (failed or closed) may release what was held back for it."""
        def on_status(value: ConnectionStatus) -> None:
            if value.state is State.FAILED:
                self.fail(SubscriptionFailed(f"the {link.kind} subscription failed: "
                                             f"{value.reason}", cause=connection.failure))
            if value.final:
                self.release_completed()
        connection.status.watch(on_status)
        with self._lock:
            self.subscriptions.append((link, connection))
            self.positions.append(position)
        if connection.status.value.final:
            on_status(connection.status.value)

    def open_subscriptions(self) -> List[Connection]:
        """Subscriptions still streaming: not at their end-of-stream, not failed or closed."""
        return [connection for link, connection in self.subscriptions
                if not link.complete and not connection.status.value.final]

    # ------------------------------------------------------------------ user thread

    def check_drain(self) -> None:
        """When ``Completed`` (or a fatal failure) is held and the server has sent nothing
        on an open subscription for ``drain_timeout``: fail the session (``Completed``: the
        stream is incomplete) or deliver the held failure. Only the server's silence on a
        live connection counts: not time a reader spends waiting on the user (nor the
        moment after, ``SubscriptionLink.last_frame_at``), nor an outage (a reconnecting
        subscription is bounded by the reconnect budget, and its clock restarts at its
        subscribe ack)."""
        if self._held_completed is None and self._held_failure is None:
            return
        open_subs = [(link, connection) for link, connection in self.subscriptions
                     if not link.complete and not connection.status.value.final]
        if not open_subs:
            self.release_completed()
            return
        if any(link.holding_back() or connection.status.value.state is not State.UP
               for link, connection in open_subs):
            return
        silent = time.monotonic() - max(link.last_frame_at for link, _ in open_subs)
        if silent <= self._config.drain_timeout:
            return
        held, self._held_failure = self._held_failure, None     # atomic swap, as above
        if held is not None:
            log.warning("simsync: the session failed and its subscriptions sent no end of "
                        "stream for %.1fs; delivering the failure", silent)
            self.mailbox.fail(held)
        else:
            self.fail(SubscriptionFailed(
                f"the session completed but a subscription sent nothing for {silent:.1f}s "
                "before its end of stream: the stream is incomplete"))

    def finish(self, reason: str) -> None:
        """User thread, handing over ``Completed``: end the stream behind it, so every other
        consumer, waiting or later, gets ``SessionClosed`` at once."""
        self.closing = True
        self.mailbox.finish(reason)

    def close(self, reason: str) -> None:
        self.closing = True
        self.mailbox.close(reason)


#: Set by an ``atexit`` hook registered when simsync is imported: it runs after the hooks
#: registered later (the user's), before the interpreter tears modules down.
_exiting = threading.Event()
atexit.register(_exiting.set)


class _ThisProcess:
    """This process's id, read once and again in every child a fork makes
    (``os.register_at_fork``): ``os.getpid`` is a system call, and ``next_event`` checks
    the owner on every event."""

    pid = os.getpid()

    @classmethod
    def after_fork(cls) -> None:
        cls.pid = os.getpid()


os.register_at_fork(after_in_child=_ThisProcess.after_fork)


class ProcessOwned(abc.ABC):
    """What a session and a parallel batch share: they belong to the process that made them
    (``ForkedSessionError`` elsewhere), close on ``with`` exit, and close themselves with a
    ``ResourceWarning`` when collected unclosed. Needs ``_pid``, ``_closed``, ``_config``
    and ``close(timeout)``."""

    _pid: int
    _closed: bool
    _config: ClientConfig

    @abc.abstractmethod
    def close(self, timeout: Optional[float] = None) -> None:
        """Close (idempotent, bounded by ``timeout``)."""

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_closed", True) or getattr(self, "_pid", None) != os.getpid():
            return
        if _exiting.is_set() or sys.is_finalizing():
            # the interpreter is exiting: a close would start threads and wait on the
            # network, and could keep the process alive; the sockets die with it
            with contextlib.suppress(Exception):
                log.warning("simsync: the process exits with %r unclosed; the server still "
                            "holds it until its detach window ends (close sessions with "
                            "`with` or close())", self)
            return
        warnings.warn(f"unclosed {self!r}: closing it", ResourceWarning, stacklevel=2)
        with contextlib.suppress(Exception):     # never raise from a finalizer
            self.close(min(1.0, self._config.close_timeout))

    def _check_process(self) -> None:
        if _ThisProcess.pid != self._pid:
            raise ForkedSessionError(
                f"this {type(self).__name__} was created in another process (before a "
                "fork); create sessions inside the worker process instead")


class Session(ProcessOwned):
    """One backtest session. Create it with ``Client.start_session``. ``next_event`` may be
    called from any thread (each event goes to one caller); steps from one thread at a
    time. A session belongs to the process that created it."""

    def __init__(self, control: ControlSide, inbox: Inbox, control_url: str,
                 create: CreateSessionParams, config: ClientConfig, label: str,
                 coordinator: Optional[ReconnectCoordinator] = None,
                 resume: Optional[SessionCursor] = None) -> None:
        self._pid = os.getpid()
        self._control = control
        self._inbox = inbox
        self._control_url = urls.control_url(control_url)
        self._create = create
        self._config = config
        self._label = label
        self._coordinator = coordinator
        self._rpc: Optional[SessionRpc] = None
        self._finished: Optional[str] = None    # why no more events will come
        self._discovery: Optional[DiscoveryBatch] = None   # announced, not yet reached
        self._control_seq = None if resume is None else resume.control_seq  # last read
        self._slot = create.start_slot if resume is None else resume.slot  # the last slot read
        # whether the last pause the user read is the one the session stands at (no step
        # sent since): a helper steps from that pause, not from one still on its way
        self._holding_pause = False
        self._close_lock = threading.RLock()
        self._closed = False
        self._releasing: Optional[int] = None   # the thread running _release (once)
        self._released = threading.Event()

    def check_rpc_host(self) -> None:
        """Refuse an untrusted ``rpc_endpoint`` unless the config allows it (user thread).
        Raises ``SessionCreateError``."""
        rpc = urls.rpc_url(self._control_url, self.info.rpc_endpoint)
        problem = urls.rpc_endpoint_problem(self._control_url, rpc)
        if problem and not self._config.allow_foreign_rpc_host:
            raise SessionCreateError(f"{problem}; refusing it (set "
                                     "ClientConfig.allow_foreign_rpc_host=True to trust it)")

    # ------------------------------------------------------------------ properties

    @property
    def info(self) -> SessionInfo:
        """The server's ``SessionInfo`` (session id, rpc endpoint, task id), with the control
        URL it was created on, so ``info.rpc_url`` is absolute."""
        self._check_process()
        info = self._control.info
        if info.control_url is None:
            info = SessionInfo(info.session_id, info.rpc_endpoint, info.task_id,
                               self._control_url)
        return info

    @property
    def status(self) -> ConnectionStatus:
        """The control connection's current ``ConnectionStatus``."""
        self._check_process()
        return self._control.status.value

    def wait_for_status(self, *states: State, timeout: Optional[float] = None
                        ) -> ConnectionStatus:
        """Block (any thread, sliced) until the control connection is in one of ``states``
        or final (FAILED/CLOSED), or ``timeout`` seconds passed; returns the status then
        (check its ``state``: a timeout is not an error)."""
        self._check_process()
        return self._control.status.wait_for(states, timeout)

    def status_changes(self, timeout: Optional[float] = None) -> Iterator[ConnectionStatus]:
        """Every transition of the control connection from now on, in order, until a final
        state (included): CONNECTING → UP ⇄ RECONNECTING → FAILED/CLOSED, each with its
        ``reason``, ``attempt`` and running ``reconnects`` count (any thread; like the
        reference client's watch channel). ``timeout`` bounds each wait
        (``EventTimeout``)."""
        self._check_process()
        changes: queue.SimpleQueue[ConnectionStatus] = queue.SimpleQueue()
        cell = self._control.status
        cell.watch(changes.put)
        try:
            status = cell.value
            while not status.final:
                deadline = None if timeout is None else time.monotonic() + timeout
                while True:
                    wait = SLICE if deadline is None else deadline - time.monotonic()
                    if wait <= 0:
                        raise EventTimeout(f"no status change within {timeout:g}s")
                    try:
                        status = changes.get(timeout=min(SLICE, wait))
                        break
                    except queue.Empty:
                        continue
                yield status
        finally:
            cell.unwatch(changes.put)

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
        except ForkedSessionError:
            return f"{type(self).__name__}(of another process)"
        except SimsyncError:
            return f"{type(self).__name__}(not created)"

    # ------------------------------------------------------------------ data plane

    def subscribe_transactions(self, program_ids: Iterable[Any] = (),
                               account_keys: Iterable[Any] = ()) -> None:
        """Stream every executed transaction that invokes one of ``program_ids`` or
        references one of ``account_keys`` (base58 text or ``Pubkey``) as ``Transaction``
        events (user thread; blocks until the server acknowledged, bounded by the handshake
        timeout and the reconnect budget). Subscribe before the first step. Replays after
        a reconnect; deduplicated by signature. Raises ``ValueError`` (no key given),
        ``SubscriptionFailed``, ``SessionClosed``."""
        self._subscribe(SubscriptionSpec("transactionSubscribe",
                                         _key_filter(program_ids, account_keys)))

    def subscribe_account_diffs(self, program_ids: Iterable[Any] = (),
                                account_keys: Iterable[Any] = ()) -> None:
        """Stream every account change made by a transaction of ``program_ids`` (or to one
        of ``account_keys``) as ``AccountDiff`` events; deduplicated by slot, signature and
        account. Blocks and raises like ``subscribe_transactions``."""
        self._subscribe(SubscriptionSpec("accountDiffSubscribe",
                                         _key_filter(program_ids, account_keys)))

    def subscribe_logs(self, mentions: Optional[Iterable[Any]] = None) -> None:
        """Stream the logs of every executed transaction (``mentions``: only those that
        reference one of these keys) as ``Logs`` events; deduplicated by signature."""
        flt: Any = "all" if mentions is None else {"mentions": [str(k) for k in mentions]}
        self._subscribe(SubscriptionSpec("logsSubscribe", flt))

    def subscribe_account(self, pubkey: Any, encoding: str = "base64") -> None:
        """Stream every new state of one account as ``AccountUpdate`` events."""
        self._subscribe(SubscriptionSpec("accountSubscribe", str(pubkey),
                                         {"encoding": encoding}))

    def subscribe_program(self, program_id: Any, encoding: str = "base64") -> None:
        """Stream every new state of the accounts a program owns as
        ``ProgramAccountUpdate`` events."""
        self._subscribe(SubscriptionSpec("programSubscribe", str(program_id),
                                         {"encoding": encoding}))

    def subscribe_signature(self, signature: Any) -> None:
        """One ``SignatureResult`` event when the transaction with this signature has
        executed; the subscription then ends by itself."""
        self._subscribe(SubscriptionSpec("signatureSubscribe", str(signature)))

    def subscribe_slots(self) -> None:
        """A ``SlotUpdate`` event for each processed slot. Not replayed after a reconnect
        (the slot stream resumes with the slots after it); deduplicated by slot."""
        self._subscribe(SubscriptionSpec("slotSubscribe"))

    def _subscribe(self, spec: SubscriptionSpec,
                   resume: Optional[SubscriptionCursor] = None) -> None:
        """Open one subscription (user thread) and wait until it is up; ``resume``
        continues one from a cursor (its first subscribe already replays)."""
        self._check_usable()
        self.open_subscription(spec, resume)

    def open_subscription(self, spec: SubscriptionSpec,
                          resume: Optional[SubscriptionCursor] = None) -> None:
        inbox = self._inbox
        since = inbox.current_slot if resume is None else resume.last_slot
        position = StreamPosition(spec, since, () if resume is None
                                  else resume.keys_at_last_slot)
        rpc = self.rpc
        link = SubscriptionLink(rpc.url, spec, self._config,
                                lambda event: inbox.deliver_data(event, position),
                                inbox.release_completed, since, lambda: inbox.current_slot,
                                self._coordinator,
                                None if resume is None else resume.keys_at_last_slot,
                                lambda: _server_slot(rpc))
        connection = Connection(link, self._config,
                                f"{self._label}-{len(inbox.subscriptions) + 1}")
        connection.start()
        try:
            status = connection.status.wait_for({State.UP}, None)
        except BaseException:
            connection.close(self._config.close_timeout)
            raise
        # a stream already at its end (a replay of a session that completed meanwhile) may
        # be done before this thread sees it up: that subscription delivered, not failed
        if status.state is not State.UP and not link.complete:
            connection.close(self._config.close_timeout)
            raise SubscriptionFailed(f"{spec.method} failed: {status.reason}",
                                     cause=connection.failure)
        inbox.add_subscription(link, connection, position)

    @property
    def cursor(self) -> SessionCursor:
        """Where the user stands: persist it after handling each event (``to_json()`` or
        pickle) and ``Client.attach_session(session_id, cursor)`` resumes from there, in
        another process too, with every later event exactly once (user thread)."""
        self._check_process()
        return SessionCursor(
            self.info.session_id, self.info.rpc_endpoint, self._create.start_slot,
            self._control_seq, self._slot,
            tuple(position.cursor() for position in self._inbox.positions))

    def modify_program(self, program_id: Any, elf: bytes) -> dict[str, AccountData]:
        """The account overrides that install ``elf`` as ``program_id`` (ProgramData of the
        upgradeable loader, deployed at start slot − 1); pass them to ``send_continue``."""
        return program_accounts(program_id, elf, max(0, self._create.start_slot - 1))

    # ------------------------------------------------------------------ events

    def next_event(self, timeout: Optional[float] = None) -> Event:
        """The next event, in order, exactly once (any thread). Blocks up to ``timeout``
        seconds (``None``: until something happens), in short slices so Ctrl-C gets
        through; an interrupted call (``KeyboardInterrupt`` or any exception raised while
        the event is handed over) leaves the event queued for the next call.

        Raises ``EventTimeout`` when nothing came; ``ControlFailed``/``SubscriptionFailed``
        /``SlowConsumerError`` once, after every event that arrived before the failure;
        ``SessionClosed`` after ``Completed``, after a failure, or after ``close()`` — also
        to other threads already waiting when one of them takes ``Completed``.
        Delivering ``Completed`` closes the session's connections."""
        self._check_process()
        if self._finished is not None:
            raise SessionClosed(self._finished)
        mailbox = self._inbox.mailbox
        item = None             # (tag, event) while this call holds it
        try:
            item = self._get(timeout)
            tag, event = item
            data = type(tag) is StreamPosition
            if data:
                tag.delivered(event)                # idempotent: a given-back event again
            elif tag is not None:
                self._control_seq = tag
            kind = type(event)                  # exact types: isinstance on ABCs is slow
            if kind is Slot:
                self._slot = event.slot
            elif kind is ReadyForContinue or kind is Paused:
                self._holding_pause = True
            if kind is DiscoveryBatch or self._discovery is not None:
                self._track_discovery(event)
            if kind is Completed:
                self._inbox.finish("the session has completed")
                self._release()
            mailbox.read(data)
            if kind is Completed:
                self._finished = "the session has completed"
            return cast(Event, event)           # no call between here and the caller
        except BaseException:
            if item is not None:
                mailbox.give_back(item, type(item[0]) is StreamPosition)
            raise

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
        inbox = self._inbox
        mailbox = inbox.mailbox
        if not inbox.subscriptions:
            return mailbox.get(timeout)
        if mailbox.buffered:            # the usual case while a stream runs: no clock read
            inbox.check_drain()
            try:
                return mailbox.get(0.0)
            except EventTimeout:        # another consumer took it first: wait below
                pass
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            inbox.check_drain()
            wait = SLICE if deadline is None else min(SLICE, deadline - time.monotonic())
            try:
                return mailbox.get(max(0.0, wait))
            except EventTimeout:
                if deadline is not None and time.monotonic() >= deadline:
                    raise EventTimeout(f"no event within {timeout:g}s") from None

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
        """Execute ``advance_count`` blocks, with ``transactions`` (bytes, base64 text or
        solders transactions) run after the block's historical ones and account overrides
        applied first (user thread).

        Waits (up to ``timeout`` seconds; ``None``: no limit) until the control link and
        every open subscription are up and the session stands at a pause; one step may be
        outstanding at a time. Raises ``EventTimeout`` (nothing sent), ``ControlFailed``/
        ``SubscriptionFailed`` (the session failed), ``SessionClosed``, ``SimsyncError``
        (a step is still running)."""
        step = ContinueParams(advance_count, tuple(to_base64(tx) for tx in transactions),
                              _account_overrides(modify_account_states))
        self._send_step(Continue(step), timeout)

    def send_continue_to(self, slot: int, batch_index: Optional[int] = None,
                         timeout: Optional[float] = None) -> None:
        """Execute up to (not including) batch ``batch_index`` of ``slot``; answered by
        ``Paused``. ``batch_index=None`` stops at the block boundary. Blocks and raises
        like ``send_continue``."""
        self._send_step(ContinueTo(int(slot), batch_index), timeout)

    def _send_step(self, request: Request, timeout: Optional[float]) -> None:
        self._check_usable()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wait_up(deadline, timeout)
        self._control.send_step(request, lambda remaining: self._check_step_wait(
            remaining, timeout), deadline)
        self._holding_pause = False

    def _check_step_wait(self, remaining: float, timeout: Optional[float]) -> None:
        """While a step waits for the session's pause: stop on failure, close or timeout."""
        self._check_usable()
        if self._inbox.failure is not None:
            raise self._inbox.failure
        if remaining <= 0:
            raise EventTimeout(f"the session reached no pause within {timeout:g}s; "
                               "nothing was sent")

    def _wait_up(self, deadline: Optional[float], timeout: Optional[float]) -> None:
        """Wait until the control link and every open subscription are up (user thread).
        Raises the session's failure, or ``EventTimeout`` (nothing is sent)."""
        def left() -> Optional[float]:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        for _, connection in self._inbox.subscriptions:
            status = connection.status.wait_for({State.UP}, left())
            if status.state is State.FAILED:
                raise self._inbox.fail(SubscriptionFailed(
                    f"a subscription failed: {status.reason}", cause=connection.failure))
            if status.state is not State.UP and not status.final:   # CLOSED: it ended
                raise EventTimeout(f"a subscription was not back within {timeout:g}s "
                                   f"({status}); the step was not sent")
        status = self._control.status.wait_for({State.UP}, left())
        if status.state is State.UP:
            return
        if status.state is State.FAILED:
            raise self._inbox.fail(failure_of(status, self._control.failure))
        if status.final:
            raise SessionClosed(f"the control connection is {status}")
        raise EventTimeout(f"the connection was not back within {timeout:g}s ({status}); "
                           "the step was not sent")

    def continue_until_ready(self, advance_count: int = 1, transactions: Iterable[Any] = (),
                             modify_account_states: Optional[AccountOverrides] = None,
                             timeout: Optional[float] = None) -> List[Event]:
        """Step, then return every event up to and including the pause that answers this
        step (or ``Completed``). ``timeout`` bounds each wait for an event (user thread).

        When the user has not read the pause the session stands at (right after
        ``start_session``/``attach_session``, or after a ``send_continue`` of their own),
        the events up to it are read first and lead the list: the step is sent from that
        pause, and an older pause is never taken for this step's answer."""
        seen = self._catch_up(timeout)
        if seen and isinstance(seen[-1], Completed):
            return seen
        self.send_continue(advance_count, transactions, modify_account_states, timeout)
        return seen + self._until(PAUSES + (Completed,), timeout)

    def advance_to_discovery(self, timeout: Optional[float] = None) -> List[Event]:
        """From a pause, step block by block until a ``DiscoveryBatch`` is announced, then
        ``continueTo`` it; returns the events seen, ending with the ``Paused`` just before
        the batch (or with ``Completed`` when no batch came before the end). Reads up to
        the pause the session stands at first, like ``continue_until_ready``."""
        seen: List[Event] = self._catch_up(timeout)
        while self._discovery is None:
            if seen and isinstance(seen[-1], Completed):
                return seen
            seen += self.continue_until_ready(timeout=timeout)
        batch = self._discovery
        self.send_continue_to(batch.slot, batch.batch_index, timeout)
        return seen + self._until((Paused, Completed), timeout)

    def _catch_up(self, timeout: Optional[float]) -> List[Event]:
        """The events up to and including the pause the session stands at, unless the user
        already read it (user thread): a helper's step answers that pause, and a discovery
        announced before it is seen before stepping."""
        if self._holding_pause:
            return []
        return self._until(PAUSES + (Completed,), timeout)

    def _until(self, kinds: Tuple[type, ...], timeout: Optional[float]) -> List[Event]:
        out: List[Event] = []
        while not out or not isinstance(out[-1], kinds):
            out.append(self.next_event(timeout))
        return out

    # ------------------------------------------------------------------ close

    def close(self, timeout: Optional[float] = None, *, keep_on_server: bool = False) -> None:
        """Close the session (idempotent; any thread, also a signal handler):
        ``closeBacktestSession`` → ``success`` → WebSocket close, then join every internal
        thread. Blocks at most ``timeout`` seconds (default ``ClientConfig.close_timeout``).
        Waiters get ``SessionClosed``.

        ``keep_on_server=True`` closes only this process's connections and threads and
        leaves the session on the server for its detach window (``disconnect_timeout_secs``
        ; none: the server ends it with the connection), so that ``Client.attach_session``
        can resume it — what a failed ``attach_session`` does. Single sessions only
        (``InvalidArgumentError`` for a parallel sub-session)."""
        self._check_process()
        if keep_on_server and not isinstance(self._control, SingleControl):
            raise InvalidArgumentError("keep_on_server=True is for single sessions; close "
                                       "a parallel batch as a whole")
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._finished = self._finished or "the session was closed"
        self._inbox.close("the session was closed")
        self._release(timeout, keep_on_server)

    def _release(self, timeout: Optional[float] = None, keep_on_server: bool = False) -> None:
        """Close the control side (``keep_on_server``: only its connection), the
        subscriptions and the RPC client, within ``timeout``
        — once: a later call (``close()`` after ``Completed``) waits for the first to end
        (bounded by its own ``timeout``) instead of closing again; only a release that was
        interrupted runs again."""
        deadline = time.monotonic() + (timeout or self._config.close_timeout)
        with self._close_lock:
            owner = self._releasing
            if owner is None:
                self._releasing = threading.get_ident()
        if owner is not None:
            if owner != threading.get_ident():      # not a signal handler inside it
                self._released.wait(max(0.0, deadline - time.monotonic()))
            return
        try:
            try:
                if keep_on_server and isinstance(self._control, SingleControl):
                    self._control.connection.close(max(0.0, deadline - time.monotonic()))
                else:
                    self._control.close(deadline)
            finally:
                for _, connection in self._inbox.subscriptions:
                    connection.close(max(0.0, deadline - time.monotonic()))
                if self._rpc is not None:
                    self._rpc.close()
        except BaseException:
            with self._close_lock:
                self._releasing = None
            raise
        self._released.set()

    def __enter__(self) -> Session:
        return self

    # ------------------------------------------------------------------ guards

    def _check_usable(self) -> None:
        self._check_process()
        if self._closed:
            raise SessionClosed("the session was closed")
