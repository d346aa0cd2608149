"""Fault plan of the local simulator: what to break, on which connection, and when.

A `FaultPlan` is shared between the test thread (which adds and inspects faults) and the
simulator's event-loop thread (which takes faults when a connection reaches a trigger). Every
public method takes the plan's lock, so both sides may call it at any time.

Triggers, counted per connection:

* ``after_frames=N``: right after the connection sent its N-th protocol frame (1-based; frames
  injected by a fault are not counted). ``N = 0``, or neither ``after_frames`` nor ``at``, fires
  as soon as the connection is open, before its first frame.
* ``at="after_session_created"``: right after ``sessionCreated`` (parallel: after
  ``sessionsCreatedV2``) was sent.
* ``at="after_continue_received"``: a ``continue``/``continueTo`` (or a ``…SessionV1`` step) frame
  was received and accepted; the step runs on in the background and no frame answering it has
  been sent yet when the fault fires.
* ``at="mid_replay"``: after half (rounded down) of an attach replay was sent.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Set

ACTIONS = ("drop", "stall", "malformed", "unknown_method", "delay")
CHANNELS = ("control", "pubsub")
POINTS = ("after_session_created", "after_continue_received", "mid_replay")
DEFAULT_MALFORMED = "{not json"
UNKNOWN_METHOD_FRAME = '{"method":"agentHeartbeat","params":{"x":1}}'


@dataclass
class Fault:
    """One fault. ``times`` is the number of connections it fires on before it is spent."""

    action: str
    channel: str = "control"
    after_frames: Optional[int] = None
    at: Optional[str] = None
    times: int = 1
    delay_secs: float = 0.0
    payload: Optional[str] = None
    fired: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; one of {ACTIONS}")
        if self.channel not in CHANNELS:
            raise ValueError(f"unknown fault channel {self.channel!r}; one of {CHANNELS}")
        if self.at is not None and self.at not in POINTS:
            raise ValueError(f"unknown fault point {self.at!r}; one of {POINTS}")
        if self.at is not None and self.after_frames is not None:
            raise ValueError("give either after_frames or at, not both")
        if self.times < 1:
            raise ValueError("times must be >= 1")

    @property
    def spent(self) -> bool:
        return self.fired >= self.times

    @property
    def on_open(self) -> bool:
        """True when the fault fires as soon as a connection opens."""
        return self.at is None and not self.after_frames


class FaultPlan:
    """Thread-safe set of faults plus connection refusals and key rejection."""

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self._lock = threading.Lock()
        self._faults: List[Fault] = []
        self._fired_on: Dict[int, Set[int]] = {}
        self._refusals: Dict[str, int] = {"control": 0, "pubsub": 0}
        self._reject_key = False
        self._fired = 0
        for fault in faults:
            self.add(fault)

    # -- test-thread API -------------------------------------------------------------------
    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def refuse_connects(self, k: int, channel: str = "control") -> None:
        """Answer the next ``k`` WebSocket upgrades on ``channel`` with HTTP 503."""
        if channel not in CHANNELS:
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
        """Forget every fault, refusal and key rejection (``fired`` is kept)."""
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

    def pending(self) -> List[Fault]:
        """Faults that are not spent yet."""
        with self._lock:
            return [f for f in self._faults if not f.spent]

    def refusals_left(self, channel: str = "control") -> int:
        with self._lock:
            return self._refusals[channel]

    # -- loop-thread API -------------------------------------------------------------------
    def take_refusal(self, channel: str) -> bool:
        """Consume one refusal for ``channel``; True when this upgrade must get HTTP 503."""
        with self._lock:
            if self._refusals.get(channel, 0) > 0:
                self._refusals[channel] -= 1
                return True
            return False

    def take_on_open(self, channel: str, conn_id: int) -> List[Fault]:
        return self._take(channel, conn_id, lambda f: f.on_open)

    def take_after_frames(self, channel: str, conn_id: int, frames: int) -> List[Fault]:
        return self._take(channel, conn_id, lambda f: bool(f.after_frames) and
                          f.after_frames == frames)

    def take_at(self, channel: str, conn_id: int, point: str) -> List[Fault]:
        return self._take(channel, conn_id, lambda f: f.at == point)

    def _take(self, channel: str, conn_id: int, match: Callable[[Fault], bool]) -> List[Fault]:
        taken: List[Fault] = []
        with self._lock:
            for fault in self._faults:
                if fault.spent or fault.channel != channel or not match(fault):
                    continue
                seen = self._fired_on.setdefault(id(fault), set())
                if conn_id in seen:
                    continue
                seen.add(conn_id)
                fault.fired += 1
                self._fired += 1
                taken.append(fault)
        return taken

