"""The control link: what to send on connect (create, or attach + resume) and how to route
what arrives (sequence cursor, the step/pause rules of PROTOCOL.md §13)."""
from __future__ import annotations

import abc
import enum
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple, Union

import tenacity
import websocket

from simsync import urls
from simsync.config import ClientConfig
from simsync.errors import ProtocolError, SessionClosed, SessionCreateError, SimsyncError
from simsync.protocol import (
    AttachBacktestSession,
    CloseBacktestSession,
    Completed,
    ContinueTo,
    CreateBacktestSession,
    CreateSessionParams,
    Paused,
    ReadyForContinue,
    Request,
    ResumeAttachedSession,
    ServerError,
    SessionAttached,
    SessionCreated,
    Slot,
    Status,
    Success,
    decode_response,
    encode_request,
)
from simsync.transport import (
    SLICE,
    Channel,
    Connection,
    Fatal,
    Link,
    LinkDone,
    State,
    StatusCell,
    Transient,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionInfo:
    """What the server said about a session: its id, its JSON-RPC endpoint, its task id.

    ``rpc_endpoint`` is kept exactly as the server sent it: an absolute ``http(s)://`` URL or
    a path (``/backtest/ID``). ``control_url`` is the control URL the session was created
    on (``ws(s)://HOST/backtest``, no credentials); `rpc_url` and `pubsub_url` resolve the
    endpoint against it (PROTOCOL.md §1), computed on access (no I/O).
    """

    session_id: str
    rpc_endpoint: str
    task_id: Optional[str] = None
    control_url: Optional[str] = None

    @property
    def rpc_url(self) -> str:
        """The absolute JSON-RPC URL (``http(s)://HOST[:PORT]/backtest/ID``). Raises
        ``ValueError`` when ``rpc_endpoint`` is a path and ``control_url`` is unknown."""
        if self.rpc_endpoint.lower().startswith(("http://", "https://")):
            return self.rpc_endpoint
        if self.control_url is None:
            raise ValueError(f"rpc_endpoint {self.rpc_endpoint!r} is a path and this "
                             "SessionInfo has no control_url to resolve it against")
        return urls.rpc_url(self.control_url, self.rpc_endpoint)

    @property
    def pubsub_url(self) -> str:
        """The absolute PubSub URL: `rpc_url` with ``http→ws``, ``https→wss``."""
        return urls.pubsub_url(self.rpc_url)


class Verdict(enum.Enum):
    DELIVER = "deliver"
    DROP = "drop"
    RESEND = "resend"


class StepState(enum.Enum):
    """Where one session stands between the user's steps and the server's pauses."""

    #: No pause to step from: start-up, or a rejected step whose pause is re-sent.
    AWAITING_PAUSE = "awaiting pause"
    #: The user holds a pause (``ReadyForContinue``/``Paused``) and may step.
    HOLDING_PAUSE = "holding pause"
    #: A step is recorded but not written on a live connection yet (or it must be resent).
    STEP_UNSENT = "step unsent"
    #: The step was written on connection generation ``Step.sent_gen``; nothing answered yet.
    STEP_SENT = "step sent"
    #: A frame belonging to the step arrived: the server has it; its pause will follow.
    STEP_RUNNING = "step running"
    #: ``completed`` arrived; nothing follows.
    COMPLETED = "completed"


@dataclass
class Step:
    """One step: the user's request, what goes on the wire (a parallel sub-session wraps
    it), the pause it was sent from, and the connection generation it was last written on."""

    request: Request
    wire: Request
    origin: Any
    sent_gen: Optional[int] = None


def _answers(request: Request, pause: Any) -> bool:
    """Whether ``pause`` is the target a ``continueTo`` asked for (a bare ``paused`` may be
    the whole answer when the target is where the session stands)."""
    return (type(pause) is Paused and isinstance(request, ContinueTo)
            and (request.slot, request.batch_index) == (pause.slot, pause.batch_index))


class StepGate:
    """The step state machine of one session (PROTOCOL.md §2 sequencing and §13): each pause
    is shown once, and each step executes at least once and at most once across any number
    of reconnects. Thread-safe: readers call ``admit``, the user's thread ``begin_step``,
    the link ``take_unsent``/``unsent``.

    A step is resent only on evidence that the server never got it: after a re-attach
    (a newer connection generation than the one the step was written on), the server
    announces again the very pause the step was sent from, with no frame of the step
    before it. A pause that is the same as the step's origin on the generation the step
    was written on is the server's re-announcement raced by a quick step: absorbed."""

    _STEP_FRAMES = frozenset({Status, Slot, ServerError, Paused, Completed})
    _PAUSES = frozenset({ReadyForContinue, Paused})

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self.last_seq: Optional[int] = None
        self.state = StepState.AWAITING_PAUSE
        self.pause: Any = None              # the last pause delivered
        self.step: Optional[Step] = None

    @property
    def completed(self) -> bool:
        return self.state is StepState.COMPLETED

    @property
    def step_outstanding(self) -> bool:
        return self.step is not None

    def see(self, seq: Optional[int]) -> bool:
        """Advance the cursor; False for a replayed frame at or below it."""
        with self._lock:
            if seq is not None:
                if self.last_seq is not None and seq <= self.last_seq:
                    return False
                self.last_seq = seq
            return True

    def admit(self, seq: Optional[int], event: Any, gen: int) -> Verdict:
        """What to do with one session frame that arrived on connection ``gen`` (reader)."""
        with self._lock:
            if not self.see(seq) or self.state is StepState.COMPLETED:
                return Verdict.DROP
            kind = type(event)              # exact types: isinstance on ABCs is slow
            if kind in self._PAUSES:
                return self._pause(event, gen)
            if kind is Completed:
                self._settle(StepState.COMPLETED, None)
                return Verdict.DELIVER
            if self.step is not None and kind in self._STEP_FRAMES:
                if kind is ServerError and event.rejects_request:
                    # the step did not run; the server announces its pause again
                    self._settle(StepState.AWAITING_PAUSE, None)
                else:
                    self.state = StepState.STEP_RUNNING
            elif self.state is StepState.HOLDING_PAUSE and (kind is Status or kind is Slot):
                # the server runs a step this gate did not send (another process's, seen
                # in the replay of an attach): the pause held is spent
                self._settle(StepState.AWAITING_PAUSE, None)
            return Verdict.DELIVER

    def _pause(self, pause: Any, gen: int) -> Verdict:
        state, step = self.state, self.step
        if state is StepState.HOLDING_PAUSE:
            return Verdict.DROP                 # rule 1: a pause the user already holds
        if step is not None and state is not StepState.STEP_RUNNING \
                and not _answers(step.request, pause) and pause == step.origin:
            if state is StepState.STEP_SENT and (step.sent_gen or 0) < gen:
                step.sent_gen = None            # rule 2: it never reached the server
                self.state = StepState.STEP_UNSENT
                return Verdict.RESEND
            return Verdict.DROP                 # the origin re-announced, the step on its way
        self.pause = pause
        self._settle(StepState.HOLDING_PAUSE, None)
        return Verdict.DELIVER

    def _settle(self, state: StepState, step: Optional[Step]) -> None:
        self.state, self.step = state, step
        self._changed.notify_all()

    def begin_step(self, request: Request, wire: Request, ready: Callable[[float], None],
                   deadline: Optional[float]) -> Step:
        """Record a step (user thread). Waits (sliced, until ``deadline``) while no pause has
        arrived yet, calling ``ready(remaining)`` each slice (it raises to stop the wait);
        raises ``SessionClosed`` after ``completed`` and ``SimsyncError`` while a step runs."""
        with self._changed:
            while self.state is StepState.AWAITING_PAUSE:
                remaining = SLICE if deadline is None else deadline - time.monotonic()
                ready(remaining)
                self._changed.wait(min(SLICE, max(0.0, remaining)))
            if self.state is StepState.COMPLETED:
                raise SessionClosed("the session has completed; no step can follow")
            if self.step is not None:
                raise SimsyncError(
                    f"a step ({self.step.request.METHOD}) is still running: wait for its "
                    "ReadyForContinue/Paused before sending the next one")
            step = Step(request, wire, self.pause)
            self._settle(StepState.STEP_UNSENT, step)
            return step

    def unanswered_from_before(self, gen: int) -> bool:
        """Whether a step written on an older connection than ``gen`` has no answer yet."""
        with self._lock:
            step = self.step
            return (self.state is StepState.STEP_SENT and step is not None
                    and (step.sent_gen or 0) < gen)

    def lost(self, gen: int) -> None:
        """The step written before connection ``gen`` never reached the server: send it
        again (the server is idle and said nothing after the resume)."""
        with self._lock:
            if self.unanswered_from_before(gen) and self.step is not None:
                self.step.sent_gen, self.state = None, StepState.STEP_UNSENT

    def take_unsent(self, gen: int) -> Optional[Step]:
        """The step to write now on connection ``gen``, marked sent there (link)."""
        with self._lock:
            step = self.step
            if self.state is not StepState.STEP_UNSENT or step is None:
                return None
            step.sent_gen, self.state = gen, StepState.STEP_SENT
            return step

    def unsent(self, step: Step, gen: int) -> None:
        """Writing ``step`` on ``gen`` failed: it is unsent again (unless already answered)."""
        with self._lock:
            if self.step is step and self.state is StepState.STEP_SENT \
                    and step.sent_gen == gen:
                step.sent_gen, self.state = None, StepState.STEP_UNSENT


Deliver = Callable[[Any, Optional[int]], None]   # (event, its seqId)


def _answered_pauses(events: List[Any]) -> set[int]:
    """Indexes of the pauses that a later frame of the same record shows were answered
    (a status or slot of the next step follows them)."""
    answered: set[int] = set()
    executed_after = False
    for index in range(len(events) - 1, -1, -1):
        kind = type(events[index])
        if (kind is ReadyForContinue or kind is Paused) and executed_after:
            answered.add(index)
        executed_after = executed_after or kind is Status or kind is Slot
    return answered


class FreshSocket:
    """A plain websocket-client socket for the detached close's exchange (user thread, in
    ``close_detached``): every send and receive ends by ``deadline`` (monotonic seconds,
    ``TimeoutError``) or after ``silence`` seconds without a byte (websocket-client's
    ``WebSocketTimeoutException``), so a connection that went dead costs at most
    ``silence`` and a fresh one is tried."""

    def __init__(self, ws: websocket.WebSocket, deadline: float, silence: float) -> None:
        self.ws = ws
        self.deadline = deadline
        self.silence = silence

    def bound(self) -> float:
        """Seconds the next operation may wait; ``TimeoutError`` past the deadline."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no answer before the deadline")
        return min(remaining, self.silence)

    def send(self, request: Any) -> None:
        self.ws.settimeout(self.bound())
        self.ws.send(encode_request(request))

    def pipelined(self, attach: Request, attached: type, then: Callable[[], List[Request]],
                  done: Callable[[Any], bool]) -> None:
        """Send ``attach`` and, without waiting for its answer (an ``attached`` frame), the
        requests ``then()`` lists; receive frames until ``done(event)``. A server takes a
        connection's requests in order (WebSocket messages are ordered; the local simulator
        handles each before it reads the next), so the exchange costs one round trip after
        the upgrade, not one per request: on a 0.3 s-latency network a detached close
        (attach, resume, close) would otherwise need more than a 2 s close timeout. A
        server that refused them before it took the attach (a request-level ``error``: no
        ``seqId``) gets ``then()`` once more after the attach answer. A fatal ``error``
        raises ``SimsyncError``, except ``sessionNotFound``: the server no longer holds the
        session (a close that reached it before, on the connection given up on), which is
        what the exchange was for."""
        self.send(attach)
        for request in then():
            self.send(request)
        is_attached = refused = resent = False
        while True:
            self.ws.settimeout(self.bound())
            seq, event = decode_response(self.ws.recv())
            if done(event):
                return
            if isinstance(event, ServerError):
                if event.kind == "sessionNotFound":
                    return
                if event.fatal:
                    raise SimsyncError(event.message)
                refused = refused or seq is None
            is_attached = is_attached or isinstance(event, attached)
            if is_attached and refused and not resent:
                resent = True
                for request in then():
                    self.send(request)


class SessionEnded(Fatal):
    """A fatal ``error`` frame ended the session; ``server_error`` is the typed error."""

    def __init__(self, message: str, server_error: ServerError) -> None:
        super().__init__(message)
        self.server_error = server_error


class ControlBase(Link):
    """What the single and the parallel control links share: URL and key, the create-or-
    attach handshake, the bounded handshake receive loop, frame decoding, what a lost
    connection means, and the step sender.

    Each connection that completes its handshake is a new *generation*. Steps are written
    only on a connection whose handshake is complete (``_live``): a step begun while the
    link is down (or between connect and resume) stays ``STEP_UNSENT`` and is written right
    after the next resume. Sending holds no lock (the link decides under its lock, then
    writes)."""

    def __init__(self, url: str, api_key: Optional[str], create: CreateSessionParams,
                 config: ClientConfig, before_resume: Callable[[float], bool]) -> None:
        self._url = urls.control_url(url)
        self.headers = [f"{name}: {value}" for name, value in config.extra_headers.items()]
        if api_key:
            self.headers.append(f"X-API-Key: {api_key}")
        self._create = create
        self._config = config
        self._before_resume = before_resume
        self._lock = threading.RLock()
        self._gen = 0                           # generation of the current connection
        self._channel: Optional[Channel] = None  # the current connection's channel
        self._live: Optional[Channel] = None    # set once its handshake completed
        self._create_sent = False
        self._writing = threading.local()       # set while this thread writes a frame
        self._resume_rtt = 0.0                  # the last resume's round trip (seconds)

    def url(self) -> str:
        return self._url

    @property
    def round_trip(self) -> float:
        """The last resume's round trip (seconds; 0 before any resume): how long a request
        of this link's answered at once by the server may take (``ack_wait_until``)."""
        return self._resume_rtt

    @property
    @abc.abstractmethod
    def created(self) -> bool:
        """Whether the server has confirmed the session (then reconnects attach)."""

    @property
    @abc.abstractmethod
    def finished(self) -> bool:
        """Whether nothing more is expected (completed or closing): a drop ends the link."""

    @abc.abstractmethod
    def gates(self) -> List[StepGate]:
        """The step gates of the session(s) this link carries."""

    @property
    def reconnectable(self) -> bool:  # type: ignore[override]
        return not self.created or self._create.sequenced

    def handshake(self, channel: Channel, attempt: int) -> None:
        """Create (first time) or attach + resume (reader thread; each reply waited for at
        most the handshake timeout), then write any step that is waiting to be sent."""
        with self._lock:
            self._gen += 1
            self._channel, self._live = channel, None
        if self.created:
            self._attach(channel)
        elif self._create_sent:
            raise Fatal(self._create_lost("the connection was lost"))
        else:
            self._create_sent = True
            try:
                self._create_session(channel)
            except Transient as exc:
                raise Fatal(self._create_lost(str(exc))) from exc
        with self._lock:
            if self._channel is channel:
                self._live = channel
        self.flush_steps()

    def _create_lost(self, cause: str) -> str:
        return (f"no answer to createBacktestSession ({cause}); simsync does not create "
                "twice, and a session may exist on the server until its detach window ends")

    def flush_steps(self) -> None:
        """Write every step that waits to be sent, if a live connection exists (any thread).
        A failed write leaves the step unsent; the next resume writes it."""
        with self._lock:
            channel, gen = self._live, self._gen
            if channel is None:
                return
            gates = self.gates()
            steps = [step for step in (gate.take_unsent(gen) for gate in gates)
                     if step is not None]
        for step in steps:
            try:
                self._write(channel, encode_request(step.wire))
            except Transient as exc:
                log.info("simsync %s: step not sent (%s); it is sent after the reconnect",
                         self.name, exc)
                for gate in gates:
                    gate.unsent(step, gen)
                return
            log.debug("simsync %s: step %s written on generation %d", self.name,
                      step.wire.METHOD, gen)

    def send_request(self, request: Request, deadline: Optional[float] = None) -> bool:
        """Write a non-step request on the live connection (best effort; any thread): False
        if none, if the write (or the wait for another thread's write) did not end by
        ``deadline`` (monotonic seconds; ``None``: no limit), or if this thread is itself in
        the middle of a write (a signal handler that closes while its thread was sending:
        waiting for that write would deadlock)."""
        channel = self._live
        if channel is None or getattr(self._writing, "active", False):
            return False
        try:
            self._write(channel, encode_request(request), deadline)
        except Transient as exc:
            log.info("simsync %s: %s not sent: %s", self.name, request.METHOD, exc)
            return False
        return True

    def _write(self, channel: Channel, text: str, deadline: Optional[float] = None) -> None:
        self._writing.active = True
        try:
            channel.send(text, deadline)
        finally:
            self._writing.active = False

    def close_detached(self, deadline: float) -> bool:
        """Close what the server still holds while this link's own connection is down (user
        thread, after the reader stopped): on a fresh socket, attach and close
        (``_close_exchange``). An attempt that fails (refused, reset) or goes silent for
        half the time the close had (at most ``dead_after``) is retried on another fresh
        socket (tenacity, short backoff) until ``deadline``: a connection that died silently
        does not use up the close, while a slow network, whose every round trip is shorter
        than that, still gets through. Without a detach window the server ended the session
        with its connection: nothing to do. Best effort: returns whether the server
        acknowledged."""
        budget = deadline - time.monotonic()
        if not self.created or not self._create.sequenced or budget < 0.1:
            return False
        silence = min(self._config.dead_after, budget / 2)
        retrying = tenacity.Retrying(
            stop=tenacity.stop_before_delay(max(0.0, budget - 0.05)),
            wait=tenacity.wait_exponential(multiplier=0.05, max=0.25),
            retry=tenacity.retry_if_exception_type((OSError, websocket.WebSocketException)),
            reraise=True)
        try:
            retrying(self._close_on_fresh_socket, deadline, silence)
        except (OSError, websocket.WebSocketException, SimsyncError) as exc:
            log.info("simsync %s: could not close the detached session: %s", self.name, exc)
            return False
        log.info("simsync %s: closed the detached session on a fresh connection", self.name)
        return True

    def _close_on_fresh_socket(self, deadline: float, silence: float) -> None:
        sslopt = {"ca_certs": self._config.ca_bundle} if self._config.ca_bundle else {}
        ws = websocket.WebSocket(sslopt=sslopt)
        watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), ws.shutdown)
        watchdog.start()                         # cuts a trickling server off at the deadline
        try:
            sock = FreshSocket(ws, deadline, silence)
            ws.connect(self._url, header=self.headers,  # type: ignore[no-untyped-call]
                       timeout=sock.bound(), suppress_origin=True)
            self._close_exchange(sock)
        finally:
            watchdog.cancel()
            watchdog.join()
            ws.shutdown()  # type: ignore[no-untyped-call]

    @abc.abstractmethod
    def _close_exchange(self, sock: FreshSocket) -> None:
        """Attach to the session(s) on ``sock`` and close what is still open, waiting for
        the acknowledgements (``FreshSocket.read_until``)."""

    @abc.abstractmethod
    def _create_session(self, channel: Channel) -> None:
        """Send the create request and wait for the session(s)."""

    @abc.abstractmethod
    def _attach(self, channel: Channel) -> None:
        """Re-attach with the cursors, then ``_resume``."""

    @abc.abstractmethod
    def _route(self, seq: Optional[int], event: Any) -> None:
        """Route one decoded frame."""

    def _resume(self, channel: Channel,
                other: Optional[Callable[[Tuple[Optional[int], Any]], None]] = None) -> None:
        """Rebuild the data plane (bounded), then ``resumeAttachedSession`` → ``success``;
        ``_resume_rtt`` is how long that answer took (seconds). The wait for the data plane
        is sliced, so a ``close()`` meanwhile ends it at once."""
        ready_by = time.monotonic() + self._config.handshake_timeout
        while not self._before_resume(min(SLICE, max(0.0, ready_by - time.monotonic()))):
            if channel.stopping:
                raise Transient("closed while the subscriptions were reconnecting")
            if time.monotonic() >= ready_by:
                break
        sent = time.monotonic()
        channel.send(encode_request(ResumeAttachedSession()))
        self._await(channel, Success, "success (resume)", other)
        self._resume_rtt = time.monotonic() - sent

    def _probe_lost_steps(self, channel: Channel) -> None:
        """After a resume (reader thread): a gate whose step was written on an older
        connection and got no frame back in the replay — the server either never got it
        (idle: it re-announces the pause, or, allowed by the protocol, stays silent) or is
        just starting it. Frames are routed for a quiet window; a gate still without a
        word of its step after it lost the step, which is sent again after the resume.

        The window is ``probe_window``: at least a second and twice the resume's own round
        trip (a slow link or server answers the resume slowly too), at most the handshake
        timeout."""
        gen = self._gen
        if not any(gate.unanswered_from_before(gen) for gate in self.gates()):
            return
        log.debug("simsync %s: probing for a lost step (%.2fs of quiet)", self.name,
                  self.probe_window())
        deadline = time.monotonic() + self.probe_window()
        while any(gate.unanswered_from_before(gen) for gate in self.gates()):
            remaining = deadline - time.monotonic()
            data = channel.poll(remaining) if remaining > 0 else None
            if data is None:
                break
            self.on_frame(data)
        for gate in self.gates():
            if gate.unanswered_from_before(gen):
                log.info("simsync %s: no word of the step after the resume; it was lost in "
                         "the drop and is sent again", self.name)
                gate.lost(gen)

    def probe_window(self) -> float:
        """Seconds of silence after a resume that mean a step was lost (see
        ``_probe_lost_steps``)."""
        return min(max(1.0, 2 * self._resume_rtt), self._config.handshake_timeout)

    def _await(self, channel: Channel, wanted: type, what: str,
               other: Optional[Callable[[Tuple[Optional[int], Any]], None]] = None,
               timeout: Optional[float] = None, progress: Optional[type] = None
               ) -> Tuple[Optional[int], Any]:
        """Receive until a ``wanted`` frame; the rest goes to ``other`` (default: routed).
        The reply is waited for against one deadline, ``timeout`` (default
        ``handshake_timeout``) from the call (right after the request was written): frames
        forwarded meanwhile do not extend it — except a ``progress`` frame (a parallel
        create's ``sessionCreated``), which starts a new one. Raises ``Transient`` when it
        passes. An ``error`` without ``seqId`` answers the handshake and is fatal here
        (except ``sessionOwnershipBusy``, worth a retry); one with a ``seqId`` is the
        session's own frame (a replay) and is routed like any other."""
        wait = timeout or self._config.handshake_timeout
        deadline = time.monotonic() + wait
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Transient(f"no {what} within {wait:g}s")
            seq, event = self._decode(channel.recv(remaining))
            if event is None:
                continue
            if isinstance(event, wanted):
                return seq, event
            if progress is not None and isinstance(event, progress):
                deadline = time.monotonic() + wait
            if isinstance(event, ServerError) and seq is None:
                if event.retryable_on_attach:
                    raise Transient(f"server busy: {event.message}")
                raise SessionEnded(f"the server refused the session while waiting for "
                                   f"{what}: {event.message}", event)
            if other is not None:
                other((seq, event))
            else:
                self._route(seq, event)

    def on_frame(self, data: Union[str, bytes]) -> None:
        """Route one frame of the read loop (reader thread)."""
        seq, event = self._decode(data)
        if event is not None:
            self._route(seq, event)

    def _decode(self, data: Union[str, bytes]) -> Tuple[Optional[int], Any]:
        try:
            return decode_response(data)
        except ProtocolError as exc:
            log.warning("simsync %s: ignoring a malformed frame: %s", self.name, exc)
            return None, None

    def _admit(self, gate: StepGate, seq: Optional[int], event: Any) -> bool:
        """Run one session frame through ``gate``; True when it is to be delivered. A lost
        step (rule 2) is written again at once when the connection is live."""
        verdict = gate.admit(seq, event, self._gen)
        if verdict is Verdict.RESEND:
            log.info("simsync %s: the step was lost in the drop; sending it again", self.name)
            self.flush_steps()
        return verdict is Verdict.DELIVER

    def on_down(self, reason: str) -> None:
        with self._lock:
            self._channel = self._live = None
        if self.finished:
            raise LinkDone()
        if not self.reconnectable:
            raise Fatal(f"the connection was lost ({reason}) and the session had no detach "
                        "window (disconnect_timeout_secs=0), so the server has ended it")


