"""The wire types of PROTOCOL.md as frozen dataclasses.

Field names are Python snake_case; dataclasses-json carries each type's wire casing
(payload structs camelCase, struct variants snake_case) so ``to_dict()``/``from_dict()``
speak the canonical wire form. The hot-path codec (``codec.py``) builds these types with
explicit constructors instead of the generic ``from_dict``.
"""
from __future__ import annotations

import abc
import base64
import binascii
import contextlib
import json
from dataclasses import InitVar, dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple, Union, cast

import base58
from dataclasses_json import DataClassJsonMixin, LetterCase, config

from simsync.errors import ProtocolError

_new = object.__new__
_CAMEL_CONFIG = config(letter_case=LetterCase.CAMEL)["dataclasses_json"]


class Camel(DataClassJsonMixin):
    """Base of payload structs whose wire field names are camelCase."""

    dataclass_json_config = _CAMEL_CONFIG


class Snake(DataClassJsonMixin):
    """Base of struct variants whose wire field names are snake_case."""


# ----------------------------------------------------------------------------- payloads


@dataclass(frozen=True)
class EncodedData(Camel):
    """Account bytes as the wire carries them: ``{"data": "<base64>", "encoding": "base64"}``."""

    data: str
    encoding: str = "base64"


@dataclass(frozen=True)
class AccountData(Camel):
    """An account override (``modifyAccountStates`` / ``modifyAccounts``)."""

    data: EncodedData
    executable: bool
    lamports: int
    owner: str
    space: int

    @classmethod
    def of(cls, data: bytes, owner: str, lamports: int, executable: bool = False) -> AccountData:
        """An override holding ``data``; ``space`` is its length."""
        encoded = EncodedData(base64.b64encode(bytes(data)).decode("ascii"))
        return cls(encoded, executable, int(lamports), str(owner), len(data))

    def raw_bytes(self) -> bytes:
        """The account's data bytes."""
        return base64.b64decode(self.data.data)

    def wire(self) -> Dict[str, Any]:
        """The canonical wire object."""
        return {"data": {"data": self.data.data, "encoding": self.data.encoding},
                "executable": self.executable, "lamports": self.lamports,
                "owner": self.owner, "space": self.space}


def _pubkey(value: Any, what: str) -> str:
    """``value`` if it is a base58 public key (32 bytes), else ``ValueError`` naming ``what``."""
    try:
        raw = base58.b58decode(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"{what} must be a base58 public key, got {value!r}")
    return str(value)


class DiscoveryFilter(abc.ABC):
    """A typed ``discoveries`` entry of the create params (PROTOCOL.md §5)."""

    @abc.abstractmethod
    def wire(self) -> Dict[str, Any]:
        """The canonical wire object."""


@dataclass(frozen=True)
class ProgramExecuted(DiscoveryFilter):
    """Matches a batch with a transaction that invokes ``program_id`` (base58):
    ``{"programExecuted": "<base58>"}`` on the wire. Raises ``ValueError`` for a
    ``program_id`` that is not a base58 public key."""

    program_id: str

    def __post_init__(self) -> None:
        _pubkey(self.program_id, "ProgramExecuted.program_id")

    def wire(self) -> Dict[str, Any]:
        return {"programExecuted": self.program_id}


@dataclass(frozen=True)
class OracleUpdate(DiscoveryFilter):
    """Matches a batch with a transaction that invokes one of ``programs`` and references
    one of ``accounts`` (an empty tuple matches any): ``{"oracleUpdate": {"programs": [...],
    "accounts": [...]}}`` on the wire. Both are base58 public keys; at least one of the two
    must be non-empty (``ValueError`` otherwise, or for a key that is not base58)."""

    programs: Tuple[str, ...] = ()
    accounts: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("programs", "accounts"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"OracleUpdate.{name} must be a list of base58 keys, "
                                 f"not one string")
            keys = tuple(_pubkey(k, f"OracleUpdate.{name}") for k in value)
            object.__setattr__(self, name, keys)
        if not self.programs and not self.accounts:
            raise ValueError("OracleUpdate needs programs or accounts (or both)")

    def wire(self) -> Dict[str, Any]:
        return {"oracleUpdate": {"programs": list(self.programs),
                                 "accounts": list(self.accounts)}}


