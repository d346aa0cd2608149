"""One session's simulated chain: a LiteSVM instance plus the record of what it executed.

A `Chain` is owned by one session and used only on the simulator's event-loop thread (LiteSVM is
not shared across threads). Before a transaction runs, the chain applies Agave's admission checks
itself (`Chain.admit`): signatures verified, a signature already processed rejected
(`AlreadyProcessed`), the recent blockhash one of the last `MAX_PROCESSING_AGE` blocks'
(`BlockhashNotFound`); a rejected transaction is not executed and pays no fee. (LiteSVM's own
checks stay off: its duplicate check needs its signature verification, and its blockhash check
knows only the latest blockhash, not Agave's window.) The Clock sysvar follows each block's time
and the epoch schedule. Each executed transaction becomes a `TxRecord` (what getTransaction,
transactionSubscribe and accountDiffSubscribe need); its `ExecutedTx` is handed to ``on_executed``
so the simulator can show it to tests on another thread.
"""
from __future__ import annotations

import base64
import functools
import json
import pickle
import sqlite3
import sys
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import base58
import zstandard
from solders.account import Account
from solders.address_lookup_table_account import AddressLookupTable
from solders.clock import Clock
from solders.litesvm import LiteSVM
from solders.message import Message, MessageV0, MessageV1
from solders.pubkey import Pubkey
from solders.rpc.responses import RpcSimulateTransactionResult
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata

from simsync.localsim import parsed
from simsync.localsim.accounts import AccountDataError, Override, account_json, order_for_install
from simsync.localsim.history import History

JsonObj = Dict[str, Any]

#: Agave's recent-blockhash window, in blocks (``MAX_PROCESSING_AGE``); a transaction whose
#: blockhash is older is rejected, and ``lastValidBlockHeight`` is the height + this.
MAX_PROCESSING_AGE = 150
#: Mainnet's epoch schedule (no warm-up): epoch 925 at slot 400,000,000.
SLOTS_PER_EPOCH = 432_000
_EMPTY = Account(0, b"", Pubkey.default(), False, 0)  # what an absent account reads as
_TOKEN_PROGRAM_KEYS = frozenset(Pubkey.from_string(p) for p in parsed.TOKEN_PROGRAMS)


@dataclass(frozen=True)
class Rejected:
    """A transaction the runtime refused before executing it (no fee, no record): ``err``
    is the TransactionError name (``SignatureFailure``, ``AlreadyProcessed``,
    ``BlockhashNotFound``)."""
    err: str


@dataclass(frozen=True)
class ExecutedTx:
    """One transaction a session executed (historical, user ``continue`` or RPC-submitted).

    ``program_ids``: programs invoked by top-level instructions. ``batch_index``: the historical
    batch, None for user and RPC transactions. ``source``: "history", "user" or "rpc".
    ``err``: Solana's JSON form of the error, None on success.
    """

    slot: int
    signature: str
    program_ids: Tuple[str, ...]
    ok: bool
    batch_index: Optional[int] = None
    source: str = "history"
    err: Any = None


@dataclass(frozen=True)
class AccountDiff:
    """An account a transaction changed; ``pre`` None = created, ``post`` None = deleted."""

    account: str
    pre: Optional[JsonObj]
    post: Optional[JsonObj]

    def owners(self) -> Tuple[str, ...]:
        return tuple(side["owner"] for side in (self.pre, self.post) if side is not None)


#: One account a transaction loaded: ``(address, before, after)`` (None = absent).
AccountChange = Tuple[str, Optional[Account], Optional[Account]]


