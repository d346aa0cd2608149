"""A recorded history: the local simulator serving a recording (``simsync.recording_format``)
instead of its synthetic history.

`RecordedHistory` loads a recording once, streaming (one zstandard frame in memory at a time):
the notifications go to a private temporary SQLite table indexed by slot (on disk, deleted on
`RecordedHistory.close`), the small indexes (produced slots, each pause's blockhash and block
height, block times, the slots at which each account changes, the recorded summary) stay in
memory. It is a `History`, so the session, the registry, the RPC methods, PubSub, discovery,
reconnects and the fault plan serve it unchanged; three subclasses plug the recording in:

* `RecordedChain` applies a historical transaction by writing the recorded post-states of the
  accounts it changed (no execution: the recorded meta is served as it is), and runs a user's
  transaction in LiteSVM against the recorded state, with the runtime's checks (signatures,
  the recent-blockhash window over the RECORDED blockhashes, duplicates), refusing one that
  loads an account the recording never saw. A user transaction that changes an account the
  recording changes later is a divergence: a warning and a ``replay.diverged`` entry in the
  ``completed`` summary (a recording is a replay of history, not a fork of it).
* `RecordedSession` sends the recorded summary in ``completed``, the warnings as non-fatal
  ``error`` frames (``simulationError``), and a warning at start-up when the recording is a
  prefix (a recorder killed mid-run).
* `RecordedHub` keeps a recorded account diff whose transaction was not recorded (a
  transaction of another program that changed a recorded account) off the transaction,
  logs and signature subscriptions.

What a replay does not have: batch boundaries (each recorded block is one batch), the
transactions and accounts the recording did not subscribe to, and block times of blocks
without a recorded transaction (0.4 s a slot from the nearest recorded one).

Threads: `load_recording` runs on the caller's thread; everything else on the simulator's
event-loop thread (the SQLite connection allows that hand-over; one thread at a time).
"""
from __future__ import annotations

import base64
import bisect
import json
import logging
import sqlite3
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import base58
from solders.account import Account
from solders.hash import Hash
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from simsync.errors import SimsyncError
from simsync.localsim.accounts import Override
from simsync.localsim.chain import (
    MAX_PROCESSING_AGE,
    AccountDiff,
    Chain,
    ExecutedTx,
    Rejected,
    TxRecord,
)
from simsync.localsim.faults import FaultPlan
from simsync.localsim.history import EPOCH_UTC, History, HistTx, TxPlan
from simsync.localsim.pubsub import Event, PubSubHub, Subscription
from simsync.localsim.registry import Registry
from simsync.localsim.session import BacktestSession, CreateParams
from simsync.localsim.wire import RequestError, error_params
from simsync.recording_format import RecordingError, check_header, parse_line, raw_lines

log = logging.getLogger(__name__)
JsonObj = Dict[str, Any]

SYSVAR_OWNER = "Sysvar1111111111111111111111111111111111111"
#: The notifications a recorded diff without its transaction may go to.
DIFF_NOTIFICATIONS = ("accountDiffNotification", "accountNotification", "programNotification")
_TX, _DIFF = 0, 1
_BLOCK_CACHE = 256


class RecordingNotFound(SimsyncError):
    """The recording file to serve does not exist (or cannot be opened)."""


@dataclass(frozen=True)
class RecordedTx(HistTx):
    """One entry of a recorded block: a transaction the recording saw (``result``: its
    ``transactionNotification`` result as recorded, ``tx`` decoded from it) or only its
    account diffs (``result`` None; ``tx`` then is a placeholder carrying the signature,
    never executed nor shown). ``diffs``: its ``accountDiffNotification`` results, in
    order."""

    signature: str
    result: Optional[JsonObj]
    diffs: Tuple[JsonObj, ...]


