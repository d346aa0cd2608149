"""Parallel sessions (PROTOCOL.md §8): one control connection creates the sub-sessions,
demultiplexes ``sessionEventV2`` into one mailbox per sub-session, and re-attaches them all
with per-session cursors."""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from simsync import urls
from simsync.config import ClientConfig
from simsync.control import (
    ControlBase,
    ControlSide,
    FreshSocket,
    SessionEnded,
    SessionInfo,
    StepGate,
    ack_wait_until,
)
from simsync.errors import (
    ControlFailed,
    EventTimeout,
    SessionClosed,
    SessionCreateError,
    SimsyncError,
)
from simsync.protocol import (
    AttachParallelControlSessionV2,
    CloseSessionV1,
    Completed,
    Continue,
    ContinueSessionV1,
    ContinueTo,
    ContinueToSessionV1,
    CreateBacktestSession,
    CreateSessionParams,
    Event,
    ParallelSessionAttachedV2,
    Request,
    ResumeAttachedSession,
    ServerError,
    SessionCreated,
    SessionEventV1,
    SessionEventV2,
    SessionsCreated,
    SessionsCreatedV2,
    Success,
    encode_request,
)
from simsync.session import Inbox, ProcessOwned, Session, failure_of, next_label
from simsync.subscriptions import ReconnectCoordinator
from simsync.transport import (
    SLICE,
    Channel,
    Connection,
    ConnectionStatus,
    Fatal,
    State,
)

log = logging.getLogger(__name__)

SlotRange = Tuple[int, int]


class _Sub:
    """The parallel link's view of one sub-session: its gate and its inbox."""

    def __init__(self, inbox: Inbox) -> None:
        self.gate = StepGate()
        self.inbox = inbox
        self.close_acked = threading.Event()
        self.closing = False
        self.failed = False


def check_created(reply: SessionsCreatedV2) -> List[SlotRange]:
    """The server's sub-session ranges; a too-old server (no ranges, or arrays of other
    lengths than ``session_ids``) is refused loudly."""
    count = len(reply.session_ids)
    if reply.start_slots is None or reply.end_slots is None:
        raise Fatal("the server is too old for parallel sessions: sessionsCreatedV2 carries "
                    "no start_slots/end_slots")
    if not len(reply.start_slots) == len(reply.end_slots) == len(reply.task_ids) == count:
        raise Fatal("the server is too old for parallel sessions: sessionsCreatedV2 arrays "
                    "differ in length from session_ids")
    return list(zip(reply.start_slots, reply.end_slots))


MakeSub = Callable[[SessionInfo, SlotRange], _Sub]


