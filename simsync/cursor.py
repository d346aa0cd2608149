"""``SessionCursor``: how far the user has handled a session's events, as a small value to
persist (JSON or pickle) after each event, so that another process can attach to the session
(``Client.attach_session``) and see every later event exactly once."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from simsync.subscriptions import SubscriptionSpec

CURSOR_VERSION = 1


def _key_to_json(key: Any) -> Any:
    return list(key) if isinstance(key, tuple) else key


def _key_from_json(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


@dataclass(frozen=True)
class SubscriptionCursor:
    """One subscription: what it is (``spec``), the last slot it delivered to the user and
    the keys of what it delivered in that slot (a replay from that slot re-sends them)."""

    spec: SubscriptionSpec
    last_slot: int
    keys_at_last_slot: Tuple[Any, ...] = ()


@dataclass(frozen=True)
class SessionCursor:
    """A session as far as the user has handled it.

    ``control_seq`` is the ``seqId`` of the last control event returned by ``next_event``
    (``None``: none yet); ``slot`` the last slot announced; ``start_slot`` the session's
    first slot (``modify_program`` needs it); ``rpc_endpoint`` as the server gave it."""

    session_id: str
    rpc_endpoint: str
    start_slot: int
    control_seq: Optional[int]
    slot: int
    subscriptions: Tuple[SubscriptionCursor, ...] = field(default_factory=tuple)

    def to_json(self) -> str:
        """Compact JSON text (``SessionCursor.from_json`` reads it back)."""
        body = dataclasses.asdict(self)
        body["version"] = CURSOR_VERSION
        for sub in body["subscriptions"]:
            sub["keys_at_last_slot"] = [_key_to_json(k) for k in sub["keys_at_last_slot"]]
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SessionCursor:
        """Read ``to_json`` output; raises ``ValueError`` on anything else."""
        try:
            body = json.loads(text)
            if body.pop("version", None) != CURSOR_VERSION:
                raise ValueError(f"not a simsync session cursor of version {CURSOR_VERSION}")
            subs = tuple(SubscriptionCursor(SubscriptionSpec(**sub["spec"]),
                                            int(sub["last_slot"]),
                                            tuple(_key_from_json(k)
                                                  for k in sub["keys_at_last_slot"]))
                         for sub in body.pop("subscriptions"))
            return cls(subscriptions=subs, **body)
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a simsync session cursor: {exc}") from None


class StreamPosition:
    """Tracks, on the user's thread, what one subscription has delivered to the user."""

    __slots__ = ("spec", "last_slot", "keys")

    def __init__(self, spec: SubscriptionSpec, last_slot: int, keys: Tuple[Any, ...] = ()
                 ) -> None:
        self.spec = spec
        self.last_slot = last_slot
        self.keys: Dict[Any, None] = dict.fromkeys(keys)    # ordered, without repeats

    def delivered(self, event: Any) -> None:
        """Note one event handed to the user; idempotent (an event handed over again after
        an interrupted ``next_event`` is noted once)."""
        slot = event.slot
        if slot is None:
            return
        if slot != self.last_slot:
            self.last_slot, self.keys = slot, {}
        self.keys[event.dedup_key] = None

    def cursor(self) -> SubscriptionCursor:
        return SubscriptionCursor(self.spec, self.last_slot, tuple(self.keys))


__all__ = ["SessionCursor", "StreamPosition", "SubscriptionCursor"]