@dataclass(frozen=True)
class RecordedRecord(TxRecord):
    """A `TxRecord` of a recorded entry: notifications show the recorded result and diffs
    as recorded (``recorded``, ``recorded_diffs``), not re-rendered; ``recorded`` None
    marks a diff-only entry (no transaction to show)."""

    recorded: Optional[JsonObj] = field(default=None, repr=False, compare=False)
    recorded_diffs: Tuple[AccountDiff, ...] = field(default=(), repr=False, compare=False)

    @property   # the recorded diffs, not computed from changes
    def diffs(self) -> Tuple[AccountDiff, ...]:
        return self.recorded_diffs

    def result_json(self, encoding: str = "base64", signature_field: bool = False) -> JsonObj:
        """The recorded result itself when asked in the encoding it was recorded in."""
        recorded = self.recorded
        if recorded is not None and _encoding_of(recorded) == encoding:
            out = dict(recorded)
            if signature_field:
                out["signature"] = self.signature
            return out
        return super().result_json(encoding, signature_field)


def _encoding_of(result: JsonObj) -> Optional[str]:
    tx = result.get("transaction")
    if isinstance(tx, list) and len(tx) == 2 and isinstance(tx[1], str):
        return tx[1]
    return None


def _raw_transaction(result: JsonObj) -> bytes:
    """The wire bytes of a recorded transaction (``[data, base64|base58]``); RecordingError
    for another form."""
    tx = result.get("transaction")
    encoding = _encoding_of(result)
    if encoding == "base64":
        return base64.b64decode(tx[0])     # type: ignore[index]
    if encoding == "base58":
        return base58.b58decode(tx[0])     # type: ignore[index]
    raise RecordingError("a recorded transaction is not in base64 or base58 "
                         f"(got {str(tx)[:60]!r}): record with the default encoding")


def _first_signature(raw: bytes) -> str:
    """The first signature of wire transaction bytes (a one-byte short-vec count)."""
    if not raw or not 0 < raw[0] < 0x80 or len(raw) < 65:
        raise RecordingError("a recorded transaction has no signature")
    return base58.b58encode(raw[1:65]).decode("ascii")


def _account(obj: JsonObj) -> Account:
    """A solders Account from Solana's ``UiAccount`` JSON (base64/base58 data)."""
    data = obj.get("data")
    raw = b""
    if isinstance(data, list) and data:
        raw = (base58.b58decode(data[0]) if len(data) > 1 and data[1] == "base58"
               else base64.b64decode(data[0]))
    return Account(int(obj["lamports"]), raw, Pubkey.from_string(obj["owner"]),
                   bool(obj.get("executable", False)), int(obj.get("rentEpoch", 0)) % (1 << 64))


def _absent() -> Account:
    return Account(0, b"", Pubkey.default(), False, 0)


def _merge(txs: Sequence[str], diffs: Sequence[str]) -> List[str]:
    """One order of a block's signatures consistent with both streams' orders (each is the
    history's order of what it carries)."""
    in_txs, in_diffs = set(txs), set(diffs)
    out: List[str] = []
    i = j = 0
    while i < len(txs) or j < len(diffs):
        if j < len(diffs) and diffs[j] not in in_txs:
            out.append(diffs[j])
            j += 1
        elif i < len(txs) and txs[i] not in in_diffs:
            out.append(txs[i])
            i += 1
        elif i < len(txs):
            out.append(txs[i])
            if j < len(diffs) and diffs[j] == txs[i]:
                j += 1
            i += 1
        else:           # a diff stream anchor already taken from the transactions
            j += 1
    return list(dict.fromkeys(out))


