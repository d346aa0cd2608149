"""Per-session PubSub (PROTOCOL.md §10): subscriptions, the 100-slot replay buffer, end of stream.

A `PubSubHub` belongs to one session and lives on the event-loop thread. The session publishes
each executed transaction and each finished slot; the hub turns them into Solana-style
notifications queued on the subscribers' connections (queue order = send order, so every
notification of a session is sent before its ``subscriptionComplete``). `serve_pubsub` is the
read loop of one PubSub WebSocket.

Filters: ``transactionSubscribe {"programIds": [...], "accountKeys": [...]}`` (either list
matches; both empty = every transaction); ``accountDiffSubscribe {"programIds": [...]}`` (a diff
matches when its transaction invoked one of the programs or the account is owned by one);
``accountSubscribe``, ``programSubscribe``, ``logsSubscribe``, ``slotSubscribe``,
``signatureSubscribe`` as in Solana. Config ``replayFromSlot: S`` re-sends buffered
notifications from slot S on, right after the ack.
"""
from __future__ import annotations

import json
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, Union

from simsync.localsim.accounts import parse_pubkey
from simsync.localsim.chain import TX_ENCODINGS, TxRecord
from simsync.localsim.connection import Connection
from simsync.localsim.encodings import encode_record
from simsync.localsim.faults import DEFAULT_REPLAY_SLOTS, FaultPlan
from simsync.localsim.jsonrpc import (
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    SESSION_ENDED,
    JsonObj,
    RpcError,
    error,
    invalid_params,
    notification,
    request_id,
    result,
)

log = logging.getLogger(__name__)
REPLAY_SLOTS = DEFAULT_REPLAY_SLOTS


@dataclass(frozen=True)
class SlotEvent:
    slot: int
    parent: int


Event = Union[TxRecord, SlotEvent]
Render = Callable[[Event], List[Any]]


@dataclass
class Subscription:
    id: int
    conn: Connection
    notify: str
    render: Render
    once: bool = False