@dataclass(frozen=True)
class TxRecord:
    """Everything the data plane serves about one executed transaction.

    ``changes``: the accounts it loaded, before and after (solders `Account` objects, native
    and compact); present on a freshly executed record (notifications, the replay window) and
    empty on one read back from the chain's log (`Chain.record`), which keeps no account
    states. ``diffs`` is built from them on first use, so no account JSON exists unless a
    subscriber renders it."""

    executed: ExecutedTx
    raw: bytes
    version: Union[int, str]
    account_keys: Tuple[str, ...]
    meta: JsonObj
    block_time: int
    changes: Tuple[AccountChange, ...] = field(default=(), repr=False, compare=False)

    @functools.cached_property
    def diffs(self) -> Tuple[AccountDiff, ...]:
        """The accounts it changed (first occurrence of each address), as JSON sides."""
        return _diffs(self.changes)

    @property
    def slot(self) -> int:
        return self.executed.slot

    @property
    def signature(self) -> str:
        return self.executed.signature

    def result_json(self, encoding: str = "base64", signature_field: bool = False) -> JsonObj:
        """getTransaction's result with the transaction in ``encoding`` (``json``,
        ``jsonParsed``, ``base58``, ``base64``; ValueError otherwise). ``signature_field`` adds
        the non-standard top-level ``signature`` older simulators sent."""
        out = {"slot": self.slot, "transaction": encode_transaction(self.raw, encoding),
               "meta": self.meta, "blockTime": self.block_time, "version": self.version}
        if signature_field:
            out["signature"] = self.signature
        return out


class ExecutedLog:
    """The `ExecutedTx` of one session, appended in order, in compact columns: about 80 bytes
    a transaction (the raw 64-byte signature, the slot, small indexes; the program-id tuples
    kept once, errors only for failed ones) against ~320 for a list of `ExecutedTx`. What the
    simulator's test view (`LocalSimulator.executed`) keeps for a session, also after its chain
    is freed. Iterating or indexing builds `ExecutedTx` objects. Not thread-safe: the caller
    locks (the registry appends on the event loop and reads on the test thread)."""

    _SOURCES = ("history", "user", "rpc")

    def __init__(self) -> None:
        self._slots = array("q")
        self._signatures = bytearray()
        self._programs = array("I")       # index into _program_sets
        self._batches = array("i")        # -1 = None
        self._sources = array("B")        # index into _SOURCES
        self._ok = bytearray()
        self._errors: Dict[int, Any] = {}  # position → err, when not None
        self._program_sets: List[Tuple[str, ...]] = []
        self._program_index: Dict[Tuple[str, ...], int] = {}

    def append(self, executed: ExecutedTx) -> None:
        position = len(self._slots)
        index = self._program_index.get(executed.program_ids)
        if index is None:
            index = self._program_index[executed.program_ids] = len(self._program_sets)
            self._program_sets.append(executed.program_ids)
        self._signatures += bytes(Signature.from_string(executed.signature))
        self._slots.append(executed.slot)
        self._programs.append(index)
        self._batches.append(-1 if executed.batch_index is None else executed.batch_index)
        self._sources.append(self._SOURCES.index(executed.source))
        self._ok.append(executed.ok)
        if executed.err is not None:
            self._errors[position] = executed.err

    def __len__(self) -> int:
        return len(self._slots)

    def __getitem__(self, position: int) -> ExecutedTx:
        if not -len(self) <= position < len(self):
            raise IndexError("ExecutedLog index out of range")
        position %= len(self)
        batch = self._batches[position]
        signature = Signature.from_bytes(bytes(self._signatures[64 * position:
                                                                64 * position + 64]))
        return ExecutedTx(self._slots[position], str(signature),
                          self._program_sets[self._programs[position]],
                          bool(self._ok[position]), None if batch < 0 else batch,
                          self._SOURCES[self._sources[position]], self._errors.get(position))

    def __iter__(self) -> Iterator[ExecutedTx]:
        return (self[i] for i in range(len(self)))


TX_ENCODINGS = ("json", "jsonParsed", "base58", "base64")


def static_keys_json(message: Union[Message, MessageV0, MessageV1]) -> List[JsonObj]:
    """The message's static account keys as ``jsonParsed`` annotates them:
    ``{pubkey, writable, signer, source: "transaction"}``, the roles from the header (Solana's
    rule: the first ``numRequiredSignatures`` keys sign, and of those the last
    ``numReadonlySignedAccounts`` are read-only; of the unsigned keys the last
    ``numReadonlyUnsignedAccounts`` are read-only)."""
    header = message.header
    keys = message.account_keys
    signed = header.num_required_signatures
    writable_signed = signed - header.num_readonly_signed_accounts
    writable_end = len(keys) - header.num_readonly_unsigned_accounts
    return [{"pubkey": str(key), "writable": i < writable_signed if i < signed
             else i < writable_end, "signer": i < signed, "source": "transaction"}
            for i, key in enumerate(keys)]


