"""``simsync.record_rpc`` / ``simsync record --rpc URL``: a recording (``simsync.recording_format``,
the same records as ``simsync.record`` writes) of a slot range built from any Solana JSON-RPC
endpoint (an Agave node, a provider, a session's ``rpc_endpoint``) instead of a backtest
session.

What it reads: ``getBlocks`` (the slots of the range that have a block), ``getBlock`` of each
(``encoding: json``, ``transactionDetails: full``, ``maxSupportedTransactionVersion: 0``,
``rewards: false``), and ``getMultipleAccounts`` (batches of ``ACCOUNTS_PER_CALL``) for the
recorded ``accounts`` before the first block is read. What it writes, per block, in one
zstandard frame (so a recorder killed mid-run leaves whole blocks; ``resume=True`` continues
after the last one):

* an ``event`` ``slotNotification`` (skipped slots have no block, hence no event);
* a ``block`` record: ``slot``, ``blockhash`` (what ``getLatestBlockhash`` answers while a
  session stands at the slot with nothing of it executed: the block's ``previousBlockhash``),
  ``last_valid_block_height`` (derived: the block's ``blockHeight`` + 150, Agave's
  ``MAX_PROCESSING_AGE``), and what ``getBlock`` says of the block itself: ``block_time``,
  ``block_height``, ``parent_slot``, ``block_blockhash``;
* one ``event`` ``transactionNotification`` per transaction that invokes a recorded program
  (top-level or inner instruction) or references a recorded account, in the protocol's wire
  shape (``simsync.protocol.codec.response_wire``, subscription ``SUBSCRIPTION_IDS``): the
  transaction re-serialised from its ``json`` form to ``[base64, "base64"]`` (the encoding a
  session's subscription carries; the bytes are the signed ones, so signatures verify), the
  meta as ``getBlock`` gave it, ``blockTime``, ``version``. The event record also carries
  ``lamport_changes``: ``{account: [pre, post]}`` derived from the meta's balances.

What RPC cannot give is named in the header (``RPC_LIMITS``, ``DERIVED``): historical account
states (``getMultipleAccounts`` answers the current ones), account diffs, control events
other than ``slotNotification`` (status, pauses, discovery, ``completed`` and its summary),
``meta.rewards``. A replay of such a file has those gaps.

Calling thread; blocks on one JSON-RPC call at a time (each bounded by the client's
``rpc_timeout``, read retries as ``ClientConfig.rpc_retries`` says).
"""
from __future__ import annotations

import base64
import datetime
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Union

import base58
from solders.hash import Hash
from solders.instruction import CompiledInstruction
from solders.message import Message, MessageAddressTableLookup, MessageHeader, MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from simsync._version import __version__
from simsync.config import ClientConfig
from simsync.errors import RpcError, SimsyncError
from simsync.protocol import Slot, Transaction
from simsync.protocol.codec import response_wire
from simsync.recorder import SUBSCRIPTION_IDS, _host
from simsync.recording_format import (
    FORMAT,
    VERSION,
    Recording,
    RecordingError,
    RecordingWriter,
    read,
)
from simsync.runoutput import SYSTEM_PROGRAM_ID, NoObserver, RunObserver
from simsync.solana_rpc import SolanaRpc

SOURCE = "json-rpc"
#: The header's ``source``: a recording built from JSON-RPC, not from a session.
ACCOUNTS_PER_CALL = 100          # getMultipleAccounts' limit on Agave
BLOCKS_PER_CALL = 500_000        # getBlocks' range limit on Agave (MAX_GET_CONFIRMED_BLOCKS_RANGE)
MAX_PROCESSING_AGE = 150         # blocks a blockhash stays valid (lastValidBlockHeight)
#: getBlock's errors for a slot without a block (Agave: skipped, or missing from long-term
#: storage): the slot is skipped, as getBlocks would have said.
NO_BLOCK_CODES = frozenset({-32007, -32009})
BLOCK_CONFIG = {"encoding": "json", "transactionDetails": "full",
                "maxSupportedTransactionVersion": 0, "rewards": False}

RPC_LIMITS = [
    "historical account states: getMultipleAccounts answers an account's CURRENT state (the "
    "header's account_states, read before the first block, at account_states.slot), not its "
    "state before the range",
    "account diffs (accountDiffNotification): RPC keeps no account states per transaction",
    "control events other than slotNotification: status frames, readyForContinue/paused "
    "pauses, discoveryBatch, completed and its summary",
    "meta.rewards of each transaction (getBlock with rewards=false leaves it out)",
    "the state of programs' accounts (accounts owned by a recorded program are not read)",
]
DERIVED = [
    "lamport_changes of each transaction event: {account: [pre, post]} from the meta's "
    "preBalances/postBalances over the account keys then loadedAddresses (writable, readonly)",
    "the transaction bytes: re-serialised from getBlock's json form (signatures verify)",
    "block.blockhash: the block's previousBlockhash (what a session standing at the slot "
    "answers); block.last_valid_block_height: blockHeight + 150",
    "version, when getBlock gives none: 0 for a message with addressTableLookups, else "
    "'legacy'",
]