class ControlLink(ControlBase):
    """The ``/backtest`` link of one session: create on the first connect, attach + resume
    on every reconnect, then route frames through the ``StepGate`` to ``deliver``."""

    name = "control"

    def __init__(self, url: str, api_key: Optional[str], create: CreateSessionParams,
                 config: ClientConfig, deliver: Deliver,
                 before_resume: Callable[[float], bool] = lambda timeout: True,
                 attach: Optional[Tuple[SessionInfo, Optional[int]]] = None) -> None:
        """``attach``: bind to an existing session (its info and the cursor's ``seqId``):
        the first connection then attaches instead of creating."""
        super().__init__(url, api_key, create, config, before_resume)
        self._deliver = deliver
        self.gate = StepGate()
        self.info: Optional[SessionInfo] = None
        if attach is not None:
            self.info, self.gate.last_seq = attach
        self._closing = False
        self.close_acked = threading.Event()

    def __repr__(self) -> str:
        return f"ControlLink({self._url!r}, session={self.info and self.info.session_id!r})"

    @property
    def created(self) -> bool:
        return self.info is not None

    @property
    def finished(self) -> bool:
        return self.gate.completed or self._closing

    def gates(self) -> List[StepGate]:
        return [self.gate]

    # ------------------------------------------------------------------ reader thread

    def _create_session(self, channel: Channel) -> None:
        """Events before ``sessionCreated`` are routed once the session exists."""
        early: List[Tuple[Optional[int], Any]] = []
        channel.send(encode_request(CreateBacktestSession(self._create)))
        seq, created = self._await(channel, SessionCreated, "sessionCreated", early.append)
        self.gate.see(seq)
        self.info = SessionInfo(created.session_id, created.rpc_endpoint, created.task_id)
        for early_seq, event in early:
            self._route(early_seq, event)

    def _attach(self, channel: Channel) -> None:
        """Attach with the cursor, then resume. Without a cursor (``attach_session`` with
        none) the server replays the whole record: its pauses that later frames show were
        already answered (by the process that drove the session) are history, not pauses
        to step from, and are not delivered."""
        assert self.info is not None
        whole: Optional[List[Tuple[Optional[int], Any]]] = (
            [] if self.gate.last_seq is None else None)
        collect = None if whole is None else whole.append
        channel.send(encode_request(AttachBacktestSession(self.info.session_id,
                                                          self.gate.last_seq)))
        seq, attached = self._await(channel, SessionAttached, "sessionAttached", collect)
        self.gate.see(seq)
        self.info = SessionInfo(attached.session_id, attached.rpc_endpoint, attached.task_id)
        self._resume(channel, collect)
        if whole is None:
            self._probe_lost_steps(channel)
            return
        answered = _answered_pauses([event for _, event in whole])
        for index, (seq, event) in enumerate(whole):
            if index in answered:
                self.gate.see(seq)
            else:
                self._route(seq, event)

    def _route(self, seq: Optional[int], event: Any) -> None:
        kind = type(event)
        if kind is Success:
            if self._closing:
                self.close_acked.set()
            return
        if kind is SessionCreated or kind is SessionAttached:
            return
        if self._admit(self.gate, seq, event):
            if kind is ServerError and event.fatal:
                raise SessionEnded(f"the server ended the session: {event.message}", event)
            log.debug("simsync control: event %s seq=%s", kind.__name__, seq)
            self._deliver(event, seq)

    # ------------------------------------------------------------------ user thread

    def send_step(self, request: Request, ready: Callable[[float], None],
                  deadline: Optional[float]) -> None:
        """Record a step and write it if the connection is live (user thread); otherwise
        it is written after the next resume (PROTOCOL.md §13)."""
        self.gate.begin_step(request, request, ready, deadline)
        self.flush_steps()

    def send_close(self, deadline: float) -> bool:
        """Ask the server to close the session (user thread); ``close_acked`` is set on its
        ``success``. Returns whether the request was written by ``deadline`` (best effort:
        it never waits past it behind another thread's send)."""
        self._closing = True
        return self.send_request(CloseBacktestSession(), deadline)


    def _close_exchange(self, sock: FreshSocket) -> None:
        """``attachBacktestSession`` and ``closeBacktestSession`` at once
        (``FreshSocket.pipelined``) → ``sessionAttached``, ``success`` on a fresh socket
        (see ``ControlBase.close_detached``)."""
        assert self.info is not None
        sock.pipelined(AttachBacktestSession(self.info.session_id, self.gate.last_seq),
                       SessionAttached, lambda: [CloseBacktestSession()],
                       lambda event: isinstance(event, Success))
        self.close_acked.set()