def encode_transaction(raw: bytes, encoding: str) -> Any:
    """A wire transaction in one of Solana's `UiTransactionEncoding` forms: ``[text, enc]`` for
    ``base58``/``base64``, the ``{signatures, message}`` object for ``json``/``jsonParsed``."""
    if encoding == "base64":
        return [base64.b64encode(raw).decode("ascii"), "base64"]
    if encoding == "base58":
        return [base58.b58encode(raw).decode("ascii"), "base58"]
    if encoding not in ("json", "jsonParsed"):
        raise ValueError(f"unsupported transaction encoding {encoding!r}")
    tx = VersionedTransaction.from_bytes(raw)
    message = tx.message
    header = message.header
    keys = [str(k) for k in message.account_keys]
    signed = header.num_required_signatures
    ro_signed = header.num_readonly_signed_accounts
    ro_unsigned = header.num_readonly_unsigned_accounts
    msg: JsonObj = {"recentBlockhash": str(message.recent_blockhash)}
    if encoding == "json":
        msg["accountKeys"] = keys
        msg["header"] = {"numRequiredSignatures": signed,
                         "numReadonlySignedAccounts": ro_signed,
                         "numReadonlyUnsignedAccounts": ro_unsigned}
        msg["instructions"] = [
            {"programIdIndex": ix.program_id_index, "accounts": list(ix.accounts),
             "data": base58.b58encode(bytes(ix.data)).decode("ascii"), "stackHeight": None}
            for ix in message.instructions]
    else:
        msg["accountKeys"] = static_keys_json(message)
        msg["instructions"] = [
            {"programId": keys[ix.program_id_index],
             "accounts": [keys[a] for a in ix.accounts if a < len(keys)],
             "data": base58.b58encode(bytes(ix.data)).decode("ascii"), "stackHeight": None}
            for ix in message.instructions]
    if isinstance(message, MessageV0):
        msg["addressTableLookups"] = [
            {"accountKey": str(lk.account_key), "writableIndexes": list(lk.writable_indexes),
             "readonlyIndexes": list(lk.readonly_indexes)}
            for lk in message.address_table_lookups]
    return {"signatures": [str(sig) for sig in tx.signatures], "message": msg}


def error_json(err: Any) -> Any:
    """Solana's JSON form of a solders TransactionError (solders does the conversion)."""
    text = RpcSimulateTransactionResult(err=err, logs=None, accounts=None, units_consumed=None,
                                        return_data=None).to_json()
    return json.loads(text)["err"]