# -- getBlock's json transaction -> wire bytes ------------------------------------------------

def _transaction(ui: Mapping[str, Any], version: Any) -> VersionedTransaction:
    """The signed transaction of a ``json``-encoded ``{signatures, message}``. Raises
    ``ValueError``/``KeyError``/``TypeError`` for one that is not Solana's json form."""
    msg = ui["message"]
    head = msg["header"]
    header = MessageHeader(int(head["numRequiredSignatures"]),
                           int(head["numReadonlySignedAccounts"]),
                           int(head["numReadonlyUnsignedAccounts"]))
    keys = [Pubkey.from_string(k) for k in msg["accountKeys"]]
    blockhash = Hash.from_string(msg["recentBlockhash"])
    instructions = [CompiledInstruction(int(ix["programIdIndex"]),
                                        base58.b58decode(ix["data"]), bytes(ix["accounts"]))
                    for ix in msg["instructions"]]
    message: Union[Message, MessageV0]
    if version == "legacy":
        message = Message.new_with_compiled_instructions(
            header.num_required_signatures, header.num_readonly_signed_accounts,
            header.num_readonly_unsigned_accounts, keys, blockhash, instructions)
    else:
        lookups = [MessageAddressTableLookup(Pubkey.from_string(lk["accountKey"]),
                                             bytes(lk["writableIndexes"]),
                                             bytes(lk["readonlyIndexes"]))
                   for lk in msg.get("addressTableLookups") or []]
        message = MessageV0(header, keys, blockhash, instructions, lookups)
    signatures = [Signature.from_string(s) for s in ui["signatures"]]
    return VersionedTransaction.populate(message, signatures)


def _version(entry: Mapping[str, Any]) -> Any:
    version = entry.get("version")
    if version is not None:
        return version
    message = entry["transaction"]["message"]
    return 0 if isinstance(message.get("addressTableLookups"), list) else "legacy"


def _all_keys(entry: Mapping[str, Any]) -> List[str]:
    """The transaction's account keys as its meta indexes them: the message's, then the
    loaded ones (writable, then readonly)."""
    keys = list(entry["transaction"]["message"]["accountKeys"])
    loaded = (entry.get("meta") or {}).get("loadedAddresses") or {}
    return keys + list(loaded.get("writable") or []) + list(loaded.get("readonly") or [])


def _invoked(entry: Mapping[str, Any], keys: Sequence[str]) -> Set[str]:
    """Programs the transaction invoked: its instructions' and inner instructions'."""
    meta = entry.get("meta") or {}
    indexes = [ix["programIdIndex"] for ix in entry["transaction"]["message"]["instructions"]]
    for inner in meta.get("innerInstructions") or []:
        indexes += [ix["programIdIndex"] for ix in inner.get("instructions") or []]
    return {keys[i] for i in indexes if isinstance(i, int) and 0 <= i < len(keys)}


def _lamport_changes(meta: Mapping[str, Any], keys: Sequence[str]) -> Dict[str, List[int]]:
    pre, post = meta.get("preBalances") or [], meta.get("postBalances") or []
    return {key: [a, b] for key, a, b in zip(keys, pre, post) if a != b}