#: A ``discoveries`` entry: a typed filter, or its raw wire object (passed as it is).
Discovery = Union[DiscoveryFilter, Dict[str, Any]]


def discovery_filter(value: Any) -> Discovery:
    """The typed filter of a wire ``discoveries`` entry (e.g. ``matched`` in a
    ``discoveryBatch``), or the value as it is when it is not a well-formed
    ``programExecuted``/``oracleUpdate`` (new kinds, other shapes). Never raises."""
    if isinstance(value, DiscoveryFilter) or not isinstance(value, dict) or len(value) != 1:
        return cast(Discovery, value)
    try:
        program = value.get("programExecuted")
        if program is not None:
            return ProgramExecuted(program)
        oracle = value.get("oracleUpdate")
        if isinstance(oracle, dict):
            return OracleUpdate(tuple(oracle.get("programs") or ()),
                                tuple(oracle.get("accounts") or ()))
    except (TypeError, ValueError):
        pass
    return value


def _discovery_wire(value: Any) -> Dict[str, Any]:
    if isinstance(value, DiscoveryFilter):
        return value.wire()
    if isinstance(value, dict):
        return value
    raise TypeError(f"a discoveries entry must be ProgramExecuted, OracleUpdate or a wire "
                    f"dict, got {type(value).__name__}")


#: Create fields in canonical wire order (python name, wire name).
CREATE_FIELDS: Tuple[Tuple[str, str], ...] = (
    ("start_slot", "startSlot"), ("end_slot", "endSlot"), ("signer_filter", "signerFilter"),
    ("send_summary", "sendSummary"), ("parallel", "parallel"),
    ("disconnect_timeout_secs", "disconnectTimeoutSecs"),
    ("capacity_wait_timeout_secs", "capacityWaitTimeoutSecs"),
    ("extra_compute_units", "extraComputeUnits"), ("discoveries", "discoveries"),
    ("replay_account_state", "replayAccountState"),
)