class ParallelControlLink(ControlBase):
    """The control link of a parallel batch (reader thread runs every handshake/route)."""

    name = "parallel"

    def __init__(self, url: str, api_key: Optional[str], create: CreateSessionParams,
                 config: ClientConfig, make_sub: MakeSub,
                 before_resume: Callable[[float], bool]) -> None:
        super().__init__(url, api_key, create, config, before_resume)
        self._make_sub = make_sub
        self.control_session_id: Optional[str] = None
        self.subs: Dict[str, _Sub] = {}
        #: the sub-sessions the create announced so far (``sessionCreated``)
        self._announced: Dict[str, SessionCreated] = {}
        #: until when (monotonic seconds) closes wait for their answers on this connection
        #: (``close_subs``' ``ack_by``, from the batch's close): one bound for them all
        self.acks_by = float("inf")

    def __repr__(self) -> str:
        return f"ParallelControlLink({self._url!r}, {self.control_session_id!r})"

    @property
    def created(self) -> bool:
        return self.control_session_id is not None

    @property
    def finished(self) -> bool:
        return bool(self.subs) and all(s.gate.completed or s.closing or s.failed
                                       for s in self.subs.values())

    def gates(self) -> List[StepGate]:
        return [sub.gate for sub in self.subs.values()]

    # ------------------------------------------------------------------ handshakes

    def _create_session(self, channel: Channel) -> None:
        """Collect one ``sessionCreated`` per sub-session until ``sessionsCreatedV2``
        (each ``sessionCreated`` may take ``parallel_create_frame_timeout`` while the server
        waits for capacity; other frames do not extend the wait)."""
        channel.send(encode_request(CreateBacktestSession(self._create)))
        created = self._announced
        early: List[Tuple[Optional[int], Any]] = []

        def other(frame: Tuple[Optional[int], Any]) -> None:
            event = frame[1]
            if isinstance(event, SessionCreated):
                created[event.session_id] = event
            elif isinstance(event, SessionsCreated):
                raise Fatal("the server is too old for parallel sessions (it answered the "
                            "legacy sessionsCreated without ranges)")
            else:
                early.append(frame)

        _, reply = self._await(channel, SessionsCreatedV2, "sessionsCreatedV2", other,
                               self._config.parallel_create_frame_timeout, SessionCreated)
        self._bind(reply, created)
        for seq, event in early:
            self._route(seq, event)

    def _create_lost(self, cause: str) -> str:
        """``ControlBase._create_lost``, naming the sub-sessions already announced: without
        the ``control_session_id`` (it comes last, in ``sessionsCreatedV2``) the protocol
        has no request that reaches them, so the server keeps them until their detach
        window (``disconnect_timeout_secs``) ends."""
        if not self._announced:
            return super()._create_lost(cause)
        seconds = self._create.disconnect_timeout_secs
        window = "" if seconds is None else f" ({seconds}s)"
        # the facts first, the cause last: a status reason is cut at 300 characters
        return (f"no answer to createBacktestSession; simsync does not create twice; "
                f"sub-sessions the server announced may exist on it until their detach "
                f"window{window} ends (no request reaches them before sessionsCreatedV2): "
                f"{', '.join(self._announced)} ({cause})")

    def _bind(self, reply: SessionsCreatedV2, created: Dict[str, SessionCreated]) -> None:
        ranges = check_created(reply)
        for index, session_id in enumerate(reply.session_ids):
            announced = created.get(session_id)
            endpoint = announced.rpc_endpoint if announced else f"/backtest/{session_id}"
            info = SessionInfo(session_id, endpoint, reply.task_ids[index])
            self.subs[session_id] = self._make_sub(info, ranges[index])
        self.control_session_id = reply.control_session_id

    def _attach(self, channel: Channel) -> None:
        assert self.control_session_id is not None
        cursors = {sid: sub.gate.last_seq for sid, sub in self.subs.items()
                   if sub.gate.last_seq is not None}
        channel.send(encode_request(AttachParallelControlSessionV2(self.control_session_id,
                                                                   cursors)))
        self._await(channel, ParallelSessionAttachedV2, "parallelSessionAttachedV2")
        self._resume(channel)
        self._probe_lost_steps(channel)

    # ------------------------------------------------------------------ routing

    def _route(self, seq: Optional[int], event: Any) -> None:
        if isinstance(event, (SessionEventV2, SessionEventV1)):
            sub = self.subs.get(event.session_id)
            if sub is None:
                log.debug("simsync parallel: event for unknown sub-session %s", event.session_id)
                return
            self._route_sub(sub, getattr(event, "seq_id", None), event.event)
        elif isinstance(event, ServerError) and event.fatal:
            raise SessionEnded(f"the server ended the parallel session: {event.message}",
                               event)
        else:
            log.debug("simsync parallel: control-level %s", type(event).__name__)

    def _route_sub(self, sub: _Sub, seq: Optional[int], event: Any) -> None:
        if isinstance(event, Success):
            sub.close_acked.set()
            return
        if not self._admit(sub.gate, seq, event):
            return
        if sub.closing and isinstance(event, ServerError):
            sub.close_acked.set()           # the close's answer, if an unwelcome one
        if isinstance(event, ServerError) and event.fatal:
            sub.failed = True
            sub.inbox.fail(ControlFailed(f"the server ended the sub-session: {event.message}",
                                         event))
            return
        sub.inbox.on_control_event(event, seq)

    # ------------------------------------------------------------------ user threads

    def send_step(self, session_id: str, request: Request, ready: Callable[[float], None],
                  deadline: Optional[float]) -> None:
        """Record a step of one sub-session (wrapped as ``…SessionV1``) and write it when
        the shared connection is live (user thread)."""
        if isinstance(request, Continue):
            wrapped: Request = ContinueSessionV1(session_id, request.step)
        elif isinstance(request, ContinueTo):
            wrapped = ContinueToSessionV1(session_id, request.slot, request.batch_index)
        else:
            raise TypeError(f"not a step: {request!r}")
        self.subs[session_id].gate.begin_step(request, wrapped, ready, deadline)
        self.flush_steps()

    def close_subs(self, session_ids: List[str], deadline: Optional[float] = None,
                   ack_by: Optional[float] = None) -> List[threading.Event]:
        """Send ``closeSessionV1`` for each of ``session_ids`` not closing yet, one right
        after the other, before any answer (user thread): a batch's close costs one round
        trip, not one per sub-session. Returns one event per id, set on its answer, or at
        once for a sub-session the server ended (failed). A completed one is closed too:
        the server would keep it for the detach window. A close that cannot be written now
        (the connection is down, or another thread's send holds it until ``deadline``) is
        sent after the next resume, or by ``close_detached``; one already asked for is not
        sent again. ``ack_by`` (monotonic seconds) lowers ``acks_by``, how long closes
        wait for their answers before the fresh-connection path."""
        if ack_by is not None:
            self.acks_by = min(self.acks_by, ack_by)
        for session_id in session_ids:
            sub = self.subs[session_id]
            if sub.closing:
                continue
            sub.closing = True
            if sub.failed:
                sub.close_acked.set()
            else:
                self.send_request(CloseSessionV1(session_id), deadline)
        return [self.subs[session_id].close_acked for session_id in session_ids]

    def open_subs(self) -> List[str]:
        """Sub-sessions the server may still hold: neither failed nor closed."""
        return [sid for sid, sub in self.subs.items()
                if not (sub.failed or sub.close_acked.is_set())]

    def handshake(self, channel: Channel, attempt: int) -> None:
        """``ControlBase.handshake``, then the closes asked for while the connection was
        down (reader thread)."""
        super().handshake(channel, attempt)
        for session_id in self.open_subs():
            if self.subs[session_id].closing:
                self.send_request(CloseSessionV1(session_id),
                                  time.monotonic() + self._config.handshake_timeout)

    def _close_exchange(self, sock: FreshSocket) -> None:
        """``attachParallelControlSessionV2``, ``resumeAttachedSession`` and
        ``closeSessionV1`` for every open sub-session at once (``FreshSocket.pipelined``)
        → ``parallelSessionAttachedV2``, ``success``, each close's wrapped ``success``
        (see ``ControlBase.close_detached``)."""
        assert self.control_session_id is not None
        if not self.open_subs():
            return
        cursors = {sid: sub.gate.last_seq for sid, sub in self.subs.items()
                   if sub.gate.last_seq is not None}

        def requests() -> List[Request]:
            closes: List[Request] = [CloseSessionV1(sid) for sid in self.open_subs()]
            return [ResumeAttachedSession(), *closes]

        def acked(event: Any) -> bool:
            if isinstance(event, (SessionEventV2, SessionEventV1)) and isinstance(
                    event.event, Success) and event.session_id in self.subs:
                self.subs[event.session_id].close_acked.set()
            return not self.open_subs()
        sock.pipelined(AttachParallelControlSessionV2(self.control_session_id, cursors),
                       ParallelSessionAttachedV2, requests, acked)


