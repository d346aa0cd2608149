"""One session's simulated chain: a LiteSVM instance plus the record of what it executed.

A `Chain` is owned by one session and used only on the simulator's event-loop thread (LiteSVM is
not shared across threads). Signature checks and blockhash checks are off, so user transactions
with dummy signatures execute. Each executed transaction becomes a `TxRecord` (what getTransaction,
transactionSubscribe and accountDiffSubscribe need); its `ExecutedTx` is handed to ``on_executed``
so the simulator can show it to tests on another thread.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import base58
from solders.account import Account
from solders.address_lookup_table_account import AddressLookupTable
from solders.litesvm import LiteSVM
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.rpc.responses import RpcSimulateTransactionResult
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata

from simsync.localsim.accounts import Override, account_json, order_for_install
from simsync.localsim.history import History

JsonObj = Dict[str, Any]


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


@dataclass(frozen=True)
class TxRecord:
    """Everything the data plane serves about one executed transaction."""

    executed: ExecutedTx
    raw: bytes
    version: Union[int, str]
    account_keys: Tuple[str, ...]
    meta: JsonObj
    block_time: int
    diffs: Tuple[AccountDiff, ...]

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


TX_ENCODINGS = ("json", "jsonParsed", "base58", "base64")


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
        def writable(i: int) -> bool:
            if i < signed:
                return i < signed - ro_signed
            return i < len(keys) - ro_unsigned
        msg["accountKeys"] = [{"pubkey": k, "signer": i < signed, "writable": writable(i),
                               "source": "transaction"} for i, k in enumerate(keys)]
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


class Chain:
    """A LiteSVM plus the session's executed-transaction log. Event-loop thread only."""

    def __init__(self, history: History,
                 on_executed: Optional[Callable[[ExecutedTx], None]] = None) -> None:
        self.history = history
        self.svm = LiteSVM().with_sigverify(False).with_blockhash_check(False)
        self.slot = history.first_slot
        self.ended = False
        self.records: List[TxRecord] = []
        self.by_signature: Dict[str, TxRecord] = {}
        self._on_executed = on_executed
        self.install(history.genesis())

    # -- state -----------------------------------------------------------------------------
    def warp(self, slot: int) -> None:
        """Move the clock to ``slot`` and roll the blockhash."""
        self.slot = slot
        self.svm.warp_to_slot(slot)
        self.svm.expire_blockhash()

    def install(self, overrides: Sequence[Override]) -> None:
        """Write accounts (data accounts before programs, so ProgramData precedes Program)."""
        for pubkey, account in order_for_install(list(overrides)):
            self.svm.set_account(pubkey, account)

    def account(self, pubkey: Pubkey) -> Optional[Account]:
        account = self.svm.get_account(pubkey)
        if account is None or (account.lamports == 0 and not account.data):
            return None
        return account

    # -- execution -------------------------------------------------------------------------
    def execute(self, tx: VersionedTransaction, batch_index: Optional[int] = None,
                source: str = "history") -> Optional[TxRecord]:
        """Execute for real in the current slot; None when it was a duplicate (not executed)."""
        keys = self._account_keys(tx)
        pubkeys = [Pubkey.from_string(k) for k in keys]
        pre = [self.account(p) for p in pubkeys]
        result = self.svm.send_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            err = error_json(result.err())
            if err == "AlreadyProcessed":
                return None
            meta = result.meta()
        else:
            err, meta = None, result
        post = [self.account(p) for p in pubkeys]
        record = self._record(tx, keys, pre, post, meta, err, batch_index, source)
        self.records.append(record)
        self.by_signature[record.signature] = record
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
        """Static keys, then lookup-table writable, then lookup-table readonly (Solana order)."""
        message = tx.message
        keys = [str(k) for k in message.account_keys]
        if not isinstance(message, MessageV0):
            return keys
        writable: List[str] = []
        readonly: List[str] = []
        for lookup in message.address_table_lookups:
            table = self.lookup_table(lookup.account_key)
            if table is None:
                continue
            addresses = table.addresses
            writable += [str(addresses[i]) for i in lookup.writable_indexes if i < len(addresses)]
            readonly += [str(addresses[i]) for i in lookup.readonly_indexes if i < len(addresses)]
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
        program_ids = tuple(dict.fromkeys(str(static[ix.program_id_index])
                                          for ix in message.instructions))
        executed = ExecutedTx(self.slot, str(meta.signature()), program_ids, err is None,
                              batch_index, source, err)
        version = tx.version()
        return TxRecord(executed, bytes(tx), version if isinstance(version, int) else "legacy",
                        tuple(keys), _meta_json(meta, err, pre, post),
                        self.history.block_time(self.slot), _diffs(keys, pre, post))


def _lamports(account: Optional[Account]) -> int:
    return 0 if account is None else account.lamports


def _meta_json(meta: TransactionMetadata, err: Any, pre: List[Optional[Account]],
               post: List[Optional[Account]]) -> JsonObj:
    return {"err": err, "status": {"Ok": None} if err is None else {"Err": err},
            "fee": meta.fee(), "preBalances": [_lamports(a) for a in pre],
            "postBalances": [_lamports(a) for a in post],
            "innerInstructions": _inner_json(meta), "logMessages": meta.logs(),
            "preTokenBalances": [], "postTokenBalances": [], "rewards": [],
            "loadedAddresses": {"writable": [], "readonly": []},
            "computeUnitsConsumed": meta.compute_units_consumed()}


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


def _diffs(keys: List[str], pre: List[Optional[Account]],
           post: List[Optional[Account]]) -> Tuple[AccountDiff, ...]:
    out = []
    seen = set()
    for key, before, after in zip(keys, pre, post):
        if key in seen or before == after:
            continue
        seen.add(key)
        out.append(AccountDiff(key, None if before is None else account_json(before),
                               None if after is None else account_json(after)))
    return tuple(out)