@dataclass(frozen=True)
class CreateSessionParams(Camel):
    """``createBacktestSession`` params (PROTOCOL.md §5). ``None`` means absent (server default).

    The range is ``start_slot`` through ``end_slot`` (inclusive), or ``start_slot`` and
    ``slot_count``: give exactly one of ``end_slot`` and ``slot_count`` (``TypeError``
    naming both otherwise). The wire has no slot count, so ``slot_count`` is resolved here,
    on construction: ``end_slot = start_slot + slot_count - 1`` is stored and sent as
    ``endSlot``; ``slot_count`` itself is not kept (an init-only argument, so
    ``dataclasses.replace`` and pickling see only ``end_slot``). Slot numbers count skipped
    slots too: ``slot_count=10`` may execute fewer than 10 blocks.

    ``discoveries`` entries are typed filters (`ProgramExecuted`, `OracleUpdate`) or raw
    wire dicts (``{"programExecuted": "<base58>"}``), sent in the given order.

    ``extra`` carries opaque pass-through fields (``actions``, ``reroute``,
    ``diagnosticProbes``, ``preloadPrograms``, ``agents``) under their wire names.
    Raises ``ValueError`` for a bad value (negative slot, ``start_slot`` after the end,
    ``slot_count`` < 1, a detach window outside 0..900, negative ``extra_compute_units``).
    """

    start_slot: int
    #: Always an ``int`` after construction (computed from ``slot_count`` when not given).
    end_slot: int = cast(int, None)
    signer_filter: Optional[List[str]] = None
    send_summary: Optional[bool] = None
    parallel: Optional[bool] = None
    disconnect_timeout_secs: Optional[int] = None
    capacity_wait_timeout_secs: Optional[int] = None
    extra_compute_units: Optional[int] = None
    discoveries: Optional[List[Discovery]] = field(default=None, metadata=config(
        encoder=lambda items: None if items is None else [_discovery_wire(i) for i in items]))
    replay_account_state: Optional[bool] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    slot_count: InitVar[Optional[int]] = None

    def __post_init__(self, slot_count: Optional[int]) -> None:
        if (self.end_slot is None) == (slot_count is None):
            given = "neither" if slot_count is None else "both"
            raise TypeError(f"give exactly one of end_slot and slot_count (got {given})")
        if slot_count is not None:
            if isinstance(slot_count, bool) or not isinstance(slot_count, int) \
                    or slot_count < 1:
                raise ValueError(f"slot_count must be a positive integer, got {slot_count!r}")
            start = self.start_slot
            if isinstance(start, int) and not isinstance(start, bool):
                object.__setattr__(self, "end_slot", start + slot_count - 1)
        for name in ("start_slot", "end_slot"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.start_slot > self.end_slot:
            raise ValueError(f"start_slot ({self.start_slot}) is after end_slot ({self.end_slot})")
        window = self.disconnect_timeout_secs
        if window is not None and not 0 <= window <= 900:
            raise ValueError(f"disconnect_timeout_secs must be between 0 and 900, got {window}")
        units = self.extra_compute_units
        if units is not None and (isinstance(units, bool) or not isinstance(units, int)
                                  or units < 0):
            raise ValueError(f"extra_compute_units must be a non-negative integer, "
                             f"got {units!r}")
        if self.discoveries is not None:
            for item in self.discoveries:
                _discovery_wire(item)
        known = {wire for _, wire in CREATE_FIELDS}
        clash = known.intersection(self.extra)
        if clash:
            raise ValueError(f"extra must not repeat named create fields: {sorted(clash)}")

    def wire(self) -> Dict[str, Any]:
        """The canonical camelCase object, absent fields left out, extras last."""
        out: Dict[str, Any] = {}
        for name, wire_name in CREATE_FIELDS:
            value = getattr(self, name)
            if name == "discoveries" and value is not None:
                value = [_discovery_wire(item) for item in value]
            if value is not None:
                out[wire_name] = value
        out.update(self.extra)
        return out

    @property
    def slot_span(self) -> int:
        """How many slot numbers the range covers (``end_slot - start_slot + 1``)."""
        return self.end_slot - self.start_slot + 1

    @property
    def sequenced(self) -> bool:
        """Whether the server will sequence this session's frames (a detach window is set)."""
        return bool(self.disconnect_timeout_secs)


@dataclass(frozen=True)
class ContinueParams(Camel):
    """``continue`` params (PROTOCOL.md §6). Transactions are base64 strings."""

    advance_count: int = 1
    transactions: Tuple[str, ...] = ()
    modify_account_states: Mapping[str, AccountData] = field(default_factory=dict)

    def __post_init__(self) -> None:
        count = self.advance_count
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"advance_count must be a positive integer, got {count!r}")

    def wire(self) -> Dict[str, Any]:
        """The canonical camelCase object; empty lists and maps left out."""
        out: Dict[str, Any] = {"advanceCount": self.advance_count}
        if self.transactions:
            out["transactions"] = list(self.transactions)
        if self.modify_account_states:
            out["modifyAccountStates"] = {k: v.wire()
                                          for k, v in self.modify_account_states.items()}
        return out


@dataclass(frozen=True)
class Summary(Camel):
    """The session summary in ``completed`` (when ``sendSummary`` was set).

    Counters the server did not send are ``None``; fields this version does not know are
    kept in ``extra`` under their wire names.
    """

    correct_simulation: Optional[int] = None
    incorrect_simulation: Optional[int] = None
    execution_errors: Optional[int] = None
    balance_diff: Optional[int] = None
    log_diff: Optional[int] = None
    unsanitizable: Optional[int] = None
    reroute_stats: Any = None
    extra: Dict[str, Any] = field(default_factory=dict)

    #: The counters that flag a transaction whose simulation differs from history.
    DEVIATIONS: ClassVar[Tuple[str, ...]] = (
        "incorrect_simulation", "execution_errors", "balance_diff", "log_diff",
        "unsanitizable")
    #: The counters that partition the session's transactions: each historical transaction
    #: is counted in exactly one of them. ``balance_diff`` and ``log_diff`` are not: they
    #: say why a simulation was incorrect (kinds of ``incorrect_simulation``).
    PARTITION: ClassVar[Tuple[str, ...]] = (
        "correct_simulation", "incorrect_simulation", "execution_errors", "unsanitizable")

    def has_deviations(self) -> bool:
        """Whether any of `DEVIATIONS` (``incorrect_simulation``, ``execution_errors``,
        ``balance_diff``, ``log_diff``, ``unsanitizable``) is above 0; a counter the server
        did not send counts as 0."""
        return any((getattr(self, name) or 0) > 0 for name in self.DEVIATIONS)

    def total_transactions(self) -> int:
        """The number of transactions the summary covers: the sum of `PARTITION`
        (``correct_simulation + incorrect_simulation + execution_errors + unsanitizable``);
        a counter the server did not send counts as 0."""
        return sum(getattr(self, name) or 0 for name in self.PARTITION)