class TxLog:
    """Every transaction a chain executed, spilled to a private temporary SQLite database
    (on disk, deleted on `close`; only SQLite's small page cache stays in memory), so a
    session's memory does not grow with its length. One thread at a time (the chain's).

    Stored per transaction: what getTransaction, getSignatureStatuses, getBlock and
    getSignaturesForAddress answer (the wire bytes, the meta, the executed summary, the
    account keys), zstandard-compressed (level 1: zlib's size at a fifth of its cost, which
    had been more than the SVM's execution); never the account states before and after (diffs are
    live-only: notifications and the PubSub replay window)."""

    def __init__(self) -> None:
        self._db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        self._db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-2048;"
            "CREATE TABLE tx (seq INTEGER PRIMARY KEY, sig TEXT UNIQUE NOT NULL,"
            " slot INTEGER NOT NULL, body BLOB NOT NULL);"
            "CREATE INDEX tx_slot ON tx (slot, seq);"
            "CREATE TABLE addr (address TEXT NOT NULL, seq INTEGER NOT NULL);"
            "CREATE INDEX addr_seq ON addr (address, seq);")
        self.count = 0
        self.closed = False
        # rows not written yet: written together, in one SQLite transaction, before any
        # query and every PENDING_ROWS transactions (one transaction per row cost more
        # than the SVM's execution)
        self._tx_rows: List[Tuple[int, str, int, bytes]] = []
        self._addr_rows: List[Tuple[str, int]] = []
        self._pending_seq: Dict[str, int] = {}
        self._compress = zstandard.ZstdCompressor(level=1).compress
        self._decompress = zstandard.ZstdDecompressor().decompress

    #: Transactions kept in memory before they are written.
    PENDING_ROWS = 512

    def add(self, record: TxRecord) -> None:
        e = record.executed
        body = self._compress(pickle.dumps(
            (e.slot, e.signature, e.program_ids, e.ok, e.batch_index, e.source, e.err,
             record.raw, record.version, record.account_keys, record.meta,
             record.block_time), protocol=pickle.HIGHEST_PROTOCOL))
        self.count += 1
        self._tx_rows.append((self.count, e.signature, e.slot, body))
        self._pending_seq[e.signature] = self.count
        self._addr_rows.extend((a, self.count) for a in dict.fromkeys(record.account_keys))
        if len(self._tx_rows) >= self.PENDING_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._tx_rows:
            with self._db:      # BEGIN … COMMIT
                self._db.execute("BEGIN")
                self._db.executemany("INSERT INTO tx VALUES (?, ?, ?, ?)", self._tx_rows)
                self._db.executemany("INSERT INTO addr VALUES (?, ?)", self._addr_rows)
            self._tx_rows, self._addr_rows, self._pending_seq = [], [], {}

    def _query(self, sql: str, params: Tuple[Any, ...]) -> List[Any]:
        self._flush()
        return self._db.execute(sql, params).fetchall()

    def get(self, signature: str) -> Optional[TxRecord]:
        rows = self._query("SELECT body FROM tx WHERE sig = ?", (signature,))
        return self._load(rows[0][0]) if rows else None

    def seq_of(self, signature: str) -> Optional[int]:
        """The transaction's number (1-based, in execution order), None if unknown; asked
        before every execution (the status cache), so it does not write the pending rows."""
        seq = self._pending_seq.get(signature)
        if seq is not None:
            return seq
        row = self._db.execute("SELECT seq FROM tx WHERE sig = ?", (signature,)).fetchone()
        return None if row is None else int(row[0])

    def block(self, slot: int) -> List[TxRecord]:
        return [self._load(body) for (body,) in self._query(
            "SELECT body FROM tx WHERE slot = ? ORDER BY seq", (slot,))]

    def for_address(self, address: str, below: int, above: int, limit: int) -> List[TxRecord]:
        return [self._load(body) for (body,) in self._query(
            "SELECT tx.body FROM addr JOIN tx ON tx.seq = addr.seq WHERE addr.address = ?"
            " AND addr.seq < ? AND addr.seq > ? ORDER BY addr.seq DESC LIMIT ?",
            (address, below, above, limit))]

    def _load(self, body: bytes) -> TxRecord:
        (slot, signature, program_ids, ok, batch_index, source, err, raw, version, keys, meta,
         block_time) = pickle.loads(self._decompress(body))
        return TxRecord(ExecutedTx(slot, signature, program_ids, ok, batch_index, source, err),
                        raw, version, keys, meta, block_time)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._tx_rows, self._addr_rows, self._pending_seq = [], [], {}
            self._db.close()


