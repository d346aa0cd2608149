"""Encode requests to canonical JSON; decode every accepted response form (PROTOCOL.md).

Decoding runs on every frame, so it uses explicit constructors keyed by method, never the
generic dataclasses-json ``from_dict``. Anything malformed raises :class:`ProtocolError`
with a short excerpt of the frame, and nothing else.

JSON is parsed by msgspec (C, about 2.5x ``json.loads``) with ``json.loads`` as the reference:
every text msgspec refuses goes to ``json.loads``, which accepts it or raises (see
:func:`loads`). What msgspec accepts it reads as ``json.loads`` does (Python ints of any size,
the last of duplicate keys, the same floats); what only the reference accepts (``NaN``,
``Infinity``, numbers beyond the float range, lone surrogates, UTF-16/32 or BOM-prefixed
bytes) still decodes, through the reference. ``tests/test_codec_fast.py`` checks the two
against each other.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

try:
    import msgspec.json as _msgspec_json
except ImportError:  # pragma: no cover - msgspec is a dependency; the reference still works
    _msgspec_json = None  # type: ignore[assignment]

from simsync.errors import ProtocolError
from simsync.protocol.notifications import NOTIFICATION_TYPES
from simsync.protocol.server_errors import ServerError, snake_case, variant_name
from simsync.protocol.types import (
    CREATE_FIELDS,
    AccountData,
    AccountDiff,
    AttachBacktestSession,
    AttachParallelControlSessionV2,
    AvailableRange,
    CloseBacktestSession,
    CloseSessionV1,
    Completed,
    Continue,
    ContinueParams,
    ContinueSessionV1,
    ContinueTo,
    ContinueToSessionV1,
    CreateBacktestSession,
    CreateSessionParams,
    DiscoveryBatch,
    EncodedData,
    Notification,
    ParallelSessionAttachedV2,
    Paused,
    ReadyForContinue,
    Request,
    Response,
    ResumeAttachedSession,
    SessionAttached,
    SessionCreated,
    SessionEventV1,
    SessionEventV2,
    SessionsCreated,
    SessionsCreatedV2,
    Slot,
    Status,
    Subscribe,
    SubscriptionAck,
    SubscriptionComplete,
    SubscriptionRefused,
    Success,
    Summary,
    Transaction,
    UnknownResponse,
)

Frame = Union[str, bytes, bytearray]
Decoded = Union[Response, ServerError]

_reference_loads = json.loads
_fast_loads: Optional[Callable[[Frame], Any]] = (
    None if _msgspec_json is None else _msgspec_json.Decoder().decode)

_FAST_TYPES = frozenset({str, bytes, bytearray})


def loads(text: Frame) -> Any:
    """The JSON value of ``text`` (``str``, or UTF-8/16/32 ``bytes``/``bytearray``), exactly as
    ``json.loads`` reads it: msgspec first, ``json.loads`` for whatever msgspec refuses.
    Raises what ``json.loads`` raises (``ValueError`` and its ``JSONDecodeError`` and
    ``UnicodeDecodeError``, ``RecursionError``, ``TypeError``). Any thread; never blocks.

    One known difference, at the interpreter's recursion limit: a value nested within 3 levels
    of the depth at which ``json.loads`` raises ``RecursionError`` (about 990 with the default
    limit) is read, since ``json.loads`` spends 3 Python frames of its own before it parses."""
    if _fast_loads is not None and type(text) in _FAST_TYPES:   # msgspec reads memoryviews too
        try:
            return _fast_loads(text)
        except (ValueError, TypeError, RecursionError):
            pass                    # msgspec.DecodeError and UnicodeEncodeError are ValueErrors
    return _reference_loads(text)
_READY = ReadyForContinue()
_SUCCESS = Success()


class _Bad(Exception):
    """Raised inside a decoder; turned into ProtocolError with the frame's excerpt."""


# ----------------------------------------------------------------------------- encoding


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def encode_request(request: Request) -> str:
    """The canonical compact JSON of a client→server frame."""
    if isinstance(request, Subscribe):
        params: List[Any] = [request.filter, request.config]
        if request.filter is None:          # e.g. slotSubscribe: no filter parameter
            params = [{}, request.config] if request.config else []
        return _dumps({"jsonrpc": "2.0", "id": request.id, "method": request.kind,
                       "params": params})
    params = request.params()
    if params is None:
        return _dumps({"method": request.METHOD})
    return _dumps({"method": request.METHOD, "params": params})