class ControlSide(abc.ABC):
    """What a ``Session`` needs from its control channel: whether it is up, who the session
    is, a way to send a step, and a way to close. User-thread methods."""

    status: StatusCell

    @property
    @abc.abstractmethod
    def info(self) -> SessionInfo:
        """The server's description of the session."""

    @property
    @abc.abstractmethod
    def failure(self) -> Optional[BaseException]:
        """What ended the control connection, once it failed."""

    @abc.abstractmethod
    def start(self) -> None:
        """Block until the session exists (or raise); for sub-sessions it already does."""

    @abc.abstractmethod
    def send_step(self, request: Request, ready: Callable[[float], None],
                  deadline: Optional[float]) -> None:
        """Record one step and write it when the link is live (one outstanding at a time)."""

    @abc.abstractmethod
    def close(self, deadline: float) -> None:
        """Close the session on the server, then release what is this side's own."""


class SingleControl(ControlSide):
    """The control side of a single session: its own ``ControlLink`` and ``Connection``."""

    def __init__(self, link: ControlLink, config: ClientConfig, label: str) -> None:
        self.link = link
        self._config = config
        self.connection = Connection(link, config, label)
        self.status = self.connection.status

    @property
    def info(self) -> SessionInfo:
        if self.link.info is None:
            raise SimsyncError("the session has not been created")
        return self.link.info

    @property
    def failure(self) -> Optional[BaseException]:
        return self.connection.failure

    def start(self) -> None:
        """Connect and create (user thread); blocks through the start-up statuses."""
        self.connection.start()
        try:
            status = self.status.wait_for({State.UP}, None)
        except BaseException:
            self.close(time.monotonic() + self._config.close_timeout)
            raise
        if status.state is not State.UP and not self.link.created:
            self.connection.close(self._config.close_timeout)
            raise SessionCreateError(f"could not create the session: {status.reason}",
                                     cause=self.connection.failure)
        # Created, even if it already failed since: next_event raises the failure.

    def send_step(self, request: Request, ready: Callable[[float], None],
                  deadline: Optional[float]) -> None:
        self.link.send_step(request, ready, deadline)

    def close(self, deadline: float) -> None:
        """``closeBacktestSession`` → ``success`` (if created and up), then close the
        connection; a session whose connection is down gets bounded attempts on a fresh
        socket (``close_detached``), so it does not live on for its detach window. Bounded
        by ``deadline``, of which a share (``join_reserve``) is kept for the session's other
        connections to end their threads once this returns."""
        link = self.link
        detached_by = deadline - join_reserve(deadline)
        if not link.created:
            self.connection.close(max(0.0, deadline - time.monotonic()))
            return
        # the request and its ack on this connection get `ack_wait_until`; the rest, if it
        # does not come (the connection died unnoticed, or another thread's send holds it),
        # goes to tearing it down and a fresh one
        ack_by = ack_wait_until(deadline, link.round_trip)
        try:
            if self.status.value.state is State.UP and link.send_close(ack_by):
                while not link.close_acked.wait(SLICE) and time.monotonic() < ack_by \
                        and self.status.value.state is State.UP:
                    pass
        finally:            # an interrupt above still stops the connection
            self.connection.close(max(0.0, deadline - time.monotonic()))
        if not link.close_acked.is_set() and not isinstance(self.connection.failure,
                                                            SessionEnded):
            # down (reconnecting, out of budget, or ended by a drop after `completed`), or
            # the close could not be written (a signal handler that interrupted this
            # thread's own write): the server may hold the session for its detach window,
            # so bounded attempts on a fresh connection
            link.close_detached(detached_by)