class SubControl(ControlSide):
    """A sub-session's slice of the shared parallel control connection."""

    def __init__(self, link: ParallelControlLink, connection: Connection,
                 info: SessionInfo, released: Callable[[], None]) -> None:
        self._link = link
        self._connection = connection
        self._info = info
        self._released = released
        self.status = connection.status

    @property
    def info(self) -> SessionInfo:
        return self._info

    @property
    def failure(self) -> Optional[BaseException]:
        return self._connection.failure

    def start(self) -> None:
        """Nothing to do: the parallel create already made this sub-session."""

    def send_step(self, request: Request, ready: Callable[[float], None],
                  deadline: Optional[float]) -> None:
        self._link.send_step(self._info.session_id, request, ready, deadline)

    def close(self, deadline: float) -> None:
        """``closeSessionV1`` → ``success`` (bounded: ``ack_wait_until``, or the batch's
        bound when the batch closes); the shared connection closes once every sub-session
        is closed or completed."""
        try:
            # half the time at most for the request (never the whole close behind another
            # thread's send); the connection's teardown and a fresh one get the rest
            write_by = time.monotonic() + (deadline - time.monotonic()) / 2
            acked, = self._link.close_subs([self._info.session_id], write_by)
            ack_by = min(ack_wait_until(deadline, self._link.round_trip), self._link.acks_by)
            while not acked.wait(SLICE) and time.monotonic() < ack_by \
                    and self.status.value.state is State.UP:
                pass
        finally:
            self._released()


class SubSession(Session):
    """One sub-session of a ``ParallelSession``: the ``Session`` surface plus ``range``
    (the server's authoritative ``(start_slot, end_slot)``). Drive each from one thread,
    or the whole batch with ``ParallelSession.events()`` (one style per batch)."""

    def __init__(self, control: ControlSide, inbox: Inbox, control_url: str,
                 create: CreateSessionParams, config: ClientConfig, label: str,
                 coordinator: ReconnectCoordinator, slot_range: SlotRange,
                 on_direct_use: Callable[[], None]) -> None:
        super().__init__(control, inbox, control_url, create, config, label, coordinator)
        self.range = slot_range
        self._on_direct_use = on_direct_use

    def next_event(self, timeout: Optional[float] = None) -> Event:
        """As ``Session.next_event``; using it makes the batch one-thread-per-sub-session
        (``ParallelSession.events()`` then raises)."""
        self._on_direct_use()
        return super().next_event(timeout)

    def _take(self) -> Event:
        """The next ready event for ``ParallelSession.events()`` (never waits)."""
        return super().next_event(0)