def encode_response(response: Decoded, seq_id: Optional[int] = None) -> str:
    """The canonical server form of a response (for local servers, tests and benchmarks)."""
    return _dumps(response_wire(response, seq_id))


def response_wire(response: Decoded, seq_id: Optional[int] = None) -> Dict[str, Any]:
    """The canonical frame object of a response."""
    if isinstance(response, (Transaction, AccountDiff, Notification, SubscriptionComplete,
                             SubscriptionAck, SubscriptionRefused)):
        return _pubsub_wire(response)
    if isinstance(response, UnknownResponse):
        frame: Dict[str, Any] = {"method": response.method, "params": response.params}
    else:
        method = "error" if isinstance(response, ServerError) else response.METHOD
        params = _RESPONSE_PARAMS[type(response)](response)
        frame = {"method": method} if params is None else {"method": method, "params": params}
    return frame if seq_id is None else {"seqId": seq_id, **frame}


def _summary_wire(summary: Optional[Summary]) -> Optional[Dict[str, Any]]:
    if summary is None:
        return None
    out = {wire: getattr(summary, name) for wire, name in _SUMMARY_WIRE.items()
           if wire[0].islower() and "_" not in wire}
    out.update(summary.extra)
    return out


def _error_wire(error: ServerError) -> Any:
    if error.raw is not None:
        return error.raw
    return {error.kind: error.fields} if error.fields else error.kind


_RESPONSE_PARAMS: Dict[type, Callable[[Any], Any]] = {
    SessionCreated: lambda r: {"session_id": r.session_id, "rpc_endpoint": r.rpc_endpoint,
                               "task_id": r.task_id},
    SessionAttached: lambda r: {"session_id": r.session_id, "rpc_endpoint": r.rpc_endpoint,
                                "task_id": r.task_id},
    SessionsCreatedV2: lambda r: {k: v for k, v in (
        ("control_session_id", r.control_session_id), ("session_ids", r.session_ids),
        ("task_ids", r.task_ids), ("start_slots", r.start_slots),
        ("end_slots", r.end_slots)) if v is not None},
    SessionsCreated: lambda r: {"session_ids": r.session_ids},
    ParallelSessionAttachedV2: lambda r: {"control_session_id": r.control_session_id,
                                          "session_ids": r.session_ids, "task_ids": r.task_ids},
    ReadyForContinue: lambda r: None,
    Success: lambda r: None,
    Slot: lambda r: r.slot,
    Paused: lambda r: {"slot": r.slot, "batchIndex": r.batch_index},
    DiscoveryBatch: lambda r: {"slot": r.slot, "batchIndex": r.batch_index,
                               "matched": r.matched, "transactions": r.transactions},
    Status: lambda r: {"status": r.status},
    ServerError: _error_wire,
    Completed: lambda r: ({"summary": _summary_wire(r.summary)} if r.agent_stats is None else
                          {"summary": _summary_wire(r.summary), "agent_stats": r.agent_stats}),
    SessionEventV2: lambda r: {"session_id": r.session_id, "seq_id": r.seq_id,
                               "event": response_wire(r.event)},
    SessionEventV1: lambda r: {"session_id": r.session_id, "event": response_wire(r.event)},
}


def _pubsub_wire(response: Response) -> Dict[str, Any]:
    if isinstance(response, SubscriptionAck):
        return {"jsonrpc": "2.0", "id": response.id, "result": response.subscription}
    if isinstance(response, SubscriptionRefused):
        return {"jsonrpc": "2.0", "id": response.id,
                "error": {"code": response.code, "message": response.message}}
    result: Any = None
    if isinstance(response, Transaction):
        result = {"slot": response.slot, "transaction": response.transaction,
                  "meta": response.meta, "blockTime": response.block_time,
                  "version": response.version}
        if response.signature_hint is not None:
            result["signature"] = response.signature_hint
    elif isinstance(response, AccountDiff):
        result = {"context": {"slot": response.slot}, "account": response.account,
                  "signature": response.signature}
        result.update({k: v for k, v in (("pre", response.pre), ("post", response.post))
                       if v is not None})
    elif isinstance(response, Notification):
        result = response.result
    params: Dict[str, Any] = {"subscription": response.subscription}  # type: ignore[attr-defined]
    if not isinstance(response, SubscriptionComplete):
        params["result"] = result
    method = response.method if isinstance(response, Notification) else response.METHOD
    return {"jsonrpc": "2.0", "method": method, "params": params}