def _keys(value: Any, what: str) -> List[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_params(f"{what} must be a list of base58 strings")
    for key in value:
        try:
            parse_pubkey(key)
        except ValueError:
            raise invalid_params(f"invalid {what[:-1] if what.endswith('s') else what} "
                                 f"{key!r}") from None
    return list(value)


def _pubkey_param(params: List[Any], what: str) -> str:
    value = params[0] if params else None
    try:
        parse_pubkey(value)
    except ValueError:
        raise invalid_params(f"invalid {what} {value!r}") from None
    return str(value)


def _zero_account() -> JsonObj:
    return {"data": ["", "base64"], "executable": False, "lamports": 0,
            "owner": "11111111111111111111111111111111", "rentEpoch": 0, "space": 0}


def _render_transactions(flt: JsonObj, config: JsonObj, signature_field: bool) -> Render:
    """Each matching transaction as ``getTransaction`` returns it, in the subscription's
    ``encoding`` (default ``base64``, what the service sends when none is asked for)."""
    encoding = config.get("encoding") or "base64"
    if encoding not in TX_ENCODINGS:
        raise invalid_params(f"unsupported encoding {encoding!r}; one of {TX_ENCODINGS}")
    programs = _keys(flt.get("programIds", flt.get("program_ids")), "programIds")
    accounts = _keys(flt.get("accountKeys", flt.get("account_keys")), "accountKeys")

    def render(ev: Event) -> List[Any]:
        if not isinstance(ev, TxRecord):
            return []
        if programs or accounts:
            hit = (any(p in ev.executed.program_ids for p in programs) or
                   any(a in ev.account_keys for a in accounts))
            if not hit:
                return []
        if encoding == "jsonParsed":      # parsed instructions, as getTransaction gives them
            parsed = encode_record(ev, encoding, max_supported=0)
            out = {"slot": ev.slot, **parsed, "blockTime": ev.block_time}
            if signature_field:
                out["signature"] = ev.signature
            return [out]
        return [ev.result_json(encoding, signature_field)]
    return render


def _render_diffs(flt: JsonObj) -> Render:
    programs = _keys(flt.get("programIds", flt.get("program_ids")), "programIds")

    def render(ev: Event) -> List[Any]:
        if not isinstance(ev, TxRecord):
            return []
        invoked = not programs or any(p in ev.executed.program_ids for p in programs)
        out = []
        for diff in ev.diffs:
            if invoked or any(o in programs for o in diff.owners()):
                item: JsonObj = {"context": {"slot": ev.slot}, "account": diff.account,
                                 "signature": ev.signature}
                if diff.pre is not None:
                    item["pre"] = diff.pre
                if diff.post is not None:
                    item["post"] = diff.post
                out.append(item)
        return out
    return render


def _render_account(params: List[Any]) -> Render:
    key = _pubkey_param(params, "account")

    def render(ev: Event) -> List[Any]:
        if not isinstance(ev, TxRecord):
            return []
        return [{"context": {"slot": ev.slot}, "value": d.post or _zero_account()}
                for d in ev.diffs if d.account == key]
    return render


def _render_program(params: List[Any]) -> Render:
    program = _pubkey_param(params, "program id")

    def render(ev: Event) -> List[Any]:
        if not isinstance(ev, TxRecord):
            return []
        return [{"context": {"slot": ev.slot}, "value": {"pubkey": d.account, "account": d.post}}
                for d in ev.diffs if d.post is not None and d.post["owner"] == program]
    return render


def _render_logs(params: List[Any]) -> Render:
    flt = params[0] if params else "all"
    mentions: List[str] = []
    if isinstance(flt, dict):
        mentions = _keys(flt.get("mentions"), "mentions")
    elif flt not in ("all", "allWithVotes"):
        raise invalid_params("logsSubscribe filter must be 'all' or {'mentions': [...]}")

    def render(ev: Event) -> List[Any]:
        if not isinstance(ev, TxRecord):
            return []
        if mentions and not any(m in ev.account_keys for m in mentions):
            return []
        return [{"context": {"slot": ev.slot},
                 "value": {"signature": ev.signature, "err": ev.executed.err,
                           "logs": ev.meta["logMessages"]}}]
    return render


def _render_slots(ev: Event) -> List[Any]:
    if isinstance(ev, SlotEvent):
        return [{"parent": ev.parent, "root": ev.parent, "slot": ev.slot}]
    return []


def _render_signature(params: List[Any]) -> Render:
    sig = params[0] if params else None
    if not isinstance(sig, str):
        raise invalid_params("signatureSubscribe needs a signature")

    def render(ev: Event) -> List[Any]:
        if isinstance(ev, TxRecord) and ev.signature == sig:
            return [{"context": {"slot": ev.slot}, "value": {"err": ev.executed.err}}]
        return []
    return render


def build_render(method: str, params: List[Any],
                 signature_field: bool = False) -> Tuple[str, Render, bool]:
    """``(notification method, renderer, one-shot)`` for a subscribe request."""
    first = params[0] if params else {}
    config = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
    if method == "transactionSubscribe":
        return "transactionNotification", _render_transactions(
            _filter_obj(first), config, signature_field), False
    if method == "accountDiffSubscribe":
        return "accountDiffNotification", _render_diffs(_filter_obj(first)), False
    if method == "accountSubscribe":
        return "accountNotification", _render_account(params), False
    if method == "programSubscribe":
        return "programNotification", _render_program(params), False
    if method == "logsSubscribe":
        return "logsNotification", _render_logs(params), False
    if method == "slotSubscribe":
        return "slotNotification", _render_slots, False
    if method == "signatureSubscribe":
        return "signatureNotification", _render_signature(params), True
    raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")


def _filter_obj(value: Any) -> JsonObj:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_params("the filter must be an object")
    return value


class PubSubHub:
    """Subscriptions and replay buffer of one session. Event-loop thread only.

    The replay buffer keeps the last ``replay_window`` slots (the fault plan's knob, read when
    the session is created; default 100). While `hold` is on (``late_notifications``), live
    notifications are kept back (they are in the replay buffer already) until `release`."""

    def __init__(self, faults: Optional[FaultPlan] = None) -> None:
        self.faults = faults if faults is not None else FaultPlan()
        self.replay_window = self.faults.replay_slots()
        self._subs: Dict[int, Subscription] = {}
        self._next_id = 1
        self._events: Deque[Tuple[int, Event]] = deque()
        self._slots: Deque[int] = deque()
        self._held: List[Event] = []
        self.holding = False
        self.completed = False

    # -- publishing (session side) ---------------------------------------------------------
    def publish(self, slot: int, event: Event) -> None:
        self._remember(slot, event)
        if self.holding:
            self._held.append(event)
            return
        for sub in list(self._subs.values()):
            self._deliver(sub, event)

    def hold(self) -> None:
        """Keep live notifications back until `release`."""
        self.holding = True

    def release(self) -> None:
        """Send what `hold` kept back, in order, and stop holding."""
        held, self._held, self.holding = self._held, [], False
        for event in held:
            for sub in list(self._subs.values()):
                self._deliver(sub, event)

    def complete(self) -> None:
        """End of stream: every subscription gets ``subscriptionComplete`` (once)."""
        if self.completed:
            return
        self.completed = True
        for sub in list(self._subs.values()):
            self._end(sub)
        self._subs.clear()

    # -- subscribing (connection side) -----------------------------------------------------
    def subscribe(self, conn: Connection, req_id: Any, method: str, params: List[Any]) -> None:
        """Ack, replay from ``replayFromSlot``, then live (or end of stream when completed)."""
        signature = self.faults.setting("signature_field") is not None
        notify, render, once = build_render(method, params, signature)
        config = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
        replay_from = config.get("replayFromSlot", config.get("replay_from_slot"))
        if replay_from is not None and (isinstance(replay_from, bool) or
                                        not isinstance(replay_from, int)):
            raise invalid_params("replayFromSlot must be an integer")
        sub = Subscription(self._next_id, conn, notify, render, once)
        self._next_id += 1
        conn.point("before_subscribe_ack")
        conn.send(result(req_id, sub.id))
        conn.point("after_subscribe_ack")
        if config.get("compression") == "zstd":
            conn.call_after_pending(conn.compress_from_now)    # frames after the ack
        self._subs[sub.id] = sub
        if replay_from is not None:
            for slot, event in list(self._events):
                if slot >= replay_from and sub.id in self._subs:
                    self._deliver(sub, event)
        if self.completed:
            self._end(self._subs.pop(sub.id, sub))

    def unsubscribe(self, conn: Connection, sub_id: Any) -> bool:
        sub = self._subs.get(sub_id) if isinstance(sub_id, int) else None
        if sub is None or sub.conn is not conn:
            return False
        del self._subs[sub_id]
        return True

    def forget(self, conn: Connection) -> None:
        for sub_id in [s.id for s in self._subs.values() if s.conn is conn]:
            del self._subs[sub_id]

    # -- helpers ---------------------------------------------------------------------------
    def _deliver(self, sub: Subscription, event: Event) -> None:
        for value in sub.render(event):
            sub.conn.send(notification(sub.notify, {"subscription": sub.id, "result": value}),
                          notification=True)
            if sub.once:
                self._subs.pop(sub.id, None)
                return

    def _end(self, sub: Subscription) -> None:
        sub.conn.send(notification("subscriptionComplete", {"subscription": sub.id}))

    def _remember(self, slot: int, event: Event) -> None:
        if not self._slots or self._slots[-1] != slot:
            self._slots.append(slot)
            while len(self._slots) > self.replay_window:
                oldest = self._slots.popleft()
                while self._events and self._events[0][0] <= oldest:
                    self._events.popleft()
        self._events.append((slot, event))


HubLookup = Callable[[], Optional[PubSubHub]]


async def serve_pubsub(conn: Connection, lookup: HubLookup) -> None:
    """Read loop of one PubSub WebSocket; ``lookup`` finds the session's hub (None = unknown)."""
    hub: Optional[PubSubHub] = None
    try:
        while True:
            msg = await conn.receive()
            if msg is None:
                return
            hub = lookup()
            _handle(conn, hub, msg.data)
    finally:
        if hub is not None:
            hub.forget(conn)


def _handle(conn: Connection, hub: Optional[PubSubHub], data: Union[str, bytes]) -> None:
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        conn.send(error(None, RpcError(PARSE_ERROR, "Parse error")))
        return
    req_id = request_id(obj)
    try:
        if not isinstance(obj, dict) or not isinstance(obj.get("method"), str):
            raise RpcError(INVALID_REQUEST, "Invalid request")
        method: str = obj["method"]
        params = obj.get("params") or []
        if not isinstance(params, list):
            raise invalid_params("params must be an array")
        if hub is None:
            raise RpcError(SESSION_ENDED, "session not found")
        if method.endswith("Unsubscribe"):
            conn.send(result(req_id, hub.unsubscribe(conn, params[0] if params else None)))
        else:
            hub.subscribe(conn, req_id, method, params)
    except RpcError as exc:
        conn.send(error(req_id, exc))