class RecordedHistory(History):
    """The recorded range as a `History`: one bundle (the recorded slots), one batch per
    produced block. Build it with `load_recording`."""

    def __init__(self, path: str, header: JsonObj, db: sqlite3.Connection, slots: List[int],
                 last_slot: int, complete: bool, summary: Optional[JsonObj],
                 blocks: Dict[int, Tuple[str, Optional[int]]], times: Dict[int, int],
                 first_pre: Dict[str, Optional[JsonObj]], touches: Dict[str, array[int]],
                 completed_seen: bool) -> None:
        first = int(header["start_slot"])
        super().__init__(0, first, last_slot - first + 1, 1)
        self.path = path
        self.header = header
        self.complete = complete
        #: the ``completed`` event's summary as recorded (None: none was recorded)
        self.summary = summary
        self.completed_seen = completed_seen
        self._db = db
        self._slots = slots
        self._slot_set = set(slots)
        self._pauses = blocks
        self._times = times
        self._time_slots = sorted(times)
        self._first_pre = first_pre
        self._touches = touches
        self._cache: OrderedDict[int, Tuple[Tuple[RecordedTx, ...], ...]] = OrderedDict()
        self.closed = False

    @property
    def warning(self) -> Optional[str]:
        """What a replay of a prefix must say (None for a complete recording)."""
        if self.complete:
            return None
        return (f"the recording {self.path} is incomplete (its recorder stopped before the "
                f"end, slot {self.header['end_slot']}): serving its prefix, slots "
                f"{self.first_slot}-{self.last_slot}; the notifications of the last slots "
                "may be incomplete and no summary was recorded")

    def describe_range(self) -> str:
        return f"the recording holds slots {self.first_slot}-{self.last_slot}"

    # -- layout ----------------------------------------------------------------------------
    def is_produced(self, slot: int) -> bool:
        return slot in self._slot_set

    _draw_produced = is_produced        # what History's block counts (block_height) draw

    def produced_slots(self, start: int, end: int) -> List[int]:
        lo = bisect.bisect_left(self._slots, start)
        hi = bisect.bisect_right(self._slots, end)
        return self._slots[lo:hi]

    def blockhash(self, slot: int) -> Hash:
        """The recorded blockhash at the pause before ``slot`` (the synthetic one where the
        recording has none: a slot outside it)."""
        found = self._pauses.get(slot)
        if found is None:
            return super().blockhash(slot)
        return Hash.from_string(found[0])

    def block_height(self, slot: int) -> int:
        """The recorded block height at the pause before ``slot`` (``lastValidBlockHeight``
        − 150), else the nearest recorded one below plus the produced blocks between."""
        found = self._pauses.get(slot)
        if found is not None and found[1] is not None:
            return int(found[1]) - MAX_PROCESSING_AGE
        known = [s for s in self._pauses if s < slot and self._pauses[s][1] is not None]
        if not known:
            return super().block_height(slot)
        base = max(known)
        return (int(self._pauses[base][1] or 0) - MAX_PROCESSING_AGE
                + len(self.produced_slots(base, slot - 1)))

    def block_time(self, slot: int) -> int:
        """The recorded ``blockTime`` of ``slot``'s transactions; else the nearest recorded
        one's, 0.4 s a slot away (the synthetic clock when none was recorded)."""
        found = self._times.get(slot)
        if found is not None:
            return found
        if not self._time_slots:
            return EPOCH_UTC + (slot - self.first_slot) * 2 // 5
        i = bisect.bisect_left(self._time_slots, slot)
        near = self._time_slots[min(i, len(self._time_slots) - 1)]
        if i > 0 and (i == len(self._time_slots) or slot - self._time_slots[i - 1] <= near - slot):
            near = self._time_slots[i - 1]
        return self._times[near] + (slot - near) * 2 // 5

    # -- state -----------------------------------------------------------------------------
    def genesis(self) -> List[Override]:
        return self.state_at(self.first_slot)

    def state_at(self, slot: int) -> List[Override]:
        """The recorded accounts before the block at ``slot``: each one's first recorded
        pre-state, then every recorded post-state of the slots before ``slot`` (an account
        created in the range is absent until then)."""
        if not self.in_range(slot):
            raise ValueError(f"slot {slot} is outside the recording")
        state: Dict[str, Optional[JsonObj]] = dict(self._first_pre)
        if slot > self.first_slot:
            for (body,) in self._db.execute(
                    "SELECT body FROM row WHERE kind = ? AND slot < ? ORDER BY seq",
                    (_DIFF, slot)):
                result = _result(body)
                state[result["account"]] = result.get("post")
        return [(Pubkey.from_string(k), _account(v)) for k, v in state.items() if v is not None]

    def recorded_accounts(self) -> Iterable[str]:
        """Every account a recorded diff names."""
        return self._touches.keys()

    def next_change(self, account: str, slot: int, applied: Set[str]) -> Optional[int]:
        """The first slot ≥ ``slot`` at which the recording changes ``account`` in an entry
        whose signature is not in ``applied`` (the current slot's applied entries)."""
        slots = self._touches.get(account)
        if slots is None:
            return None
        i = bisect.bisect_left(slots, slot)
        if i < len(slots) and slots[i] == slot:
            pending = any(d["account"] == account for e in self.entries(slot)
                          if e.signature not in applied for d in e.diffs)
            if pending:
                return slot
            i = bisect.bisect_right(slots, slot)
        return slots[i] if i < len(slots) else None

    # -- blocks ----------------------------------------------------------------------------
    def plan(self, slot: int) -> Tuple[Tuple[TxPlan, ...], ...]:
        return tuple(tuple(e.plan for e in batch) for batch in self.block(slot))

    def block(self, slot: int) -> Tuple[Tuple[RecordedTx, ...], ...]:
        """The recorded block at ``slot`` as one batch (empty: a skipped slot, or a block
        without a recorded transaction or diff)."""
        cached = self._cache.get(slot)
        if cached is not None:
            return cached
        built = self._assemble(slot)
        self._cache[slot] = built
        while len(self._cache) > _BLOCK_CACHE:
            self._cache.popitem(last=False)
        return built

    def entries(self, slot: int) -> Tuple[RecordedTx, ...]:
        block = self.block(slot)
        return block[0] if block else ()

    def entry(self, slot: int, signature: str) -> Optional[RecordedTx]:
        return next((e for e in self.entries(slot) if e.signature == signature), None)

    def _assemble(self, slot: int) -> Tuple[Tuple[RecordedTx, ...], ...]:
        if self.closed or slot not in self._slot_set:
            return ()
        results: Dict[str, JsonObj] = {}
        diffs: Dict[str, List[JsonObj]] = {}
        tx_order: List[str] = []
        diff_order: List[str] = []
        for kind, signature, body in self._db.execute(
                "SELECT kind, sig, body FROM row WHERE slot = ? ORDER BY seq", (slot,)):
            result = _result(body)
            if kind == _TX:
                if signature not in results:
                    results[signature] = result
                    tx_order.append(signature)
            else:
                if signature not in diffs:
                    diffs[signature] = []
                    diff_order.append(signature)
                if result not in diffs[signature]:      # a duplicate (a resumed recorder)
                    diffs[signature].append(result)
        entries = tuple(self._entry(sig, results.get(sig), tuple(diffs.get(sig, ())))
                        for sig in _merge(tx_order, diff_order))
        return (entries,) if entries else ()

    @staticmethod
    def _entry(signature: str, result: Optional[JsonObj],
               diffs: Tuple[JsonObj, ...]) -> RecordedTx:
        if result is not None:
            tx = VersionedTransaction.from_bytes(_raw_transaction(result))
            keys = [str(k) for k in tx.message.account_keys]
            loaded = (result.get("meta") or {}).get("loadedAddresses") or {}
            all_keys = tuple(keys + list(loaded.get("writable", []))
                             + list(loaded.get("readonly", [])))
            programs = tuple(dict.fromkeys(keys[ix.program_id_index]
                                           for ix in tx.message.instructions))
            plan = TxPlan("recorded", keys[0], programs, all_keys)
        else:   # diff-only: a placeholder that carries the signature (never executed)
            payer = Pubkey.from_string(diffs[0]["account"])
            message = MessageV0.try_compile(payer, [], [], Hash.default())
            tx = VersionedTransaction.populate(message, [Signature.from_string(signature)])
            plan = TxPlan("recorded-diffs", str(payer), (), ())
        return RecordedTx(plan, tx, signature, result, diffs)

    def close(self) -> None:
        """Drop the temporary table (idempotent); the history serves no block after."""
        if not self.closed:
            self.closed = True
            self._cache.clear()
            self._db.close()