# ----------------------------------------------------------------------------- checks


def _int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise _Bad(f"{what} must be an integer")
    return value


def _opt_int(value: Any, what: str) -> Optional[int]:
    return None if value is None else _int(value, what)


def _str(value: Any, what: str) -> str:
    if type(value) is not str:
        raise _Bad(f"{what} must be a string")
    return value


def _opt_str(value: Any, what: str) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return _str(value, what)


def _obj(value: Any, what: str) -> Dict[str, Any]:
    if type(value) is not dict:
        raise _Bad(f"{what} must be an object")
    return value


def _list(value: Any, what: str) -> List[Any]:
    if type(value) is not list:
        raise _Bad(f"{what} must be a list")
    return value


def _pick(params: Dict[str, Any], snake: str, camel: str) -> Any:
    """A field in either casing; ``None`` when absent or null."""
    value = params.get(snake)
    return params.get(camel) if value is None else value


def _need(params: Dict[str, Any], snake: str, camel: str) -> Any:
    value = _pick(params, snake, camel)
    if value is None:
        raise _Bad(f"{snake} is missing")
    return value


# ----------------------------------------------------------------------------- control decoders


def _session_info(cls: Any, params: Any) -> Any:
    p = _obj(params, "params")
    return cls(_str(_need(p, "session_id", "sessionId"), "session_id"),
               _str(_need(p, "rpc_endpoint", "rpcEndpoint"), "rpc_endpoint"),
               _opt_str(_pick(p, "task_id", "taskId"), "task_id"))


def _str_list(value: Any, what: str) -> List[str]:
    return [_str(item, what) for item in _list(value, what)]


def _opt_int_list(value: Any, what: str) -> Optional[List[int]]:
    return None if value is None else [_int(item, what) for item in _list(value, what)]


def _task_ids(p: Dict[str, Any], count: int) -> List[Optional[str]]:
    raw = _pick(p, "task_ids", "taskIds")
    if raw is None:
        return [None] * count
    return [_opt_str(item, "task_ids") for item in _list(raw, "task_ids")]


def _sessions_created_v2(params: Any) -> SessionsCreatedV2:
    p = _obj(params, "params")
    ids = _str_list(_need(p, "session_ids", "sessionIds"), "session_ids")
    return SessionsCreatedV2(
        _str(_need(p, "control_session_id", "controlSessionId"), "control_session_id"),
        ids, _task_ids(p, len(ids)),
        _opt_int_list(_pick(p, "start_slots", "startSlots"), "start_slots"),
        _opt_int_list(_pick(p, "end_slots", "endSlots"), "end_slots"))


def _parallel_attached(params: Any) -> ParallelSessionAttachedV2:
    p = _obj(params, "params")
    ids = _str_list(_need(p, "session_ids", "sessionIds"), "session_ids")
    return ParallelSessionAttachedV2(
        _str(_need(p, "control_session_id", "controlSessionId"), "control_session_id"),
        ids, _task_ids(p, len(ids)))


def _paused(params: Any) -> Paused:
    p = _obj(params, "params")
    return Paused(_int(p.get("slot"), "slot"),
                  _opt_int(_pick(p, "batch_index", "batchIndex"), "batchIndex"))


def _discovery(params: Any) -> DiscoveryBatch:
    p = _obj(params, "params")
    matched = p.get("matched")
    transactions = p.get("transactions")
    return DiscoveryBatch(_int(p.get("slot"), "slot"),
                          _int(_need(p, "batch_index", "batchIndex"), "batchIndex"),
                          [] if matched is None else _list(matched, "matched"),
                          [] if transactions is None else _list(transactions, "transactions"))


def _status(params: Any) -> Status:
    return Status(_str(_obj(params, "params").get("status"), "status"))