def ack_wait_until(deadline: float, round_trip: float) -> float:
    """Until when (monotonic seconds) a close waits for the server's acknowledgement on its
    own connection before it tears that connection down and closes on a fresh one: a
    quarter of the time left to ``deadline``, or four of the link's round trips
    (``ControlBase.round_trip``, seconds) if longer, at most half. A connection can die
    without a sign (its peer reset behind a proxy, the client's side left open and silent):
    the close's request then goes nowhere, and the fresh connection needs its upgrade and
    one more round trip, which on a slow link took more than the half the wait used to
    leave it. An ack that is merely slow costs at most a fresh connection that finds the
    session already gone (``close_detached``)."""
    left = max(0.0, deadline - time.monotonic())
    return time.monotonic() + min(left / 2, max(left / 4, 4 * round_trip))


def join_reserve(deadline: float) -> float:
    """The share of a close's time left to ``deadline`` that the detached close (the part
    that may use all it gets) leaves for ending threads: a quarter, at most a second."""
    return min(1.0, max(0.0, deadline - time.monotonic()) / 4)


__all__: List[str] = ["ControlBase", "ControlLink", "ControlSide", "FreshSocket", "SessionEnded",
                      "SessionInfo", "SingleControl", "Step", "StepGate", "StepState", "Verdict",
                      "ack_wait_until", "join_reserve"]
