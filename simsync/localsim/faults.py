"""Fault plan of the local simulator: what to break, on which connection, and when.

A `FaultPlan` is shared between the test thread (which adds and inspects faults) and the
simulator's event-loop thread (which takes faults when a connection reaches a trigger). Every
public method takes the plan's lock, so both sides may call it at any time.

**Channels** (``Fault.channel``): ``control`` (``/backtest`` WebSocket), ``pubsub`` (the
per-session PubSub WebSocket) and ``rpc`` (per-session JSON-RPC over HTTP). Connections of a
channel are numbered 1, 2, 3, … in the order their upgrade request (``rpc``: their HTTP request)
arrived, refused upgrades included. ``on_connection=K`` limits a fault to the K-th one; without
it a fault takes the first connections that reach its trigger, ``times`` of them (``times=0``:
every connection).

**Triggers**, counted per connection:

* ``after_frames=N``: right after the connection sent its N-th protocol frame (1-based; frames
  injected by a fault are not counted). ``N = 0``, or neither ``after_frames`` nor ``at``, fires
  as soon as the connection is open, before its first frame.
* ``at=POINT``, one of `POINTS`: ``after_session_created`` (after ``sessionCreated``; parallel:
  after ``sessionsCreatedV2``), ``mid_create`` (parallel: between the first and the second
  ``sessionCreated``), ``after_continue_received`` (a step was received and accepted; the step
  runs on and no frame answering it has been sent yet), ``mid_replay`` (after half, rounded down,
  of an attach replay), ``after_session_attached`` (after ``sessionAttached`` /
  ``parallelSessionAttachedV2``, before the replay), ``after_resume_success`` (after the
  ``success`` answering ``resumeAttachedSession``), ``after_subscribe_ack`` (PubSub: after a
  subscribe ack, before its replay), and the ``before_…`` points ``before_session_created``,
  ``before_session_attached``, ``before_subscribe_ack`` (used by ``slow_reply``).

**Actions** (see `ACTION_HELP` for one line each; the README's local-simulator section has the
full table): connection breaks (``drop`` with ``how="fin"|"rst"``, ``close`` with
``close_code``/``close_reason``, ``stall``, ``stop_reading``), frames (``malformed``,
``unknown_method``, ``delay``, ``invalid_utf8``, ``binary``, ``oversize``, ``fragment``,
``duplicate``), the upgrade (``refuse``, ``silent``, ``trickle_upgrade``), session behaviour
(``error``, ``reject_step``, ``reannounce``, ``slow_reply``, ``expire_detach``), liveness
(``heartbeat``), data plane (``replay_window``, ``late_notifications``, ``signature_field``) and
RPC (``rpc_delay``, ``rpc_trickle``, ``rpc_status``, ``rpc_non_json``).

`parse_fault` reads the compact form used by ``simsync serve --fault`` and
``python -m simsync.localsim --fault``: ``ACTION[:KEY=VALUE[,KEY=VALUE…]]``, e.g.
``drop:after_frames=5,how=rst,on_connection=2`` or ``refuse:status=429,retry_after=3``.

Every fault that fires is recorded: `FaultPlan.history` lists `FiredFault` entries (action,
channel, connection number, trigger, time) for tests to read.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Set

CONNECTION_ACTIONS = ("drop", "close", "stall", "stop_reading", "malformed", "unknown_method",
                      "delay", "invalid_utf8", "binary", "oversize", "fragment", "duplicate",
                      "heartbeat", "slow_reply")
UPGRADE_ACTIONS = ("refuse", "silent", "trickle_upgrade")
SESSION_ACTIONS = ("error", "reject_step", "reannounce", "expire_detach", "late_notifications")
SETTING_ACTIONS = ("replay_window", "signature_field")
RPC_ACTIONS = ("rpc_delay", "rpc_trickle", "rpc_status", "rpc_non_json")
ACTIONS = CONNECTION_ACTIONS + UPGRADE_ACTIONS + SESSION_ACTIONS + SETTING_ACTIONS + RPC_ACTIONS
CHANNELS = ("control", "pubsub", "rpc")
POINTS = ("after_session_created", "after_continue_received", "mid_replay", "mid_create",
          "after_session_attached", "after_resume_success", "after_subscribe_ack",
          "before_session_created", "before_session_attached", "before_subscribe_ack")
HOW = ("fin", "rst")
REANNOUNCE_MODES = ("default", "always", "never")
TRICKLE_PARTS = ("headers", "body")
DEFAULT_MALFORMED = "{not json"
UNKNOWN_METHOD_FRAME = '{"method":"agentHeartbeat","params":{"x":1}}'
DEFAULT_REPLAY_SLOTS = 100
#: Server-side copy of PROTOCOL.md §9's "fatal" column (the server stops the session after
#: sending one of these).
FATAL_ERRORS = frozenset({
    "noMoreBlocks", "bundleNotFound", "noProducedBlocksInRange", "advanceSlotFailed",
    "finalizeSlotFailed", "initializingSysvarsFailed", "internal", "clerkError",
    "sessionNotFound", "sessionOwnerMismatch", "sessionNameTaken"})

ACTION_HELP: Dict[str, str] = {
    "drop": "break the TCP connection without a WebSocket close; how=fin (default) or rst "
            "(SO_LINGER 0: the peer sees ECONNRESET)",
    "close": "WebSocket close with close_code (default 1000) and close_reason",
    "stall": "half-open: send nothing more, answer no ping, keep the socket open",
    "stop_reading": "stop reading the socket (a large client send blocks) while still writing",
    "malformed": "inject a text frame that is not JSON (payload=TEXT, default '{not json')",
    "unknown_method": "inject a well-formed frame with an unknown method",
    "delay": "sleep delay_secs before every later frame",
    "invalid_utf8": "inject a text frame whose payload is not valid UTF-8",
    "binary": "send every later protocol frame as a binary frame (UTF-8 JSON)",
    "oversize": "inject a well-formed unknown-method frame of size bytes",
    "fragment": "send every later protocol frame fragmented into frames of size bytes",
    "duplicate": "pubsub: send every later notification twice",
    "heartbeat": "ping every interval_secs; drop (FIN) a peer that has not answered a ping "
                 "within timeout_secs",
    "slow_reply": "hold all output for delay_secs at the trigger (use at=before_session_created"
                  ", before_session_attached or before_subscribe_ack): the request was "
                  "processed, its reply is late",
    "refuse": "answer the upgrade with HTTP status (default 503; 429 adds Retry-After: "
              "retry_after)",
    "silent": "accept the TCP connection and the upgrade request, never answer",
    "trickle_upgrade": "send the 101 upgrade response one byte every interval_secs, then FIN",
    "error": "session: send error (a §9 variant name or JSON, default simulationError) while "
             "executing slot; a fatal variant ends the session",
    "reject_step": "session: reject the step-th step request (default 1) with error (default "
                   "invalidTransactionFormat), then re-send the pause",
    "reannounce": "session: pause re-announce rule on resume, mode=default (only when the "
                  "client already had the pause), always, never",
    "expire_detach": "session: on the next control drop the detach window is window_secs "
                     "(default 0: the session is destroyed at once)",
    "late_notifications": "pubsub: hold the notifications of slot (default: the next slot "
                          "executed) until the control link's next pause was sent",
    "replay_window": "pubsub: keep slots slots of notifications for replayFromSlot "
                     "(default 100)",
    "signature_field": "pubsub: add the non-standard top-level signature to transaction "
                       "notifications (off by default, as on a standard Solana server)",
    "rpc_delay": "rpc: answer after delay_secs",
    "rpc_trickle": "rpc: send the response part=body (default) or part=headers one byte every "
                   "interval_secs",
    "rpc_status": "rpc: answer HTTP status (default 503) without running the request",
    "rpc_non_json": "rpc: answer 200 with an HTML body (not JSON)",
}
_CHANNEL_OF = {**{a: "rpc" for a in RPC_ACTIONS},
               "duplicate": "pubsub", "late_notifications": "pubsub",
               "replay_window": "pubsub", "signature_field": "pubsub"}
_CONTROL_ONLY = ("error", "reject_step", "reannounce", "expire_detach")
_VALID_CLOSE = set(range(1000, 1004)) | set(range(1007, 1015)) | set(range(3000, 5000))


@dataclass
class Fault:
    """One fault. ``times`` is the number of connections (session faults: occasions) it fires
    on before it is spent; 0 = unlimited. See the module doc for actions and triggers."""

    action: str
    channel: str = "control"
    after_frames: Optional[int] = None
    at: Optional[str] = None
    times: int = 1
    delay_secs: float = 0.0
    payload: Optional[str] = None
    on_connection: Optional[int] = None
    how: str = "fin"
    close_code: int = 1000
    close_reason: str = ""
    status: int = 503
    retry_after: Optional[int] = None
    interval_secs: float = 0.05
    timeout_secs: float = 1.0
    size: int = 0
    slot: Optional[int] = None
    error: str = ""
    step: int = 1
    mode: str = "default"
    window_secs: float = 0.0
    slots: int = DEFAULT_REPLAY_SLOTS
    part: str = "body"
    fired: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; one of {ACTIONS}")
        if self.action in _CHANNEL_OF and self.channel == "control":
            self.channel = _CHANNEL_OF[self.action]  # the only channel the action exists on
        if self.channel not in CHANNELS:
            raise ValueError(f"unknown fault channel {self.channel!r}; one of {CHANNELS}")
        if self.action in _CHANNEL_OF and self.channel != _CHANNEL_OF[self.action]:
            raise ValueError(f"{self.action} is a {_CHANNEL_OF[self.action]} fault")
        if self.action in _CONTROL_ONLY and self.channel != "control":
            raise ValueError(f"{self.action} is a control (session) fault")
        if self.channel == "rpc" and self.action not in RPC_ACTIONS:
            raise ValueError(f"the rpc channel takes {RPC_ACTIONS}")
        if self.at is not None and self.at not in POINTS:
            raise ValueError(f"unknown fault point {self.at!r}; one of {POINTS}")
        if self.at is not None and self.after_frames is not None:
            raise ValueError("give either after_frames or at, not both")
        if self.times < 0:
            raise ValueError("times must be >= 0 (0 = unlimited)")
        if self.on_connection is not None and self.on_connection < 1:
            raise ValueError("on_connection counts from 1")
        if self.how not in HOW:
            raise ValueError(f"how must be one of {HOW}")
        if self.action == "close" and self.close_code not in _VALID_CLOSE:
            raise ValueError(f"close_code {self.close_code} cannot be sent (RFC 6455 §7.4)")
        if self.mode not in REANNOUNCE_MODES:
            raise ValueError(f"mode must be one of {REANNOUNCE_MODES}")
        if self.part not in TRICKLE_PARTS:
            raise ValueError(f"part must be one of {TRICKLE_PARTS}")
        if self.action in ("oversize", "fragment") and self.size < 1:
            raise ValueError(f"{self.action} needs size >= 1 (bytes)")
        if self.action in ("refuse", "rpc_status") and not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status (100..599)")
        if self.action == "heartbeat" and (self.interval_secs <= 0 or self.timeout_secs <= 0):
            raise ValueError("heartbeat needs interval_secs > 0 and timeout_secs > 0")
        if self.action == "replay_window" and self.slots < 0:
            raise ValueError("slots must be >= 0")
        if self.action == "reject_step" and self.step < 1:
            raise ValueError("step counts from 1")
        if self.delay_secs < 0 or self.interval_secs < 0 or self.window_secs < 0:
            raise ValueError("times in seconds must be >= 0")

    @property
    def spent(self) -> bool:
        return self.times != 0 and self.fired >= self.times

    @property
    def on_open(self) -> bool:
        """True when the fault fires as soon as a connection opens."""
        return self.at is None and not self.after_frames

    def error_params(self, slot: Optional[int] = None, default: str = "simulationError") -> Any:
        """The §9 tagged value this fault injects (``error`` = a variant name or JSON)."""
        text = self.error or default
        if text.lstrip().startswith(("{", '"')):
            return json.loads(text)
        fields: Dict[str, Any] = {"error": "injected by the fault plan"}
        if text in ("advanceSlotFailed", "finalizeSlotFailed", "initializingSysvarsFailed",
                    "invalidBlockhashFormat"):
            fields["slot"] = slot
        elif text in ("invalidTransactionEncoding", "invalidTransactionFormat"):
            fields["index"] = 0
        elif text in ("bundleNotFound", "noProducedBlocksInRange"):
            fields = {"start_slot": slot, "end_slot": slot}
        elif text in ("noMoreBlocks", "sessionOwnerMismatch"):
            return text
        return {text: fields}

    @property
    def error_variant(self) -> str:
        params = self.error_params()
        return params if isinstance(params, str) else next(iter(params), "")


@dataclass(frozen=True)
class FiredFault:
    """One firing, as recorded for tests: ``connection`` is the channel's connection number
    (1-based; None for session faults), ``trigger`` a short text (``after_frames=3``,
    ``at=mid_replay``, ``open``, ``upgrade``, ``slot=400000002``, …), ``time`` monotonic."""

    action: str
    channel: str
    connection: Optional[int]
    trigger: str
    time: float


def parse_fault(spec: str) -> Fault:
    """A `Fault` from ``ACTION[:KEY=VALUE[,KEY=VALUE…]]``; raise ValueError naming the problem.

    Keys are `Fault`'s field names (``after_frames``, ``at``, ``channel``, ``on_connection``,
    ``how``, ``close_code``, …); values are converted to the field's type (int, float, str).
    """
    action, _, rest = spec.strip().partition(":")
    kwargs: Dict[str, Any] = {}
    types = {f.name: f.type for f in dataclasses.fields(Fault) if f.name not in ("fired",
                                                                                  "action")}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in types:
            raise ValueError(f"bad fault option {item!r} in {spec!r}; options: "
                             f"{', '.join(sorted(types))}")
        kind = str(types[key])
        try:
            if "int" in kind:
                kwargs[key] = int(value)
            elif "float" in kind:
                kwargs[key] = float(value)
            else:
                kwargs[key] = value
        except ValueError:
            raise ValueError(f"fault option {key} needs a number, got {value!r}") from None
    return Fault(action.strip(), **kwargs)


def spec_help() -> str:
    """One line per action, for ``--help``."""
    return "\n".join(f"  {name}: {text}" for name, text in ACTION_HELP.items())


class FaultPlan:
    """Thread-safe set of faults plus connection refusals and key rejection."""

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self._lock = threading.Lock()
        self._faults: List[Fault] = []
        self._fired_on: Dict[int, Set[Any]] = {}
        self._refusals: Dict[str, int] = {"control": 0, "pubsub": 0}
        self._reject_key = False
        self._fired = 0
        self._connections: Dict[str, int] = {c: 0 for c in CHANNELS}
        self._history: List[FiredFault] = []
        for fault in faults:
            self.add(fault)

    # -- test-thread API -------------------------------------------------------------------
    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def refuse_connects(self, k: int, channel: str = "control") -> None:
        """Answer the next ``k`` WebSocket upgrades on ``channel`` with HTTP 503."""
        if channel not in ("control", "pubsub"):
            raise ValueError(f"unknown channel {channel!r}")
        with self._lock:
            self._refusals[channel] = max(0, k)

    @property
    def reject_key(self) -> bool:
        with self._lock:
            return self._reject_key

    @reject_key.setter
    def reject_key(self, value: bool) -> None:
        with self._lock:
            self._reject_key = bool(value)

    def clear(self) -> None:
        """Forget every fault, refusal and key rejection (``fired``, the history and the
        connection numbering are kept: ``on_connection`` counts over the simulator's life)."""
        with self._lock:
            self._faults.clear()
            self._fired_on.clear()
            self._refusals = {"control": 0, "pubsub": 0}
            self._reject_key = False

    @property
    def fired(self) -> int:
        """How many times any fault fired (refusals and key rejections not included)."""
        with self._lock:
            return self._fired

    @property
    def history(self) -> List[FiredFault]:
        """Every firing so far, oldest first."""
        with self._lock:
            return list(self._history)

    def fired_on(self, action: str, channel: Optional[str] = None) -> List[Optional[int]]:
        """Connection numbers on which ``action`` fired (in order)."""
        return [f.connection for f in self.history
                if f.action == action and (channel is None or f.channel == channel)]

    def connections(self, channel: str) -> int:
        """How many connections (upgrade or HTTP requests) ``channel`` has seen."""
        with self._lock:
            return self._connections[channel]

    def pending(self) -> List[Fault]:
        """Faults that are not spent yet."""
        with self._lock:
            return [f for f in self._faults if not f.spent]

    def refusals_left(self, channel: str = "control") -> int:
        with self._lock:
            return self._refusals[channel]

    # -- loop-thread API -------------------------------------------------------------------
    def next_connection(self, channel: str) -> int:
        """Number the next connection (upgrade attempt or RPC request) of ``channel``."""
        with self._lock:
            self._connections[channel] += 1
            return self._connections[channel]

    def take_refusal(self, channel: str) -> bool:
        """Consume one refusal for ``channel``; True when this upgrade must get HTTP 503."""
        with self._lock:
            if self._refusals.get(channel, 0) > 0:
                self._refusals[channel] -= 1
                return True
            return False

    def take_upgrade(self, channel: str, number: int) -> List[Fault]:
        return self._take(channel, number, number, "upgrade",
                          lambda f: f.action in UPGRADE_ACTIONS)

    def take_rpc(self, number: int) -> List[Fault]:
        return self._take("rpc", number, number, "request", lambda f: f.action in RPC_ACTIONS)

    def take_on_open(self, channel: str, conn_id: int, number: int) -> List[Fault]:
        return self._take(channel, conn_id, number, "open",
                          lambda f: f.action in CONNECTION_ACTIONS and f.on_open)

    def frame_faults(self, channel: str) -> bool:
        """Whether an unspent fault of ``channel`` may fire after a frame count (the
        connection writer sends queued frames one at a time only then)."""
        with self._lock:
            return any(not f.spent and f.channel == channel and f.after_frames
                       and f.action in CONNECTION_ACTIONS for f in self._faults)

    def take_after_frames(self, channel: str, conn_id: int, frames: int,
                          number: Optional[int] = None) -> List[Fault]:
        if not self._faults:        # the fast path: no fault configured at all
            return []
        return self._take(channel, conn_id, number, f"after_frames={frames}",
                          lambda f: f.action in CONNECTION_ACTIONS and bool(f.after_frames)
                          and f.after_frames == frames)

    def take_at(self, channel: str, conn_id: int, point: str,
                number: Optional[int] = None) -> List[Fault]:
        return self._take(channel, conn_id, number, f"at={point}",
                          lambda f: f.action in CONNECTION_ACTIONS and f.at == point)

    def take_session(self, action: str, key: Any, trigger: str,
                     match: Callable[[Fault], bool] = lambda f: True) -> Optional[Fault]:
        """The first unspent session fault ``action`` matching ``match``; ``key`` identifies
        the occasion (a fault fires at most once per key)."""
        if not self._faults:        # the fast path: no fault configured at all
            return None
        taken = self._take("control" if action in _CONTROL_ONLY else "pubsub", key, None,
                           trigger, lambda f: f.action == action and match(f))
        return taken[0] if taken else None

    def setting(self, action: str) -> Optional[Fault]:
        """The last added fault of a setting action (``replay_window``, ``signature_field``)
        or None; reading it records nothing."""
        with self._lock:
            found = [f for f in self._faults if f.action == action]
        return found[-1] if found else None

    def replay_slots(self) -> int:
        fault = self.setting("replay_window")
        return DEFAULT_REPLAY_SLOTS if fault is None else fault.slots

    def record(self, fault: Fault, channel: str, number: Optional[int], trigger: str) -> None:
        """Record a firing decided outside `_take` (settings applied to a session)."""
        with self._lock:
            self._history.append(FiredFault(fault.action, channel, number, trigger,
                                            time.monotonic()))

    def _take(self, channel: str, conn_key: Any, number: Optional[int], trigger: str,
              match: Callable[[Fault], bool]) -> List[Fault]:
        taken: List[Fault] = []
        with self._lock:
            for fault in self._faults:
                if fault.spent or fault.channel != channel or not match(fault):
                    continue
                if fault.on_connection is not None and fault.on_connection != number:
                    continue
                seen = self._fired_on.setdefault(id(fault), set())
                if conn_key in seen:
                    continue
                seen.add(conn_key)
                fault.fired += 1
                self._fired += 1
                self._history.append(FiredFault(fault.action, channel, number, trigger,
                                                time.monotonic()))
                taken.append(fault)
        return taken