def _server_error(params: Any) -> ServerError:
    if type(params) is str:
        return ServerError(variant_name(params), {}, params)
    p = _obj(params, "error params")
    if len(p) != 1:
        raise _Bad("error params must have exactly one variant")
    ((name, fields),) = p.items()
    if fields is None:
        fields = {}
    if type(fields) is dict:
        return ServerError(variant_name(name), {snake_case(k): v for k, v in fields.items()}, p)
    return ServerError(variant_name(name), {"error": fields}, p)


_SUMMARY_NAMES = ("correct_simulation", "incorrect_simulation", "execution_errors",
                  "balance_diff", "log_diff", "unsanitizable", "reroute_stats")
_SUMMARY_WIRE: Dict[str, str] = {}
for _name in _SUMMARY_NAMES:
    _camel = _name.split("_")[0] + "".join(w.title() for w in _name.split("_")[1:])
    _SUMMARY_WIRE[_camel] = _name
for _name in _SUMMARY_NAMES:
    _SUMMARY_WIRE.setdefault(_name, _name)


def _summary(value: Any) -> Optional[Summary]:
    if value is None:
        return None
    fields: Dict[str, Any] = {}
    extra: Dict[str, Any] = {}
    for key, item in _obj(value, "summary").items():
        name = _SUMMARY_WIRE.get(key)
        if name is None:
            extra[key] = item
        elif name == "reroute_stats":
            fields[name] = item
        elif item is not None:
            fields[name] = _int(item, f"summary.{key}")
    return Summary(**fields, extra=extra)


def _completed(params: Any) -> Completed:
    if params is None:
        return Completed()
    p = _obj(params, "params")
    stats = _pick(p, "agent_stats", "agentStats")
    return Completed(_summary(p.get("summary")),
                     None if stats is None else _list(stats, "agent_stats"))


_WRAPPERS = frozenset({"sessionEventV2", "sessionEventV1"})


def _inner_event(value: Any) -> Decoded:
    event = _obj(value, "event")
    method = event.get("method")
    if type(method) is not str:
        raise _Bad("event has no method")
    if method in _WRAPPERS:
        raise _Bad("a session event cannot wrap another session event")
    return _decode_method(method, event.get("params"))


def _event_v2(params: Any) -> SessionEventV2:
    p = _obj(params, "params")
    return SessionEventV2(_str(_need(p, "session_id", "sessionId"), "session_id"),
                          _opt_int(_pick(p, "seq_id", "seqId"), "seq_id"),
                          _inner_event(p.get("event")))


def _event_v1(params: Any) -> SessionEventV1:
    p = _obj(params, "params")
    return SessionEventV1(_str(_need(p, "session_id", "sessionId"), "session_id"),
                          _inner_event(p.get("event")))


_DECODERS: Dict[str, Callable[[Any], Decoded]] = {
    "readyForContinue": lambda p: _READY,
    "slotNotification": lambda p: Slot(_int(p, "slot")),
    "status": _status,
    "paused": _paused,
    "discoveryBatch": _discovery,
    "error": _server_error,
    "success": lambda p: _SUCCESS,
    "completed": _completed,
    "sessionCreated": lambda p: _session_info(SessionCreated, p),
    "sessionAttached": lambda p: _session_info(SessionAttached, p),
    "sessionsCreatedV2": _sessions_created_v2,
    "parallelSessionAttachedV2": _parallel_attached,
    "sessionsCreated": lambda p: SessionsCreated(
        _str_list(_need(_obj(p, "params"), "session_ids", "sessionIds"), "session_ids")),
    "sessionEventV2": _event_v2,
    "sessionEventV1": _event_v1,
}


def _decode_method(method: str, params: Any) -> Decoded:
    decoder = _DECODERS.get(method)
    if decoder is None:
        return UnknownResponse(method, params)
    return decoder(params)


# ----------------------------------------------------------------------------- data-plane decoders


def _transaction(sub: int, result: Any) -> Transaction:
    r = _obj(result, "result")
    return Transaction.of_fields(sub, _int(r.get("slot"), "slot"), r.get("transaction"),
                                 r.get("meta"), _opt_int(r.get("blockTime"), "blockTime"),
                                 r.get("version"), _opt_str(r.get("signature"), "signature"))