class _Block:
    """What one getBlock answer becomes in the file (pure; any thread)."""

    def __init__(self, slot: int, block: Mapping[str, Any], programs: Set[str],
                 accounts: Set[str]) -> None:
        self.slot = slot
        self.block = block
        self.programs = programs
        self.accounts = accounts
        self.referenced: Set[str] = set()     # recorded accounts the block's txs reference

    def records(self) -> List[Dict[str, Any]]:
        block = self.block
        height = block.get("blockHeight")
        out: List[Dict[str, Any]] = [
            {"type": "event", "wire": response_wire(Slot(self.slot))},
            {"type": "block", "slot": self.slot, "blockhash": block.get("previousBlockhash"),
             "last_valid_block_height": (height + MAX_PROCESSING_AGE
                                         if isinstance(height, int) else None),
             "block_time": block.get("blockTime"), "block_height": height,
             "parent_slot": block.get("parentSlot"),
             "block_blockhash": block.get("blockhash")}]
        for entry in block.get("transactions") or []:
            record = self._transaction(entry)
            if record is not None:
                out.append(record)
        return out

    def _transaction(self, entry: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        try:
            keys = _all_keys(entry)
            mentioned = set(keys)
            hit = (bool(self.programs & _invoked(entry, keys))
                   or bool(self.accounts & mentioned))
            if not hit:
                return None
            version = _version(entry)
            raw = bytes(_transaction(entry["transaction"], version))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise RecordingError(f"getBlock({self.slot}): a transaction is not in Solana's "
                                 f"json form ({type(exc).__name__}: {exc})") from None
        self.referenced |= self.accounts & mentioned
        meta = entry.get("meta")
        event = Transaction.of_fields(
            SUBSCRIPTION_IDS["transactionNotification"], self.slot,
            [base64.b64encode(raw).decode("ascii"), "base64"], meta,
            self.block.get("blockTime"), version, None)
        return {"type": "event", "wire": response_wire(event),
                "lamport_changes": _lamport_changes(meta or {}, keys)}


# -- the recorder -----------------------------------------------------------------------------

def _header(url: str, start_slot: int, end_slot: int, programs: List[str],
            accounts: List[str], states: Dict[str, Any]) -> Dict[str, Any]:
    stamp = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return {"type": "header", "format": FORMAT, "version": VERSION, "source": SOURCE,
            "host": _host(url), "start_slot": start_slot, "end_slot": end_slot,
            "programs": programs, "accounts": accounts,
            "created_at": stamp.isoformat().replace("+00:00", "Z"),
            "simsync_version": __version__,
            "not_seen": ["transactions that neither invoke a recorded program nor reference a "
                         "recorded account",
                         "the state of accounts no recorded transaction changed",
                         *RPC_LIMITS],
            "rpc_limits": RPC_LIMITS, "derived": DERIVED, "account_states": states}


def _account_states(rpc: SolanaRpc, keys: Sequence[str]) -> Dict[str, Any]:
    """``{"slot": context slot, "accounts": {key: UiAccount (base64) or None}}``: the current
    states, ``ACCOUNTS_PER_CALL`` keys a call; ``slot`` is the lowest context slot."""
    accounts: Dict[str, Any] = {}
    slots: List[int] = []
    for lo in range(0, len(keys), ACCOUNTS_PER_CALL):
        batch = list(keys[lo:lo + ACCOUNTS_PER_CALL])
        answer = rpc.call("getMultipleAccounts", [batch, {"encoding": "base64"}])
        values = answer.get("value") if isinstance(answer, dict) else None
        if not isinstance(values, list) or len(values) != len(batch):
            raise RpcError(f"getMultipleAccounts: expected {len(batch)} accounts, got "
                           f"{str(answer)[:120]}")
        context = answer.get("context") or {}
        if isinstance(context.get("slot"), int):
            slots.append(context["slot"])
        accounts.update(zip(batch, values))
    return {"slot": min(slots) if slots else None, "accounts": accounts}


def _block_slots(rpc: SolanaRpc, start: int, end: int) -> List[int]:
    """getBlocks over ``start..end``, ``BLOCKS_PER_CALL`` slots a call."""
    out: List[int] = []
    lo = start
    while lo <= end:
        hi = min(end, lo + BLOCKS_PER_CALL - 1)
        answer = rpc.call("getBlocks", [lo, hi])
        if not isinstance(answer, list) or not all(isinstance(s, int) for s in answer):
            raise RpcError(f"getBlocks: expected a list of slots, got {str(answer)[:120]}")
        out += sorted(s for s in answer if lo <= s <= hi)
        lo = hi + 1
    return out


def _get_block(rpc: SolanaRpc, slot: int) -> Optional[Dict[str, Any]]:
    """The slot's block, or ``None`` when the node says it has none (skipped)."""
    try:
        block = rpc.call("getBlock", [slot, BLOCK_CONFIG])
    except RpcError as exc:
        if exc.code in NO_BLOCK_CODES:
            return None
        raise
    if block is not None and not isinstance(block, dict):
        raise RpcError(f"getBlock({slot}): expected a block object, got {str(block)[:120]}")
    return block


def _previous(output: str, start_slot: int, end_slot: int, programs: List[str],
              keys: List[str]) -> Optional[Recording]:
    """The recording at ``output`` to continue, or ``None`` to start afresh (no file, an
    empty one, or not even a whole header). Raises ``RecordingError`` for a recording of
    another source, range or subscription."""
    if not os.path.exists(output) or os.path.getsize(output) == 0:
        return None
    try:
        found = read(output)
    except RecordingError as exc:
        if "no complete simsync recording header" in str(exc):
            return None
        raise
    header = found.header
    wanted = {"source": SOURCE, "start_slot": start_slot, "end_slot": end_slot,
              "programs": programs, "accounts": keys}
    differs = [k for k, v in wanted.items() if header.get(k) != v]
    if differs:
        found_values = ", ".join(f"{k}={header.get(k)!r}" for k in differs)
        raise RecordingError(f"{output} cannot be resumed: it records other "
                             f"{', '.join(differs)} ({found_values})")
    return found


def record_rpc(rpc: Union[SolanaRpc, str], output: str, start_slot: int, end_slot: int, *,
               program_ids: Iterable[Any] = (), accounts: Iterable[Any] = (),
               resume: bool = False, observer: Optional[RunObserver] = None,
               config: Optional[ClientConfig] = None) -> Recording:
    """Record slots ``start_slot..end_slot`` (inclusive) from a Solana JSON-RPC endpoint into
    ``output`` and return the file decoded.

    ``rpc``: a ``SolanaRpc`` or an ``http(s)://`` URL (then a ``SolanaRpc(url,
    config=config)`` is made and closed). ``program_ids``/``accounts`` (base58 or
    ``Pubkey``): the transactions recorded are those invoking one of the programs or
    referencing one of the accounts (the System program when neither is given); the accounts'
    current states are read first (``getMultipleAccounts``) into the header. ``resume=True``
    continues a file cut short after its last whole block (a complete one is returned as it
    is). ``observer`` sees each block's slot (``simsync record``'s progress bar).

    Calling thread; blocks on the endpoint, one call at a time. Raises ``ValueError`` when
    ``end_slot < start_slot``, ``SimsyncError`` when the range has no block,
    ``RecordingError`` for a file that cannot be continued or a block that is not Solana's
    json form, ``RpcError`` (``RpcConnectionError``, ``RpcTimeout``) for the endpoint's
    failures; the file then holds the whole blocks recorded so far."""
    if end_slot < start_slot:
        raise ValueError(f"end_slot {end_slot} is before start_slot {start_slot}")
    programs = [str(p) for p in program_ids]
    keys = [str(k) for k in accounts]
    if not programs and not keys:
        programs = [SYSTEM_PROGRAM_ID]
    seen = observer if observer is not None else NoObserver()
    own = isinstance(rpc, str)
    client = SolanaRpc(rpc, config=config) if isinstance(rpc, str) else rpc
    try:
        previous = _previous(output, start_slot, end_slot, programs, keys) if resume else None
        if previous is not None and previous.complete:
            return previous
        done = [w["params"] for w in (previous.events() if previous else [])
                if w.get("method") == "slotNotification"]
        first = done[-1] + 1 if done else start_slot
        slots = _block_slots(client, first, end_slot)
        if not slots and not done:
            raise SimsyncError(f"no blocks in slots {start_slot}-{end_slot} at "
                               f"{_host(client.url)} (getBlocks answered none)")
        seen.track("main", start_slot, end_slot)
        if done:
            seen.slot("main", done[-1])
        if previous is None:
            states = _account_states(client, keys)
            writer = RecordingWriter(output)
            writer.write(_header(client.url, start_slot, end_slot, programs, keys, states))
            writer.flush()
            referenced: Set[str] = set()
        else:
            writer = RecordingWriter(output, append_at=previous.good_bytes)
            referenced = {k for r in previous.records if r.get("type") == "event"
                          for k in keys if k in _wire_keys(r["wire"])}
        try:
            _record_blocks(client, writer, slots, set(programs), set(keys), referenced, seen)
            writer.write({"type": "end",
                          "accounts_not_touched": sorted(set(keys) - referenced)})
            writer.flush()
            seen.finished("main")
            seen.tick(force=True)
        finally:
            writer.close()
        return read(output)
    finally:
        if own:
            client.close()


def _wire_keys(wire: Mapping[str, Any]) -> Set[str]:
    """The account keys a recorded transaction event references (for a resumed file)."""
    if wire.get("method") != "transactionNotification":
        return set()
    result = wire["params"]["result"]
    tx = VersionedTransaction.from_bytes(base64.b64decode(result["transaction"][0]))
    loaded = (result.get("meta") or {}).get("loadedAddresses") or {}
    return ({str(k) for k in tx.message.account_keys}
            | set(loaded.get("writable") or []) | set(loaded.get("readonly") or []))


def _record_blocks(client: SolanaRpc, writer: RecordingWriter, slots: Sequence[int],
                   programs: Set[str], accounts: Set[str], referenced: Set[str],
                   seen: RunObserver) -> None:
    """One frame per block: its slot event, block record and matching transactions."""
    for slot in slots:
        block = _get_block(client, slot)
        if block is not None:
            made = _Block(slot, block, programs, accounts)
            for record in made.records():
                writer.write(record)
                seen.event()
            writer.flush()
            referenced |= made.referenced
        seen.slot("main", slot)
        seen.tick()


__all__ = ["ACCOUNTS_PER_CALL", "BLOCK_CONFIG", "DERIVED", "RPC_LIMITS", "SOURCE",
           "record_rpc"]