#: ``AgentStatsReport`` counters (python name; the wire uses it or its camelCase).
AGENT_COUNTERS: Tuple[str, ...] = (
    "slots_processed", "opportunities_found", "opportunities_skipped", "no_routes",
    "txs_produced", "txs_submitted", "txs_failed", "txs_simulation_rejected",
    "txs_simulation_failed")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


_AGENT_WIRE: Dict[str, str] = {**{n: n for n in AGENT_COUNTERS + ("name", "expected_gain_by_mint")},
                               **{_camel(n): n for n in AGENT_COUNTERS
                                  + ("expected_gain_by_mint",)}}


@dataclass(frozen=True)
class AgentStatsReport(Snake):
    """One agent's statistics in ``completed.agent_stats`` (older servers; snake_case or
    camelCase fields accepted). Counters are transactions or opportunities, per session;
    one the server did not send (or sent as a non-integer) is ``None``, the raw value then
    kept in ``extra``. ``expected_gain_by_mint`` maps a mint (base58) to the expected gain
    in that mint's base units. Unknown fields are kept in ``extra`` under their wire names.
    """

    name: Optional[str] = None
    slots_processed: Optional[int] = None
    opportunities_found: Optional[int] = None
    opportunities_skipped: Optional[int] = None
    no_routes: Optional[int] = None
    txs_produced: Optional[int] = None
    txs_submitted: Optional[int] = None
    txs_failed: Optional[int] = None
    txs_simulation_rejected: Optional[int] = None
    txs_simulation_failed: Optional[int] = None
    expected_gain_by_mint: Dict[str, int] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, value: Any) -> AgentStatsReport:
        """Decode one ``agent_stats`` entry; ``ProtocolError`` when it is not an object."""
        if not isinstance(value, dict):
            raise ProtocolError("an agent_stats entry is not an object", repr(value))
        fields: Dict[str, Any] = {}
        extra: Dict[str, Any] = {}
        for key, item in value.items():
            name = _AGENT_WIRE.get(key)
            if item is None and name is not None:
                continue
            if name == "name" and isinstance(item, str):
                fields[name] = item
            elif name == "expected_gain_by_mint" and isinstance(item, dict) and all(
                    isinstance(v, int) and not isinstance(v, bool) for v in item.values()):
                fields[name] = {str(k): v for k, v in item.items()}
            elif name in AGENT_COUNTERS and isinstance(item, int) \
                    and not isinstance(item, bool):
                fields[name] = item
            else:
                extra[key] = item
        return cls(**fields, extra=extra)


@dataclass(frozen=True)
class AvailableRange(Camel):
    """One replayable bundle from ``GET /available-ranges``. Fields the server left out or
    set to null are ``None``; unknown fields are kept in ``extra`` under their wire names."""

    bundle_start_slot: int
    max_bundle_end_slot: Optional[int] = None
    max_bundle_size: Optional[int] = None
    bundle_start_slot_utc: Optional[str] = None
    max_bundle_end_slot_utc: Optional[str] = None
    kind: Optional[str] = None
    scope: Optional[str] = None
    snapshot_slot: Optional[int] = None
    extra: Dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- requests


class Request:
    """A client→server control frame."""

    METHOD: ClassVar[str]

    def params(self) -> Any:
        """The wire ``params``; ``None`` for a unit variant (then ``params`` is omitted)."""
        return None