def _result(body: bytes) -> JsonObj:
    return dict(json.loads(body)["wire"]["params"]["result"])


def check_file(path: str) -> JsonObj:
    """The header of the recording at ``path``, reading only its first frame (a quick check
    before starting a simulator for it). Raises `RecordingNotFound` or ``RecordingError``."""
    try:
        for _, line in raw_lines(path):
            return check_header(path, parse_line(path, line))
    except FileNotFoundError:
        raise RecordingNotFound(f"no recording at {path} (record one with "
                                "`simsync record`)") from None
    except OSError as exc:
        raise RecordingNotFound(f"the recording {path} cannot be read: {exc}") from None
    return check_header(path, None)


def load_recording(path: str) -> RecordedHistory:
    """Load the recording at ``path`` (calling thread; reads it once, a frame at a time).

    Raises `RecordingNotFound` when the file does not exist or cannot be read,
    ``RecordingError`` when it is not a recording, or holds no complete block. A prefix (no
    ``end`` record) loads with ``complete`` False, serving the slots whose block it holds
    up to the last announced one, and logs a WARNING (`RecordedHistory.warning`)."""
    db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
    try:
        return _load(path, db)
    except BaseException:
        db.close()
        raise


def _load(path: str, db: sqlite3.Connection) -> RecordedHistory:
    db.executescript(
        "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-2048;"
        "CREATE TABLE row (seq INTEGER PRIMARY KEY, slot INTEGER NOT NULL,"
        " kind INTEGER NOT NULL, sig TEXT NOT NULL, body BLOB NOT NULL);")
    header: Optional[JsonObj] = None
    slots: List[int] = []
    blocks: Dict[int, Tuple[str, Optional[int]]] = {}
    times: Dict[int, int] = {}
    first_pre: Dict[str, Optional[JsonObj]] = {}
    touches: Dict[str, array[int]] = {}
    summary: Optional[JsonObj] = None
    completed = complete = False
    pending: List[Tuple[int, int, str, bytes]] = []
    try:
        lines = raw_lines(path)
        for _, line in lines:
            record = parse_line(path, line)
            if header is None:
                header = check_header(path, record)
                continue
            kind = record.get("type")
            if kind == "event":
                wire = record.get("wire") or {}
                method = wire.get("method")
                if method == "transactionNotification":
                    result = wire["params"]["result"]
                    slot = int(result["slot"])
                    signature = _first_signature(_raw_transaction(result))
                    pending.append((slot, _TX, signature, line))
                    if isinstance(result.get("blockTime"), int):
                        times.setdefault(slot, result["blockTime"])
                elif method == "accountDiffNotification":
                    result = wire["params"]["result"]
                    slot = int(result["context"]["slot"])
                    account = str(result["account"])
                    pending.append((slot, _DIFF, str(result["signature"]), line))
                    if account not in first_pre:
                        first_pre[account] = result.get("pre")
                    seen = touches.setdefault(account, array("q"))
                    if not seen or seen[-1] != slot:
                        seen.append(slot)
                elif method == "slotNotification" and isinstance(wire.get("params"), int):
                    if not slots or wire["params"] > slots[-1]:
                        slots.append(int(wire["params"]))
                elif method == "completed":
                    completed = True
                    params = wire.get("params")
                    found = params.get("summary") if isinstance(params, dict) else None
                    summary = found if isinstance(found, dict) else None
            elif kind == "block" and isinstance(record.get("slot"), int):
                blocks[record["slot"]] = (str(record["blockhash"]),
                                          record.get("last_valid_block_height"))
            elif kind == "end":
                complete = True
            if len(pending) >= 1000:
                _insert(db, pending)
        _insert(db, pending)
    except FileNotFoundError:
        raise RecordingNotFound(f"no recording at {path} (record one with "
                                "`simsync record`)") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordingError(f"{path}: a record is not what the format says ({exc!r})"
                             ) from None
    except OSError as exc:
        raise RecordingNotFound(f"the recording {path} cannot be read: {exc}") from None
    if header is None:
        raise RecordingError(f"{path} has no complete simsync recording header "
                             "(truncated or not a recording)")
    db.execute("CREATE INDEX row_slot ON row (slot, seq)")
    # a recording built from JSON-RPC (`simsync.recording_rpc`) has no control events but
    # slots: its `end` record completes it, and each block is whole in the frame that
    # announces it; a session's recording announces a slot before its block arrives
    from_rpc = header.get("source") == "json-rpc"
    complete = complete and (completed or from_rpc)
    if complete:
        last = int(header["end_slot"])
    else:
        if len(slots) < (1 if from_rpc else 2):
            raise RecordingError(f"{path} is an incomplete recording that holds no whole "
                                 "block (its recorder stopped before the first step)")
        if not from_rpc:
            slots.pop()         # announced, but its block is not in the file
        last = slots[-1]
    history = RecordedHistory(path, header, db, slots, last, complete, summary, blocks, times,
                              first_pre, touches, completed)
    if history.warning is not None:
        log.warning("%s", history.warning)
    return history