class _Batch:
    """What the readers of a batch reach: the sub-sessions' inboxes, the arrival order for
    ``events()``, and which sub-sessions were released. It never refers to the
    ``ParallelSession``, so an abandoned batch can be collected (and close itself)."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.pending: List[Tuple[SessionInfo, SlotRange, Inbox]] = []
        self.arrivals: Optional[queue.SimpleQueue[Optional[SubSession]]] = queue.SimpleQueue()
        self.connection: Optional[Connection] = None
        self.released: set[str] = set()

    def make_sub(self, info: SessionInfo, slot_range: SlotRange) -> _Sub:
        """Reader thread, during the create: the inbox of one sub-session (the
        ``SubSession`` itself is built on the user's thread once the create is done)."""
        inbox = Inbox(self.config, slot_range[0])
        self.pending.append((info, slot_range, inbox))
        return _Sub(inbox)

    def arrived(self, sub_session: SubSession) -> None:
        arrivals = self.arrivals
        if arrivals is not None:
            arrivals.put(sub_session)

    def direct_use(self) -> None:
        """A sub-session is driven by its own ``next_event``: stop keeping arrivals."""
        self.arrivals = None

    def on_status(self, status: ConnectionStatus) -> None:
        """Reader thread: a failed shared connection fails every sub-session in band, with
        one and the same error (``events()`` raises it once)."""
        if status.state is State.FAILED and self.connection is not None:
            error = failure_of(status, self.connection.failure, "parallel control connection")
            for _, _, inbox in self.pending:
                inbox.fail(error)

    def before_resume(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(inbox.before_resume(max(0.0, deadline - time.monotonic()))
                   for _, _, inbox in self.pending)

    def sub_released(self, session_id: str) -> None:
        """A sub-session closed or completed: the last one closes the shared connection."""
        self.released.add(session_id)
        if self.connection is not None and len(self.released) >= len(self.pending):
            self.connection.close(self.config.close_timeout)


class ParallelSession(ProcessOwned):
    """A parallel batch: ``sub_sessions`` to drive from one thread (``events()`` yields
    ``(sub_session, event)`` in arrival order) or from one thread each (each sub-session's
    own ``next_event``) — pick one style per batch."""

    def __init__(self, url: str, api_key: Optional[str], create: CreateSessionParams,
                 config: ClientConfig) -> None:
        self._pid = os.getpid()
        self._url = urls.control_url(url)
        self._config = config
        self._create = create
        self._label = next_label()
        self._batch = _Batch(config)
        self.coordinator = ReconnectCoordinator(config.coordinator_quick_attempts)
        self.sub_sessions: List[SubSession] = []
        self._link = ParallelControlLink(self._url, api_key, create, config,
                                         self._batch.make_sub, self._batch.before_resume)
        self._connection = Connection(self._link, config, f"p{self._label}")
        self._batch.connection = self._connection
        self._connection.status.watch(self._batch.on_status)
        self._done: set[str] = set()        # sub-sessions events() has finished with
        self._close_lock = threading.RLock()
        self._closed = False

    def _start(self) -> None:
        """Create the batch (user thread); blocks through the whole parallel create.
        Raises ``SessionCreateError``; an interrupt closes what was created."""
        self._connection.start()
        try:
            status = self._connection.status.wait_for({State.UP}, None)
            if status.state is not State.UP and not self._link.created:
                raise SessionCreateError(
                    f"could not create the parallel session: {status.reason}",
                    cause=self._connection.failure)
            for info, slot_range, inbox in self._batch.pending:
                self._bind(info, slot_range, inbox)
            for sub_session in self.sub_sessions:
                sub_session.check_rpc_host()
        except BaseException:
            self.close()
            raise

    def _bind(self, info: SessionInfo, slot_range: SlotRange, inbox: Inbox) -> None:
        create = CreateSessionParams(slot_range[0], slot_range[1],
                                     disconnect_timeout_secs=self._create.disconnect_timeout_secs)
        batch, sub_id = self._batch, info.session_id
        control = SubControl(self._link, self._connection, info,
                             lambda: batch.sub_released(sub_id))
        sub_session = SubSession(control, inbox, self._url, create, self._config,
                                 f"{self._label}.{len(self.sub_sessions) + 1}",
                                 self.coordinator, slot_range, batch.direct_use)
        inbox.mailbox.set_on_put(lambda: batch.arrived(sub_session))
        for _ in range(inbox.mailbox.buffered):
            batch.arrived(sub_session)      # what came during the create
        self.sub_sessions.append(sub_session)

    @property
    def control_session_id(self) -> str:
        """The id of the batch's control session (raises ``SimsyncError`` before creation)."""
        if self._link.control_session_id is None:
            raise SimsyncError("the parallel session has not been created")
        return self._link.control_session_id

    @property
    def status(self) -> ConnectionStatus:
        """The shared control connection's ``ConnectionStatus``."""
        return self._connection.status.value

    def __repr__(self) -> str:
        return (f"ParallelSession({self._link.control_session_id!r}, "
                f"{len(self.sub_sessions)} sub-sessions, status={self.status})")

    def events(self, timeout: Optional[float] = None) -> Iterator[Tuple[SubSession, Event]]:
        """``(sub_session, event)`` pairs in arrival order until every sub-session has
        delivered ``Completed``, failed, or been closed (user thread). ``timeout`` bounds
        each wait (``EventTimeout``); calling ``events()`` again resumes where it stopped.

        A sub-session's failure is raised (``ControlFailed`` with its typed server error)
        after that sub-session's earlier events; the others go on when ``events()`` is
        called again. Raises ``ForkedSessionError`` in a forked child, ``SimsyncError``
        when sub-sessions are driven by their own ``next_event``."""
        self._check_process()
        done = self._done
        while len(done) < len(self.sub_sessions):
            arrivals = self._batch.arrivals
            if arrivals is None:
                raise SimsyncError("the sub-sessions of this batch are driven by their own "
                                   "next_event(): events() cannot be used as well")
            sub_session = self._next_arrival(arrivals, timeout, done)
            if sub_session is None:
                raise SessionClosed("the parallel session was closed")
            sub_id = sub_session.info.session_id
            if sub_id in done:
                continue
            try:
                event = sub_session._take()
            except EventTimeout:
                continue
            except SessionClosed:
                done.add(sub_id)
                continue
            except SimsyncError as exc:
                done.update(s.info.session_id for s in self.sub_sessions
                            if s._inbox.failure is exc)     # a shared failure: raised once
                done.add(sub_id)
                raise
            if isinstance(event, Completed):
                done.add(sub_id)
            yield sub_session, event

    def _next_arrival(self, arrivals: queue.SimpleQueue[Optional[SubSession]],
                      timeout: Optional[float], done: set[str]) -> Optional[SubSession]:
        """The next sub-session with a ready event. Every slice it waits, it runs each
        unfinished sub-session's completion drain (``Inbox.check_drain``), as
        ``next_event`` does: a ``Completed`` (or a failure) held back behind a silent
        subscription fails after ``drain_timeout``, and that failure is an arrival."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = SLICE if deadline is None else min(SLICE, deadline - time.monotonic())
            try:
                return arrivals.get(timeout=max(0.001, wait))
            except queue.Empty:
                for sub_session in self.sub_sessions:
                    if sub_session.info.session_id not in done:
                        sub_session._inbox.check_drain()
                if deadline is not None and time.monotonic() >= deadline:
                    raise EventTimeout(f"no event within {timeout:g}s") from None

    def close(self, timeout: Optional[float] = None) -> None:
        """Close every sub-session, then the control connection (idempotent; any thread;
        bounded by ``timeout``, default ``ClientConfig.close_timeout``)."""
        self._check_process()
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + (timeout or self._config.close_timeout)
        try:
            # every close on the wire before the first answer is awaited (as in
            # SubControl.close: half the time at most for the writes), and one bound for
            # all their answers, so that a connection that died unnoticed leaves the fresh
            # one its time
            self._link.close_subs([s.info.session_id for s in self.sub_sessions],
                                  time.monotonic() + (deadline - time.monotonic()) / 2,
                                  ack_wait_until(deadline, self._link.round_trip))
            for sub_session in self.sub_sessions:
                sub_session.close(max(SLICE, deadline - time.monotonic()))
        finally:
            self._connection.close(max(0.0, deadline - time.monotonic()))
            arrivals = self._batch.arrivals
            if arrivals is not None:
                arrivals.put(None)
        if self._link.open_subs() and not isinstance(self._connection.failure, SessionEnded):
            # the connection was down (or died before the acks): the server may hold them
            # for the detach window, so bounded attempts on a fresh connection
            self._link.close_detached(deadline)

    def __enter__(self) -> ParallelSession:
        return self