class Chain:
    """A LiteSVM plus the session's executed-transaction log. Event-loop thread only.

    Memory: the LiteSVM (about 8 MiB) until `close`; the log on disk (`TxLog`); counters.
    Queries (`record`, `block_records`, `signatures_for`, `transaction_count`) read the log;
    after `close` they answer as for an empty chain."""

    def __init__(self, history: History,
                 on_executed: Optional[Callable[[ExecutedTx], None]] = None,
                 start_slot: Optional[int] = None) -> None:
        """A chain holding the history's accounts as they stand before the block at
        ``start_slot`` (`History.state_at`; the history's first slot when None)."""
        self.history = history
        # LiteSVM's own transaction history is off: the status cache is `admit`'s.
        self._svm: Optional[LiteSVM] = (LiteSVM().with_sigverify(False)
                                        .with_blockhash_check(False)
                                        .with_transaction_history(0))
        self.slot = history.first_slot
        self.ended = False
        self.log = TxLog()
        #: the history's own transactions executed, and how many of them failed
        self.history_executed = 0
        self.history_failed = 0
        self._on_executed = on_executed
        #: one tuple object per distinct program-id tuple (records share them)
        self._program_ids: Dict[Tuple[str, ...], Tuple[str, ...]] = {}
        #: the last MAX_PROCESSING_AGE + 1 blockhashes (current included) → block height
        self._recent: OrderedDict[str, int] = OrderedDict()
        self.block_height = history.block_height(self.slot)
        self.install(history.genesis() if start_slot is None else history.state_at(start_slot))

    # -- queries (what the RPC methods read) -----------------------------------------------
    def record(self, signature: str) -> Optional[TxRecord]:
        """The executed transaction with this signature, None if unknown (no account
        states: ``changes`` is empty)."""
        return None if self.log.closed else self.log.get(signature)

    def block_records(self, slot: int) -> List[TxRecord]:
        """The transactions executed in the block at ``slot``, in block order."""
        return [] if self.log.closed else self.log.block(slot)

    def signatures_for(self, address: str, before: Optional[str] = None,
                       until: Optional[str] = None, limit: int = 1000) -> List[TxRecord]:
        """Up to ``limit`` transactions that loaded ``address``, newest first, strictly
        older than ``before`` and strictly newer than ``until`` (signatures; an unknown
        ``before`` gives [], an unknown ``until`` is no bound), as getSignaturesForAddress."""
        if self.log.closed or limit <= 0:
            return []
        below = self.log.count + 1
        if before is not None:
            seq = self.log.seq_of(before)
            if seq is None:
                return []
            below = seq
        above = 0
        if until is not None:
            above = self.log.seq_of(until) or 0
        return self.log.for_address(address, below, above, limit)

    def transaction_count(self) -> int:
        """How many transactions this chain executed (failed ones included)."""
        return self.log.count

    def close(self) -> None:
        """Free the LiteSVM and the log (idempotent); the chain serves nothing after."""
        self.ended = True
        self.log.close()
        self._svm = None

    @property
    def svm(self) -> LiteSVM:
        """The session's LiteSVM; RuntimeError after `close`."""
        if self._svm is None:
            raise RuntimeError("the chain is closed (its session ended)")
        return self._svm
    # -- state -----------------------------------------------------------------------------
    def warp(self, slot: int) -> None:
        """Stand before the block at ``slot`` (a produced slot, ascending): the slot, the
        block height (one more block than at the previous warp, or the history's height at
        the first), the recent blockhash window and the Clock sysvar (the block's time,
        the epoch of mainnet's schedule)."""
        first = not self._recent
        self.block_height = (self.history.block_height(slot) if first
                             else self.block_height + 1)
        self.slot = slot
        self.svm.warp_to_slot(slot)
        self._recent[str(self.history.blockhash(slot))] = self.block_height
        while len(self._recent) > MAX_PROCESSING_AGE + 1:
            self._recent.popitem(last=False)
        epoch = slot // SLOTS_PER_EPOCH
        self.svm.set_clock(Clock(slot, self.history.block_time(epoch * SLOTS_PER_EPOCH), epoch,
                                 epoch + 1, self.history.block_time(slot)))

    def latest_blockhash(self) -> Tuple[str, int]:
        """``(blockhash, lastValidBlockHeight)`` at the current pause: the blockhash the
        next block is built on, valid until the block height passes height + 150."""
        return str(self.history.blockhash(self.slot)), self.block_height + MAX_PROCESSING_AGE

    def is_blockhash_valid(self, blockhash: str) -> bool:
        """Whether a transaction carrying ``blockhash`` would pass the age check now."""
        if not self._recent:  # before the first block: only the first block's own
            return blockhash == str(self.history.blockhash(self.slot))
        return blockhash in self._recent

    def admit(self, tx: VersionedTransaction, verify: bool = True) -> Optional[Rejected]:
        """Agave's checks before execution, in its order: signatures (``verify``), then
        the blockhash's age, then the status cache (a signature already processed)."""
        if verify and not all(tx.verify_with_results()):
            return Rejected("SignatureFailure")
        if not tx.uses_durable_nonce() and not self.is_blockhash_valid(
                str(tx.message.recent_blockhash)):
            return Rejected("BlockhashNotFound")
        if tx.signatures and self.log.seq_of(str(tx.signatures[0])) is not None:
            return Rejected("AlreadyProcessed")
        return None

    def install(self, overrides: Sequence[Override]) -> None:
        """Write accounts (data accounts before programs, so ProgramData precedes Program),
        all or none: an account LiteSVM refuses (an executable whose data is not a program
        it can load, e.g. not an ELF) undoes the ones written before it and raises
        `AccountDataError` (``invalidAccountEncoding``, naming the account and why)."""
        done: List[Tuple[Pubkey, Optional[Account]]] = []
        for pubkey, account in order_for_install(list(overrides)):
            before = self.svm.get_account(pubkey)
            try:
                self.svm.set_account(pubkey, account)
            except Exception as exc:  # solders' LiteSVMError: the account was not written
                for key, old in reversed(done):
                    self.svm.set_account(key, old if old is not None else _EMPTY)
                what = "program" if account.executable else "account"
                raise AccountDataError(
                    "invalidAccountEncoding", address=str(pubkey), encoding="base64",
                    error=f"{what} {pubkey} cannot be installed: {exc} (an executable's "
                          "data must be a program LiteSVM can load: an SBF ELF)") from None
            done.append((pubkey, before))

    def account(self, pubkey: Pubkey) -> Optional[Account]:
        account = self.svm.get_account(pubkey)
        if account is None or (account.lamports == 0 and not account.data):
            return None
        return account

    # -- execution -------------------------------------------------------------------------
    def execute(self, tx: VersionedTransaction, batch_index: Optional[int] = None,
                source: str = "history") -> Union[TxRecord, Rejected]:
        """Execute for real in the current slot, after the admission checks (``admit``;
        the history's own transactions are signed by construction and skip the signature
        check); a ``Rejected`` was not executed and changed nothing."""
        rejected = self.admit(tx, verify=source != "history")
        if rejected is not None:
            return rejected
        pubkeys = self._account_pubkeys(tx)
        keys = [str(p) for p in pubkeys]
        pre = [self.account(p) for p in pubkeys]
        result = self.svm.send_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            err = error_json(result.err())
            if err == "AlreadyProcessed":
                return Rejected(err)
            meta = result.meta()
        else:
            err, meta = None, result
        post = [self.account(p) for p in pubkeys]
        record = self._record(tx, keys, pre, post, meta, err, batch_index, source)
        self.log.add(record)
        if source == "history":
            self.history_executed += 1
            self.history_failed += err is not None
        if self._on_executed is not None:
            self._on_executed(record.executed)
        return record

    def simulate(self, tx: VersionedTransaction) -> JsonObj:
        """simulateTransaction's ``value``; the state is not changed."""
        result = self.svm.simulate_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            err: Any = error_json(result.err())
            meta = result.meta()
        else:
            err, meta = None, result.meta()
        return {"err": err, "logs": meta.logs(), "accounts": None,
                "unitsConsumed": meta.compute_units_consumed(), "returnData": None}

    # -- helpers ---------------------------------------------------------------------------
    def _account_keys(self, tx: VersionedTransaction) -> List[str]:
        """`_account_pubkeys` in base58."""
        return [str(k) for k in self._account_pubkeys(tx)]

    def _account_pubkeys(self, tx: VersionedTransaction) -> List[Pubkey]:
        """Static keys, then lookup-table writable, then lookup-table readonly (Solana order)."""
        message = tx.message
        keys = list(message.account_keys)
        if not isinstance(message, MessageV0) or not message.address_table_lookups:
            return keys
        writable: List[Pubkey] = []
        readonly: List[Pubkey] = []
        for lookup in message.address_table_lookups:
            table = self.lookup_table(lookup.account_key)
            if table is None:
                continue
            addresses = table.addresses
            writable += [addresses[i] for i in lookup.writable_indexes if i < len(addresses)]
            readonly += [addresses[i] for i in lookup.readonly_indexes if i < len(addresses)]
        return keys + writable + readonly

    def lookup_table(self, key: Pubkey) -> Optional[AddressLookupTable]:
        account = self.svm.get_account(key)
        if account is None:
            return None
        try:
            return AddressLookupTable.deserialize(bytes(account.data))
        except Exception:  # not a lookup table: LiteSVM will reject the transaction itself
            return None

    def _record(self, tx: VersionedTransaction, keys: List[str],
                pre: List[Optional[Account]], post: List[Optional[Account]],
                meta: TransactionMetadata, err: Any, batch_index: Optional[int],
                source: str) -> TxRecord:
        message = tx.message
        static = list(message.account_keys)
        program_ids = tuple(dict.fromkeys(sys.intern(str(static[ix.program_id_index]))
                                          for ix in message.instructions))
        program_ids = self._program_ids.setdefault(program_ids, program_ids)
        executed = ExecutedTx(self.slot, str(tx.signatures[0]), program_ids, err is None,
                              batch_index, source, err)
        version = tx.version()
        return TxRecord(executed, bytes(tx), version if isinstance(version, int) else "legacy",
                        tuple(keys), _meta_json(meta, err, pre, post, tx, keys, self.account),
                        self.history.block_time(self.slot), tuple(zip(keys, pre, post)))