def _account_diff(sub: int, result: Any) -> AccountDiff:
    r = _obj(result, "result")
    context = r.get("context")
    slot = _obj(context, "context").get("slot") if context is not None else r.get("slot")
    pre, post = r.get("pre"), r.get("post")
    return AccountDiff(sub, _int(slot, "slot"), _str(r.get("account"), "account"),
                       _str(r.get("signature"), "signature"),
                       None if pre is None else _obj(pre, "pre"),
                       None if post is None else _obj(post, "post"))


def _decode_pubsub(obj: Dict[str, Any]) -> Response:
    method = obj.get("method")
    if method is None:
        return _decode_reply(obj)
    params = _obj(obj.get("params"), "params")
    sub = _int(params.get("subscription"), "subscription")
    if method == "transactionNotification":
        return _transaction(sub, params.get("result"))
    if method == "accountDiffNotification":
        return _account_diff(sub, params.get("result"))
    if method == "subscriptionComplete":
        return SubscriptionComplete(sub)
    typed = NOTIFICATION_TYPES.get(method, Notification)
    return typed(_str(method, "method"), sub, params.get("result"))  # type: ignore[no-any-return]


def _decode_reply(obj: Dict[str, Any]) -> Response:
    request_id = _opt_int(obj.get("id"), "id")
    if "error" in obj:
        error = _obj(obj["error"], "error")
        message = error.get("message")
        return SubscriptionRefused(request_id, _opt_int(error.get("code"), "error.code"),
                                   "" if message is None else str(message))
    if "result" in obj:
        return SubscriptionAck(_int(request_id, "id"), _int(obj["result"], "result"))
    raise _Bad("a JSON-RPC reply has neither result nor error")


# ----------------------------------------------------------------------------- entry points


def _parse(frame: Frame) -> Dict[str, Any]:
    try:
        obj = loads(frame)
    except (ValueError, UnicodeDecodeError, RecursionError, TypeError):
        raise ProtocolError("frame is not JSON", frame) from None
    if type(obj) is not dict:
        raise ProtocolError("frame is not a JSON object", frame)
    return obj


def decode_response(frame: Frame) -> Tuple[Optional[int], Decoded]:
    """Decode one server→client frame (control or PubSub) to ``(seq_id, response)``.

    ``seq_id`` is ``None`` when the frame carries none (PubSub frames never do).
    Raises :class:`ProtocolError` for anything malformed, never another exception.
    """
    return _decode_object(_parse(frame), frame)