def _insert(db: sqlite3.Connection, pending: List[Tuple[int, int, str, bytes]]) -> None:
    if pending:
        db.executemany("INSERT INTO row (slot, kind, sig, body) VALUES (?, ?, ?, ?)", pending)
        pending.clear()


class RecordedChain(Chain):
    """A `Chain` over a `RecordedHistory`: history is applied from the recording, the user's
    transactions execute against the recorded state. Event-loop thread only."""

    def __init__(self, history: History,
                 on_executed: Optional[Callable[[ExecutedTx], None]] = None,
                 start_slot: Optional[int] = None) -> None:
        if not isinstance(history, RecordedHistory):
            raise TypeError("a RecordedChain replays a RecordedHistory")
        self.recording = history
        #: accounts whose state is known: recorded, or installed by the user
        self._known: Set[str] = set(history.recorded_accounts())
        #: signatures of the current slot's recorded entries applied so far
        self._applied: Set[str] = set()
        self._warnings: List[str] = []
        #: user transactions' changes the recording overwrites later (the summary's
        #: ``replay.diverged``): ``{account, slot, signature}``
        self.diverged: List[JsonObj] = []
        super().__init__(history, on_executed, start_slot)

    def warp(self, slot: int) -> None:
        if slot != self.slot:
            self._applied = set()
        super().warp(slot)

    def install(self, overrides: Sequence[Override]) -> None:
        super().install(overrides)
        self._known.update(str(key) for key, _ in overrides)

    def take_warnings(self) -> List[str]:
        """The divergence warnings not yet sent (and forget them)."""
        out, self._warnings = self._warnings, []
        return out

    def admit(self, tx: VersionedTransaction, verify: bool = True) -> Optional[Rejected]:
        """The runtime's checks, then: every account the transaction loads must be one
        whose state the recording (or the user) gave, a program or a sysvar."""
        rejected = super().admit(tx, verify)
        if rejected is not None:
            return rejected
        for key in self._account_keys(tx):
            if key not in self._known and not self._builtin(key):
                return Rejected(f"AccountNotRecorded: account {key} was never seen by the "
                                "recording (its state is unknown; install it with "
                                "modifyAccountStates or modifyAccounts to use it)")
        return None

    def _builtin(self, key: str) -> bool:
        account = self.svm.get_account(Pubkey.from_string(key))
        return account is not None and (account.executable or str(account.owner) == SYSVAR_OWNER)

    def execute(self, tx: VersionedTransaction, batch_index: Optional[int] = None,
                source: str = "history") -> TxRecord | Rejected:
        if source == "history":
            entry = self.recording.entry(self.slot, str(tx.signatures[0]))
            if entry is None:
                return Rejected("the recording has no such transaction")
            return self._apply(entry, batch_index)
        record = super().execute(tx, batch_index, source)
        if isinstance(record, TxRecord):
            self._check_divergence(record)
        return record

    def _apply(self, entry: RecordedTx, batch_index: Optional[int]) -> TxRecord:
        """Write the entry's recorded post-states and record it as executed."""
        self._applied.add(entry.signature)
        states = [(Pubkey.from_string(d["account"]),
                   _account(d["post"]) if d.get("post") is not None else _absent())
                  for d in entry.diffs]
        if states:
            self.install(states)
        diffs = tuple(AccountDiff(d["account"], d.get("pre"), d.get("post"))
                      for d in entry.diffs)
        result = entry.result
        if result is None:
            return RecordedRecord(ExecutedTx(self.slot, entry.signature, (), True, batch_index),
                                  b"", "legacy", tuple(d.account for d in diffs), {},
                                  self.history.block_time(self.slot), recorded=None,
                                  recorded_diffs=diffs)
        meta = result.get("meta") or {}
        err = meta.get("err")
        plan = entry.plan
        executed = ExecutedTx(self.slot, entry.signature, plan.program_ids, err is None,
                              batch_index, "history", err)
        block_time = result.get("blockTime")
        record = RecordedRecord(
            executed, bytes(entry.tx), result.get("version", "legacy"), plan.account_keys,
            meta, block_time if isinstance(block_time, int) else
            self.history.block_time(self.slot), recorded=result, recorded_diffs=diffs)
        self.log.add(record)
        self.history_executed += 1
        self.history_failed += err is not None
        if self._on_executed is not None:
            self._on_executed(executed)
        return record

    def _check_divergence(self, record: TxRecord) -> None:
        for diff in record.diffs:
            later = self.recording.next_change(diff.account, self.slot, self._applied)
            if later is None:
                continue
            self.diverged.append({"account": diff.account, "slot": later,
                                  "signature": record.signature})
            self._warnings.append(
                f"replay diverges: transaction {record.signature} changed account "
                f"{diff.account}, which the recording changes again at slot {later}; from "
                "there the replay follows the recording, not this change (a recording is a "
                "replay of history, not a fork of it)")