def _lamports(account: Optional[Account]) -> int:
    return 0 if account is None else account.lamports


def _meta_json(meta: TransactionMetadata, err: Any, pre: List[Optional[Account]],
               post: List[Optional[Account]], tx: Optional[VersionedTransaction] = None,
               keys: Sequence[str] = (),
               lookup: Callable[[Pubkey], Optional[Account]] = lambda _: None) -> JsonObj:
    """Agave's ``UiTransactionStatusMeta`` (json). ``pre``/``post`` are the accounts of
    ``keys`` (static, then loaded writable, then loaded readonly) before and after;
    ``lookup`` reads a mint for the token balances' decimals."""
    decimals: Dict[str, Optional[int]] = {}     # mint → decimals, read once for pre and post
    return {"err": err, "status": {"Ok": None} if err is None else {"Err": err},
            "fee": meta.fee(), "preBalances": [_lamports(a) for a in pre],
            "postBalances": [_lamports(a) for a in post],
            "innerInstructions": _inner_json(meta), "logMessages": meta.logs(),
            "preTokenBalances": _token_balances(pre, lookup, decimals),
            "postTokenBalances": _token_balances(post, lookup, decimals), "rewards": [],
            "loadedAddresses": _loaded_addresses(tx, keys),
            "computeUnitsConsumed": meta.compute_units_consumed()}