#: How ``…SessionV1`` wrappers lay out their params (PROTOCOL.md §3): "flat" puts the
#: step fields beside ``sessionId``; "nested" puts them under ``request``.
V1_LAYOUT = "flat"


def v1_params(session_id: str, inner: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Wrap a sub-session's step params in the ``…SessionV1`` layout (the one place)."""
    if inner is None:
        return {"sessionId": session_id}
    if V1_LAYOUT == "nested":
        return {"sessionId": session_id, "request": inner}
    return {"sessionId": session_id, **inner}


@dataclass(frozen=True)
class CreateBacktestSession(Request):
    METHOD: ClassVar[str] = "createBacktestSession"
    create: CreateSessionParams

    def params(self) -> Any:
        return self.create.wire()


@dataclass(frozen=True)
class Continue(Request):
    METHOD: ClassVar[str] = "continue"
    step: ContinueParams = field(default_factory=ContinueParams)

    def params(self) -> Any:
        return self.step.wire()


@dataclass(frozen=True)
class ContinueTo(Request):
    METHOD: ClassVar[str] = "continueTo"
    slot: int
    batch_index: Optional[int] = None

    def params(self) -> Any:
        return {"slot": self.slot, "batchIndex": self.batch_index}


@dataclass(frozen=True)
class CloseBacktestSession(Request):
    METHOD: ClassVar[str] = "closeBacktestSession"


@dataclass(frozen=True)
class AttachBacktestSession(Request):
    METHOD: ClassVar[str] = "attachBacktestSession"
    session_id: str
    last_sequence: Optional[int] = None

    def params(self) -> Any:
        return {"session_id": self.session_id, "last_sequence": self.last_sequence}


@dataclass(frozen=True)
class ResumeAttachedSession(Request):
    METHOD: ClassVar[str] = "resumeAttachedSession"


@dataclass(frozen=True)
class ContinueSessionV1(Request):
    METHOD: ClassVar[str] = "continueSessionV1"
    session_id: str
    step: ContinueParams = field(default_factory=ContinueParams)

    def params(self) -> Any:
        return v1_params(self.session_id, self.step.wire())


@dataclass(frozen=True)
class ContinueToSessionV1(Request):
    METHOD: ClassVar[str] = "continueToSessionV1"
    session_id: str
    slot: int
    batch_index: Optional[int] = None

    def params(self) -> Any:
        return v1_params(self.session_id, {"slot": self.slot, "batchIndex": self.batch_index})


@dataclass(frozen=True)
class CloseSessionV1(Request):
    METHOD: ClassVar[str] = "closeSessionV1"
    session_id: str

    def params(self) -> Any:
        return v1_params(self.session_id, None)


@dataclass(frozen=True)
class AttachParallelControlSessionV2(Request):
    METHOD: ClassVar[str] = "attachParallelControlSessionV2"
    control_session_id: str
    last_sequences: Mapping[str, Optional[int]] = field(default_factory=dict)

    def params(self) -> Any:
        return {"control_session_id": self.control_session_id,
                "last_sequences": dict(self.last_sequences)}


@dataclass(frozen=True)
class Subscribe(Request):
    """A PubSub subscription request (JSON-RPC 2.0), e.g. ``transactionSubscribe``."""

    METHOD: ClassVar[str] = "subscribe"
    id: int
    kind: str
    filter: Any            # the first parameter: a filter object, a base58 key, or None
    config: Dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- responses


class Response:
    """A server→client frame (control or PubSub)."""

    METHOD: ClassVar[str] = ""


@dataclass(frozen=True)
class SessionCreated(Snake, Response):
    METHOD: ClassVar[str] = "sessionCreated"
    session_id: str
    rpc_endpoint: str
    task_id: Optional[str] = None


@dataclass(frozen=True)
class SessionAttached(Snake, Response):
    METHOD: ClassVar[str] = "sessionAttached"
    session_id: str
    rpc_endpoint: str
    task_id: Optional[str] = None


@dataclass(frozen=True)
class SessionsCreatedV2(Snake, Response):
    """End of a parallel create. ``start_slots``/``end_slots`` are ``None`` when a too-old
    server left them out (the parallel layer rejects that)."""

    METHOD: ClassVar[str] = "sessionsCreatedV2"
    control_session_id: str
    session_ids: List[str]
    task_ids: List[Optional[str]]
    start_slots: Optional[List[int]] = None
    end_slots: Optional[List[int]] = None


@dataclass(frozen=True)
class SessionsCreated(Snake, Response):
    """Legacy parallel reply from older servers (decode only)."""

    METHOD: ClassVar[str] = "sessionsCreated"
    session_ids: List[str]


@dataclass(frozen=True)
class ParallelSessionAttachedV2(Snake, Response):
    METHOD: ClassVar[str] = "parallelSessionAttachedV2"
    control_session_id: str
    session_ids: List[str]
    task_ids: List[Optional[str]]


@dataclass(frozen=True)
class ReadyForContinue(Snake, Response):
    """The session is paused at a block boundary: send the next step."""

    METHOD: ClassVar[str] = "readyForContinue"


@dataclass(frozen=True)
class Slot(Snake, Response):
    """A slot was executed (skipped slots are never announced)."""

    METHOD: ClassVar[str] = "slotNotification"
    slot: int


@dataclass(frozen=True)
class Paused(Camel, Response):
    """Reached a ``continueTo`` target; ``batch_index`` ``None`` means a block boundary."""

    METHOD: ClassVar[str] = "paused"
    slot: int
    batch_index: Optional[int] = None


@dataclass(frozen=True)
class DiscoveryBatch(Camel, Response):
    """An upcoming batch matches a registered discovery filter."""

    METHOD: ClassVar[str] = "discoveryBatch"
    slot: int
    batch_index: int
    matched: List[Any] = field(default_factory=list)
    transactions: List[Any] = field(default_factory=list)

    @property
    def matched_filters(self) -> List[Discovery]:
        """``matched`` with each well-formed entry as a typed filter (`ProgramExecuted`,
        `OracleUpdate`), other entries as they came; equal to the filters given at create."""
        return [discovery_filter(item) for item in self.matched]


@dataclass(frozen=True)
class Status(Snake, Response):
    """A progress phase (PROTOCOL.md §7); unknown values are kept as they are."""

    METHOD: ClassVar[str] = "status"
    status: str


@dataclass(frozen=True)
class Success(Snake, Response):
    METHOD: ClassVar[str] = "success"


@dataclass(frozen=True)
class Completed(Snake, Response):
    """The range is done; nothing follows. ``agent_stats`` comes from older servers."""

    METHOD: ClassVar[str] = "completed"
    summary: Optional[Summary] = None
    agent_stats: Optional[List[Dict[str, Any]]] = None

    @cached_property
    def agent_reports(self) -> List[AgentStatsReport]:
        """``agent_stats`` as typed reports (empty when the server sent none); decoded on
        first access. Raises ``ProtocolError`` when an entry is not an object."""
        return [AgentStatsReport.from_wire(item) for item in self.agent_stats or []]


@dataclass(frozen=True)
class SessionEventV2(Snake, Response):
    """Parallel mode: one sub-session's event with its per-session sequence."""

    METHOD: ClassVar[str] = "sessionEventV2"
    session_id: str
    seq_id: Optional[int]
    event: Any


@dataclass(frozen=True)
class SessionEventV1(Snake, Response):
    """Legacy parallel event from older servers (no sequence; decode only)."""

    METHOD: ClassVar[str] = "sessionEventV1"
    session_id: str
    event: Any


@dataclass(frozen=True)
class UnknownResponse(Snake, Response):
    """A method this version of simsync does not know; kept as received."""

    method: str
    params: Any = None


# ----------------------------------------------------------------------------- data plane


@dataclass(frozen=True)
class SubscriptionAck(Snake, Response):
    """``{"jsonrpc":"2.0","id":N,"result":SUB_ID}``."""

    id: int
    subscription: int


@dataclass(frozen=True)
class SubscriptionRefused(Snake, Response):
    """A JSON-RPC error answering a subscribe request."""

    id: Optional[int]
    code: Optional[int]
    message: str


@dataclass(frozen=True)
class SubscriptionComplete(Snake, Response):
    """End of stream for one subscription: it is finished and must not reconnect."""

    METHOD: ClassVar[str] = "subscriptionComplete"
    subscription: int


@dataclass(frozen=True)
class Transaction(Camel, Response):
    """One executed transaction (``transactionNotification``), shaped like ``getTransaction``.

    ``transaction`` is as sent, in the subscription's encoding: ``[text, "base64"]``,
    ``[text, "base58"]``, or the ``json``/``jsonParsed`` object ``{"signatures": [...],
    "message": {...}}``. ``signature`` is the transaction's first signature (base58), read from
    the transaction itself on first access. ``signature_hint`` keeps a non-standard top-level
    ``signature`` some servers add; it is only a fallback for a transaction that names none.
    """

    METHOD: ClassVar[str] = "transactionNotification"
    subscription: int
    slot: int
    transaction: Any
    meta: Optional[Dict[str, Any]] = None
    block_time: Optional[int] = None
    version: Any = None
    signature_hint: Optional[str] = field(default=None, compare=False, repr=False)

    @classmethod
    def of_fields(cls, subscription: int, slot: int, transaction: Any,
                  meta: Optional[Dict[str, Any]], block_time: Optional[int], version: Any,
                  signature_hint: Optional[str]) -> Transaction:
        """``Transaction(...)`` with every field given, built without the frozen dataclass
        ``__init__``'s one ``object.__setattr__`` per field (the decoder makes one per
        notification: 0.3 us instead of 0.85). The same object in every respect; any thread."""
        event = _new(cls)
        attrs = event.__dict__
        attrs["subscription"] = subscription
        attrs["slot"] = slot
        attrs["transaction"] = transaction
        attrs["meta"] = meta
        attrs["block_time"] = block_time
        attrs["version"] = version
        attrs["signature_hint"] = signature_hint
        return event

    @property
    def err(self) -> Any:
        """``meta.err``: ``None`` when the transaction succeeded, else the Solana error."""
        return (self.meta or {}).get("err")

    @cached_property
    def signature_bytes(self) -> bytes:
        """The first signature's 64 raw bytes (``b""`` when the transaction names none)."""
        return first_signature(self.transaction)

    @cached_property
    def signature(self) -> str:
        """The first signature, base58 (``""`` when neither the transaction nor the server
        names one). Decoding a ``base58`` transaction costs ~1 ms per KB; the other
        encodings are cheap."""
        listed = _json_signature(self.transaction)
        if listed is not None:
            return listed
        raw = self.signature_bytes
        if raw:
            return b58encode(raw)
        return self.signature_hint or ""

    @property
    def dedup_key(self) -> Any:
        """Identity of this transaction across a replay; two distinct transactions never share
        it. The first signature where that is cheap: ``json``/``jsonParsed`` give it as text;
        for ``base64`` the first 88 characters encode the signature count and the first
        signature exactly (no decoding needed). A ``base58`` transaction is keyed by its whole
        text (the same transaction always encodes to the same text)."""
        tx = self.transaction
        if type(tx) is list and len(tx) == 2 and tx[1] == "base64":   # the usual form, fast
            text = tx[0]
            if type(text) is str and len(text) >= 88 and "A" <= text[0] <= "f":
                return text[:88]
        listed = _json_signature(tx)
        if listed is not None:
            return listed
        encoded, encoding = _encoded(tx)
        if encoded is not None:
            if encoding == "base58":
                return ("base58", encoded)
            if encoded[:1] and "A" <= encoded[0] <= "f" and len(encoded) >= 88:
                return encoded[:88]  # a one-byte signature count (< 128)
        raw = self.signature_bytes
        if raw:
            return raw
        return ("unsigned", self.signature_hint, repr(tx))


@dataclass(frozen=True)
class AccountDiff(Camel, Response):
    """One account changed by one transaction (``accountDiffNotification``).

    ``pre`` is ``None`` for a created account, ``post`` ``None`` for a deleted one.
    """

    METHOD: ClassVar[str] = "accountDiffNotification"
    subscription: int
    slot: int
    account: str
    signature: str
    pre: Optional[Dict[str, Any]] = None
    post: Optional[Dict[str, Any]] = None

    @property
    def dedup_key(self) -> Tuple[int, str, str]:
        """Identity of this notification across a replay: (slot, signature, account)."""
        return (self.slot, self.signature, self.account)


@dataclass(frozen=True)
class Notification(Snake, Response):
    """A standard Solana PubSub notification (slot, account, program, logs, signature)."""

    method: str
    subscription: int
    result: Any = None

    @property
    def dedup_key(self) -> Any:
        """Identity within a slot across a replay: the whole result (typed subclasses in
        ``simsync.protocol.notifications`` use a narrower key)."""
        return json.dumps(self.result, sort_keys=True, separators=(",", ":"))

    @property
    def slot(self) -> Optional[int]:
        """The notification's slot when it names one (``context.slot`` or ``slot``)."""
        result = self.result
        if isinstance(result, dict):
            context = result.get("context")
            if isinstance(context, dict) and isinstance(context.get("slot"), int):
                return int(context["slot"])
            if isinstance(result.get("slot"), int):
                return int(result["slot"])
        return None


UnknownEvent = UnknownResponse

def b58encode(raw: bytes) -> str:
    """Base58 text of raw bytes (signatures read from transaction bytes). A 64-byte signature
    goes through solders' ``Signature`` (Rust, ~0.4 us) when solders is installed (the
    ``local`` extra), anything else through the pure-Python ``base58`` (~14 us). Any thread."""
    if len(raw) == 64:
        signature = _solders_signature()
        if signature is not None:
            return str(signature.from_bytes(bytes(raw)))
    return base58.b58encode(raw).decode("ascii")


_SIGNATURE: List[Any] = []


def _solders_signature() -> Any:
    """solders' ``Signature`` class, or None without solders; imported on first use (the import
    costs ~30 ms, which a session that never reads a signature should not pay)."""
    if not _SIGNATURE:
        signature: Any = None
        with contextlib.suppress(ImportError):  # solders is optional (the ``local`` extra)
            from solders.signature import Signature as signature
        _SIGNATURE.append(signature)
    return _SIGNATURE[0]


def _json_signature(transaction: Any) -> Optional[str]:
    """``signatures[0]`` of a ``json``/``jsonParsed`` transaction, else None."""
    if isinstance(transaction, dict):
        sigs = transaction.get("signatures")
        if isinstance(sigs, list) and sigs and isinstance(sigs[0], str) and sigs[0]:
            return sigs[0]
    return None


def _encoded(transaction: Any) -> Tuple[Optional[str], str]:
    """``(text, encoding)`` of a ``[text, encoding]`` pair or a bare base64 string."""
    if isinstance(transaction, (list, tuple)) and transaction:
        text = transaction[0]
        encoding = transaction[1] if len(transaction) > 1 else "base64"
        return (text if isinstance(text, str) else None), str(encoding)
    if isinstance(transaction, str):
        return transaction, "base64"
    return None, ""


def first_signature(transaction: Any) -> bytes:
    """The 64-byte first signature of a transaction in any of Solana's encodings:
    ``[base64, "base64"]``, ``[base58, "base58"]``, a bare base64 string (wire bytes: a
    compact-u16 signature count, then the signatures), or a ``json``/``jsonParsed`` object
    (``signatures[0]``, base58). ``b""`` when there is none or it does not decode."""
    listed = _json_signature(transaction)
    try:
        if listed is not None:
            raw = base58.b58decode(listed)
            return raw if len(raw) == 64 else b""
        encoded, encoding = _encoded(transaction)
        if encoded is None:
            return b""
        if encoding == "base58":
            head = base58.b58decode(encoded)
        elif encoding == "base64":
            head = base64.b64decode(encoded[:100] if len(encoded) > 100 else encoded)
        else:
            return b""
    except (binascii.Error, ValueError):
        return b""
    count, offset = _compact_u16(head)
    if count < 1 or len(head) < offset + 64:
        return b""
    return head[offset:offset + 64]


def _compact_u16(data: bytes) -> Tuple[int, int]:
    """Solana's compact-u16 at the start of ``data``: ``(value, bytes used)``; (0, 0) when
    truncated."""
    value = 0
    for i in range(min(3, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return value, i + 1
    return 0, 0


__all__ = [name for name in dir() if not name.startswith("_")]