class RecordedHub(PubSubHub):
    """A session's PubSub over a recording: a diff-only entry goes to diff subscriptions
    only."""

    def _deliver(self, sub: Subscription, event: Event) -> None:
        if (isinstance(event, RecordedRecord) and event.recorded is None
                and sub.notify not in DIFF_NOTIFICATIONS):
            return
        super()._deliver(sub, event)


class RecordedSession(BacktestSession):
    """A `BacktestSession` over a `RecordedHistory` and a `RecordedChain`."""

    def __init__(self, session_id: str, params: CreateParams, history: History, chain: Chain,
                 slots: List[int], *, sequenced: bool, slot_delay: float,
                 on_completed: Callable[[BacktestSession], None],
                 faults: Optional[FaultPlan] = None) -> None:
        if not isinstance(history, RecordedHistory) or not isinstance(chain, RecordedChain):
            raise TypeError("a RecordedSession replays a RecordedHistory on a RecordedChain")
        super().__init__(session_id, params, history, chain, slots, sequenced=sequenced,
                         slot_delay=slot_delay, on_completed=on_completed, faults=faults)
        self.recording = history
        self.replay_chain = chain
        self.hub = RecordedHub(self.faults)

    def _warn(self, message: str) -> None:
        self.emit("error", error_params("simulationError", error=message))

    async def _startup(self) -> None:
        warning = self.recording.warning
        if warning is not None:
            self._warn(warning)
        await super()._startup()

    def _flush_warnings(self) -> None:
        for message in self.replay_chain.take_warnings():
            self._warn(message)

    def _pause(self, pause: Any) -> None:
        self._flush_warnings()
        super()._pause(pause)

    def _complete(self) -> None:
        self._flush_warnings()
        super()._complete()

    def _summary(self) -> JsonObj:
        """The recorded summary (for the whole recorded range), plus ``replay`` when there
        is something to say: ``recording: "prefix"``, ``summaryOf: [first, last]`` (this
        session's range is not the recorded one: no summary of it was recorded),
        ``diverged: [{account, slot, signature}]``."""
        rec = self.recording
        whole = (self.params.start_slot <= rec.first_slot
                 and self.params.end_slot >= rec.last_slot)
        out: JsonObj = dict(rec.summary) if rec.summary is not None and whole else {}
        notes: JsonObj = {}
        if not rec.complete:
            notes["recording"] = "prefix"
        if not whole and rec.summary is not None:
            notes["summaryOf"] = [rec.first_slot, rec.last_slot]
        if self.replay_chain.diverged:
            notes["diverged"] = list(self.replay_chain.diverged)
        if notes:
            out["replay"] = notes
        return out


class RecordedRegistry(Registry):
    """The registry of a simulator serving a recording: its sessions replay it; a range
    outside it is ``bundleNotFound`` naming the recorded range."""

    chain_type = RecordedChain
    session_type = RecordedSession

    def check_range(self, params: CreateParams) -> None:
        try:
            super().check_range(params)
        except RequestError as exc:
            variant = next(iter(exc.params)) if isinstance(exc.params, dict) else exc.params
            history = self.history
            note = (history.describe_range() if isinstance(history, RecordedHistory)
                    else "")
            raise RequestError(error_params(str(variant), start_slot=params.start_slot,
                                            end_slot=params.end_slot, error=note)) from None


__all__ = ["RecordedChain", "RecordedHistory", "RecordedHub", "RecordedRecord",
           "RecordedRegistry", "RecordedSession", "RecordedTx", "RecordingNotFound",
           "check_file", "load_recording"]