def _decode_object(obj: Dict[str, Any], frame: Frame) -> Tuple[Optional[int], Decoded]:
    """``decode_response`` of a parsed frame (``frame`` only for the error's excerpt)."""
    try:
        if "jsonrpc" in obj:
            return None, _decode_pubsub(obj)
        method = obj.get("method")
        if type(method) is not str:
            raise _Bad("frame has no method")
        seq_id = obj.get("seqId")
        if seq_id is not None and type(seq_id) is not int:
            raise _Bad("seqId must be an integer")
        return seq_id, _decode_method(method, obj.get("params"))
    except (_Bad, KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise ProtocolError(f"malformed frame ({exc})", frame) from None


# ----------------------------------------------------------------------------- requests (server)


def _account_data(value: Any) -> AccountData:
    d = _obj(value, "account")
    data = _obj(d.get("data"), "account.data")
    return AccountData(EncodedData(_str(data.get("data"), "data"),
                                   _str(data.get("encoding", "base64"), "encoding")),
                       bool(d.get("executable", False)), _int(d.get("lamports"), "lamports"),
                       _str(d.get("owner"), "owner"), _int(d.get("space"), "space"))


def _continue_params(p: Dict[str, Any]) -> ContinueParams:
    mods = _pick(p, "modify_account_states", "modifyAccountStates") or {}
    count = _pick(p, "advance_count", "advanceCount")
    return ContinueParams(
        1 if count is None else _int(count, "advanceCount"),
        tuple(_str_list(p.get("transactions") or [], "transactions")),
        {_str(k, "address"): _account_data(v) for k, v in _obj(mods, "accounts").items()})


def _create_params(params: Any) -> CreateSessionParams:
    p = dict(_obj(params, "params"))
    fields = {name: p.pop(wire, None) for name, wire in CREATE_FIELDS}
    return CreateSessionParams(**fields, extra=p)


def _v1_inner(p: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    session_id = _str(_need(p, "session_id", "sessionId"), "sessionId")
    inner = p.get("request")
    return session_id, _obj(inner, "request") if inner is not None else p


_REQUEST_DECODERS: Dict[str, Callable[[Any], Request]] = {
    "createBacktestSession": lambda p: CreateBacktestSession(_create_params(p)),
    "continue": lambda p: Continue(_continue_params(_obj({} if p is None else p, "params"))),
    "continueTo": lambda p: ContinueTo(_int(_obj(p, "params").get("slot"), "slot"),
                                       _opt_int(_pick(p, "batch_index", "batchIndex"),
                                                "batchIndex")),
    "closeBacktestSession": lambda p: CloseBacktestSession(),
    "resumeAttachedSession": lambda p: ResumeAttachedSession(),
    "attachBacktestSession": lambda p: AttachBacktestSession(
        _str(_need(_obj(p, "params"), "session_id", "sessionId"), "session_id"),
        _opt_int(_pick(p, "last_sequence", "lastSequence"), "last_sequence")),
    "continueSessionV1": lambda p: ContinueSessionV1(
        _v1_inner(_obj(p, "params"))[0], _continue_params(_v1_inner(p)[1])),
    "continueToSessionV1": lambda p: ContinueToSessionV1(
        _v1_inner(_obj(p, "params"))[0], _int(_v1_inner(p)[1].get("slot"), "slot"),
        _opt_int(_pick(_v1_inner(p)[1], "batch_index", "batchIndex"), "batchIndex")),
    "closeSessionV1": lambda p: CloseSessionV1(_v1_inner(_obj(p, "params"))[0]),
    "attachParallelControlSessionV2": lambda p: AttachParallelControlSessionV2(
        _str(_need(_obj(p, "params"), "control_session_id", "controlSessionId"),
             "control_session_id"),
        {_str(k, "session id"): _opt_int(v, "sequence") for k, v in
         _obj(_pick(p, "last_sequences", "lastSequences") or {}, "last_sequences").items()}),
}


def decode_request(frame: Frame) -> Request:
    """Decode a client→server frame (what a server or a test double receives)."""
    obj = _parse(frame)
    try:
        method = obj.get("method")
        if type(method) is not str:
            raise _Bad("frame has no method")
        if obj.get("jsonrpc") is not None:
            params = _list(obj.get("params"), "params")
            return Subscribe(_int(obj.get("id"), "id"), method, _obj(params[0], "filter"),
                             _obj(params[1], "config") if len(params) > 1 else {})
        decoder = _REQUEST_DECODERS.get(method)
        if decoder is None:
            raise _Bad(f"unknown request method {method!r}")
        return decoder(obj.get("params"))
    except (_Bad, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ProtocolError(f"malformed request ({exc})", frame) from None


# ----------------------------------------------------------------------------- /available-ranges

_RANGE_INTS = {"bundleStartSlot": "bundle_start_slot", "maxBundleEndSlot": "max_bundle_end_slot",
               "maxBundleSize": "max_bundle_size", "snapshotSlot": "snapshot_slot"}
_RANGE_TEXTS = {"bundleStartSlotUtc": "bundle_start_slot_utc",
                "maxBundleEndSlotUtc": "max_bundle_end_slot_utc", "kind": "kind",
                "scope": "scope"}


def _available_range(item: Any) -> AvailableRange:
    fields: Dict[str, Any] = {}
    extra: Dict[str, Any] = {}
    for key, value in _obj(item, "range").items():
        if key in _RANGE_INTS:
            fields[_RANGE_INTS[key]] = _opt_int(value, key)
        elif key in _RANGE_TEXTS:
            fields[_RANGE_TEXTS[key]] = _opt_str(value, key)
        else:
            extra[key] = value
    if fields.get("bundle_start_slot") is None:
        raise _Bad("bundleStartSlot is missing")
    return AvailableRange(**fields, extra=extra)


def decode_available_ranges(body: Frame) -> List[AvailableRange]:
    """Decode a ``/available-ranges`` body (old and new field sets)."""
    try:
        items = loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError, TypeError):
        raise ProtocolError("/available-ranges did not answer JSON", body) from None
    try:
        return [_available_range(item) for item in _list(items, "ranges")]
    except (_Bad, TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed /available-ranges ({exc})", body) from None