def _token_balances(accounts: List[Optional[Account]],
                    lookup: Callable[[Pubkey], Optional[Account]],
                    decimals: Dict[str, Optional[int]]) -> List[JsonObj]:
    """Agave's ``UiTransactionTokenBalance`` of every token account among ``accounts``:
    ``{accountIndex, mint, owner, programId, uiTokenAmount}``; the mint's decimals are read
    with ``lookup`` once per mint into ``decimals`` (a token account whose mint is not found
    is left out, as Agave does)."""
    out: List[JsonObj] = []
    for index, account in enumerate(accounts):
        if account is None or account.owner not in _TOKEN_PROGRAM_KEYS:
            continue
        program = str(account.owner)
        held = parsed.token_account(program, bytes(account.data))
        if held is None:
            continue
        if held.mint not in decimals:
            mint_account = lookup(Pubkey.from_string(held.mint))
            state = None if mint_account is None else parsed.mint(
                str(mint_account.owner), bytes(mint_account.data))
            decimals[held.mint] = None if state is None else state.decimals
        places = decimals[held.mint]
        if places is None:
            continue
        out.append({"accountIndex": index, "mint": held.mint, "owner": held.owner,
                    "programId": program,
                    "uiTokenAmount": parsed.ui_token_amount(held.amount, places)})
    return out


def _loaded_addresses(tx: Optional[VersionedTransaction], keys: Sequence[str]) -> JsonObj:
    """``{writable, readonly}``: the lookup-table addresses a v0 transaction loaded."""
    if tx is None or not isinstance(tx.message, MessageV0):
        return {"writable": [], "readonly": []}
    message = tx.message
    loaded = list(keys[len(message.account_keys):])
    writable = sum(len(lookup.writable_indexes) for lookup in message.address_table_lookups)
    return {"writable": loaded[:writable], "readonly": loaded[writable:]}


def _inner_json(meta: TransactionMetadata) -> List[JsonObj]:
    out = []
    for index, inner in enumerate(meta.inner_instructions()):
        if not inner:
            continue
        out.append({"index": index, "instructions": [
            {"programIdIndex": ix.instruction().program_id_index,
             "accounts": list(ix.instruction().accounts),
             "data": base58.b58encode(bytes(ix.instruction().data)).decode("ascii"),
             "stackHeight": ix.stack_height()} for ix in inner]})
    return out


def _diffs(changes: Sequence[AccountChange]) -> Tuple[AccountDiff, ...]:
    out = []
    seen = set()
    for key, before, after in changes:
        if key in seen or before == after:
            continue
        seen.add(key)
        out.append(AccountDiff(key, None if before is None else account_json(before),
                               None if after is None else account_json(after)))
    return tuple(out)
