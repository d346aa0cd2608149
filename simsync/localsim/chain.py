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
import bisect
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import base58
from solders.account import Account
from solders.address_lookup_table_account import AddressLookupTable
from solders.clock import Clock
from solders.litesvm import LiteSVM
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.rpc.responses import RpcSimulateTransactionResult
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata

from simsync.localsim import parsed
from simsync.localsim.accounts import Override, account_json, order_for_install
from simsync.localsim.history import History

JsonObj = Dict[str, Any]

#: Agave's recent-blockhash window, in blocks (``MAX_PROCESSING_AGE``); a transaction whose
#: blockhash is older is rejected, and ``lastValidBlockHeight`` is the height + this.
MAX_PROCESSING_AGE = 150
#: Mainnet's epoch schedule (no warm-up): epoch 925 at slot 400,000,000.
SLOTS_PER_EPOCH = 432_000


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
        #: the last MAX_PROCESSING_AGE + 1 blockhashes (current included) → block height
        self._recent: OrderedDict[str, int] = OrderedDict()
        self.block_height = history.block_height(self.slot)
        self.install(history.genesis())

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
        if tx.signatures and str(tx.signatures[0]) in self.by_signature:
            return Rejected("AlreadyProcessed")
        return None

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
                source: str = "history") -> Union[TxRecord, Rejected]:
        """Execute for real in the current slot, after the admission checks (``admit``;
        the history's own transactions are signed by construction and skip the signature
        check); a ``Rejected`` was not executed and changed nothing."""
        rejected = self.admit(tx, verify=source != "history")
        if rejected is not None:
            return rejected
        keys = self._account_keys(tx)
        pubkeys = [Pubkey.from_string(k) for k in keys]
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
        executed = ExecutedTx(self.slot, str(tx.signatures[0]), program_ids, err is None,
                              batch_index, source, err)
        version = tx.version()
        return TxRecord(executed, bytes(tx), version if isinstance(version, int) else "legacy",
                        tuple(keys), _meta_json(meta, err, pre, post, tx, keys, self.account),
                        self.history.block_time(self.slot), _diffs(keys, pre, post))

    # -- queries: records are read only through these (the storage contract) ------------
    def record(self, signature: str) -> Optional[TxRecord]:
        """The executed transaction with this (first) signature, None when unknown."""
        return self.by_signature.get(signature)

    def block_records(self, slot: int) -> List[TxRecord]:
        """The transactions executed in ``slot``, in block order."""
        lo = bisect.bisect_left(self.records, slot, key=_record_slot)
        hi = bisect.bisect_right(self.records, slot, key=_record_slot)
        return self.records[lo:hi]

    def signatures_for(self, address: str, before: Optional[str], until: Optional[str],
                       limit: int) -> List[TxRecord]:
        """Up to ``limit`` transactions that named ``address`` among their account keys
        (static or loaded), newest first, starting after ``before`` (exclusive) and stopping
        at ``until`` (exclusive); an unknown ``before`` gives []."""
        start = len(self.records)
        if before is not None:
            record = self.by_signature.get(before)
            if record is None:
                return []
            start = self.records.index(record)
        out: List[TxRecord] = []
        for record in reversed(self.records[:start]):
            if len(out) >= limit or record.signature == until:
                break
            if address in record.account_keys:
                out.append(record)
        return out

    def transaction_count(self) -> int:
        """Transactions executed so far (failed ones included, refused ones not)."""
        return len(self.records)


def _record_slot(record: TxRecord) -> int:
    return record.slot


def _lamports(account: Optional[Account]) -> int:
    return 0 if account is None else account.lamports


def _meta_json(meta: TransactionMetadata, err: Any, pre: List[Optional[Account]],
               post: List[Optional[Account]], tx: Optional[VersionedTransaction] = None,
               keys: Sequence[str] = (),
               lookup: Callable[[Pubkey], Optional[Account]] = lambda _: None) -> JsonObj:
    """Agave's ``UiTransactionStatusMeta`` (json). ``pre``/``post`` are the accounts of
    ``keys`` (static, then loaded writable, then loaded readonly) before and after;
    ``lookup`` reads a mint for the token balances' decimals."""
    return {"err": err, "status": {"Ok": None} if err is None else {"Err": err},
            "fee": meta.fee(), "preBalances": [_lamports(a) for a in pre],
            "postBalances": [_lamports(a) for a in post],
            "innerInstructions": _inner_json(meta), "logMessages": meta.logs(),
            "preTokenBalances": _token_balances(pre, lookup),
            "postTokenBalances": _token_balances(post, lookup), "rewards": [],
            "loadedAddresses": _loaded_addresses(tx, keys),
            "computeUnitsConsumed": meta.compute_units_consumed()}


def _token_balances(accounts: List[Optional[Account]],
                    lookup: Callable[[Pubkey], Optional[Account]]) -> List[JsonObj]:
    """Agave's ``UiTransactionTokenBalance`` of every token account among ``accounts``:
    ``{accountIndex, mint, owner, programId, uiTokenAmount}``; the mint's decimals are read
    with ``lookup`` (a token account whose mint is not found is left out, as Agave does)."""
    decimals: Dict[str, Optional[int]] = {}
    out: List[JsonObj] = []
    for index, account in enumerate(accounts):
        if account is None:
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
