"""The ledger methods of the per-session JSON-RPC: blocks and transactions the session
executed (getBlock, getBlocks, getBlocksWithLimit, getBlockTime, getTransaction,
getSignaturesForAddress, getTransactionCount, getFirstAvailableBlock, minimumLedgerSlot,
getRecentPrioritizationFees). Event-loop thread; never blocks.

A block is available once the session moved past it (the blocks of ``session.slots`` before
the current one: the block the session stands at is still being built, as a processed but not
yet confirmed bank). Block ``S``'s ``previousBlockhash`` is ``history.blockhash(S)`` (what its
transactions were built on) and its ``blockhash`` the one the next produced block is built
on; ``blockHeight`` is ``History.block_height(S)`` (counted back from the chain's height).
Records come from the chain's query methods only (``Chain.record``, ``block_records``,
``signatures_for``, ``transaction_count``).
"""
from __future__ import annotations

import bisect
import struct
from typing import Any, Dict, List, Optional

from solders.transaction import VersionedTransaction

from simsync.localsim.chain import TxRecord
from simsync.localsim.encodings import (
    DETAILS,
    check_version,
    encode_accounts_only,
    encode_record,
    max_version,
    transaction_encoding,
)
from simsync.localsim.jsonrpc import (
    BLOCK_CLEANED_UP,
    BLOCK_NOT_AVAILABLE,
    SLOT_SKIPPED,
    JsonObj,
    RpcError,
)
from simsync.localsim.rpc_params import (
    agave_invalid,
    at_most,
    check_context,
    config,
    context_config,
    optional_string,
    param,
    pubkey,
    required,
    serde_error,
    string,
    u64,
)
from simsync.localsim.session import BacktestSession

MAX_BLOCKS_RANGE = 500_000  # Agave's MAX_GET_CONFIRMED_BLOCKS_RANGE
MAX_SIGNATURES_LIMIT = 1000  # MAX_GET_CONFIRMED_SIGNATURES_FOR_ADDRESS2_LIMIT
MAX_PRIORITIZATION_ADDRESSES = 128
PRIORITIZATION_WINDOW = 150  # blocks Agave's prioritization fee cache keeps
COMPUTE_BUDGET_ID = "ComputeBudget111111111111111111111111111111"


def finished(session: BacktestSession) -> List[int]:
    """The slots of the blocks the session completed, ascending."""
    return session.slots[:session.idx]


def _block_error(session: BacktestSession, slot: int) -> RpcError:
    done = finished(session)
    if done and slot < done[0]:
        return RpcError(BLOCK_CLEANED_UP, f"Block {slot} cleaned up, does not exist on node. "
                        f"First available block: {done[0]}")
    if done and done[0] <= slot <= done[-1]:
        return RpcError(SLOT_SKIPPED, f"Slot {slot} was skipped, or missing due to ledger jump "
                        "to recent snapshot")
    return RpcError(BLOCK_NOT_AVAILABLE, f"Block not available for slot {slot}")


def _index(session: BacktestSession, slot: int) -> int:
    """The block's index in ``session.slots``; -32004/-32007 when it is not available."""
    done = finished(session)
    i = bisect.bisect_left(done, slot)
    if i >= len(done) or done[i] != slot:
        raise _block_error(session, slot)
    return i


def block_hash_of(session: BacktestSession, index: int) -> str:
    """The blockhash of the block ``session.slots[index]`` (what the next block is built on)."""
    slots = session.slots
    history = session.history
    slot = slots[index]
    following = slots[index + 1] if index + 1 < len(slots) else slot + 1
    return str(history.blockhash(following))


def block_height_of(session: BacktestSession, index: int) -> int:
    """The height of the block ``session.slots[index]``: ``History.block_height`` of its
    slot, counted back from the chain's current height (one block per produced slot), so
    it costs O(1) where ``History.block_height`` counts every slot from the first."""
    return session.chain.block_height - (session.idx - index)


def get_block(session: BacktestSession, params: List[Any]) -> Any:
    """Agave's getBlock: ``{blockHeight, blockTime, blockhash, parentSlot, previousBlockhash,
    transactions | signatures, rewards}`` by ``transactionDetails``/``encoding``/``rewards``;
    a v0 transaction without ``maxSupportedTransactionVersion`` is -32015."""
    at_most(params, 2)
    slot = u64(required(params, 0, "a slot"))
    raw_cfg = param(params, 1, {})
    cfg = {"encoding": raw_cfg} if isinstance(raw_cfg, str) else config(
        params, 1, "RpcBlockConfig")
    if cfg.get("commitment") == "processed":
        raise agave_invalid("Method does not support commitment below `confirmed`")
    encoding = transaction_encoding(cfg)
    details = cfg.get("transactionDetails") or "full"
    if details not in DETAILS:
        raise serde_error(f"unknown variant `{details}`, expected one of "
                          + ", ".join(f"`{d}`" for d in DETAILS))
    rewards = cfg.get("rewards", True) is not False
    supported = max_version(cfg)
    index = _index(session, slot)
    history = session.history
    records = session.chain.block_records(slot)
    out: JsonObj = {
        "blockHeight": block_height_of(session, index), "blockTime": history.block_time(slot),
        "blockhash": block_hash_of(session, index),
        "parentSlot": session.slots[index - 1] if index else slot - 1,
        "previousBlockhash": str(history.blockhash(slot))}
    if details == "full":
        out["transactions"] = [encode_record(r, encoding, supported, rewards) for r in records]
    elif details == "accounts":
        out["transactions"] = [encode_accounts_only(r, supported, rewards) for r in records]
    elif details == "signatures":
        for r in records:
            check_version(r, supported)  # Agave refuses the block all the same
        out["signatures"] = [r.signature for r in records]
    if rewards:
        out["rewards"] = []
    return out


def _blocks_between(session: BacktestSession, start: int, end: int) -> List[int]:
    done = finished(session)
    lo = bisect.bisect_left(done, start)
    hi = bisect.bisect_right(done, end)
    return done[lo:hi]


def _no_processed(cfg: JsonObj) -> None:
    if cfg.get("commitment") == "processed":
        raise agave_invalid("Method does not support commitment below `confirmed`")


def get_blocks(session: BacktestSession, params: List[Any]) -> Any:
    """Agave's getBlocks: the available blocks in ``[start, end]`` (end defaults to the
    newest); a range above 500,000 slots is -32602."""
    at_most(params, 3)
    start = u64(required(params, 0, "a start slot"))
    second = param(params, 1)
    if isinstance(second, dict):
        end_param, cfg = None, config(params, 1)
    else:
        end_param, cfg = second, config(params, 2)
    _no_processed(cfg)
    check_context(cfg, session.chain.slot)
    done = finished(session)
    newest = done[-1] if done else start
    if end_param is None:
        end = newest
    else:
        end = u64(end_param)
        if end - start > MAX_BLOCKS_RANGE:
            raise agave_invalid(f"Slot range too large; max {MAX_BLOCKS_RANGE}")
    return _blocks_between(session, start, min(end, newest)) if end >= start else []


def get_blocks_with_limit(session: BacktestSession, params: List[Any]) -> Any:
    """Agave's getBlocksWithLimit: up to ``limit`` available blocks from ``start``."""
    at_most(params, 3)
    start = u64(required(params, 0, "a start slot"))
    limit = u64(required(params, 1, "a limit"))
    cfg = config(params, 2)
    _no_processed(cfg)
    check_context(cfg, session.chain.slot)
    if limit > MAX_BLOCKS_RANGE:
        raise agave_invalid(f"Limit too large; max {MAX_BLOCKS_RANGE}")
    done = finished(session)
    lo = bisect.bisect_left(done, start)
    return done[lo:lo + limit]


def get_block_time(session: BacktestSession, params: List[Any]) -> Any:
    """The block's unix time (the Clock sysvar's ``unix_timestamp`` in that block)."""
    at_most(params, 1)
    slot = u64(required(params, 0, "a slot"))
    _index(session, slot)
    return session.history.block_time(slot)


def get_first_available_block(session: BacktestSession, params: List[Any]) -> Any:
    at_most(params, 0)
    done = finished(session)
    return done[0] if done else session.current_slot


def minimum_ledger_slot(session: BacktestSession, params: List[Any]) -> Any:
    at_most(params, 0)
    return get_first_available_block(session, [])


def get_transaction_count(session: BacktestSession, params: List[Any]) -> Any:
    at_most(params, 1)
    context_config(params, 0, session.chain.slot)
    return session.chain.transaction_count()


def get_transaction(session: BacktestSession, params: List[Any]) -> Any:
    """Agave's getTransaction: ``{slot, blockTime, transaction, meta, version?}`` or null;
    default encoding ``json``; a v0 transaction without ``maxSupportedTransactionVersion``
    is -32015."""
    at_most(params, 2)
    sig = string(required(params, 0, "a signature"), "a signature")
    raw_cfg = param(params, 1, {})
    cfg = {"encoding": raw_cfg} if isinstance(raw_cfg, str) else config(
        params, 1, "RpcTransactionConfig")
    _no_processed(cfg)
    encoding = transaction_encoding(cfg)
    supported = max_version(cfg)
    record = session.chain.record(sig)
    if record is None:
        return None
    return {"slot": record.slot, "blockTime": record.block_time,
            **encode_record(record, encoding, supported)}


def _memo(record: TxRecord) -> Optional[str]:
    """Agave's ``memo`` field: each Memo instruction as ``[byte length] text`` (text
    ``(unparseable)`` when not UTF-8), joined by "; "; None without one."""
    tx = VersionedTransaction.from_bytes(record.raw)
    keys = record.account_keys
    memos = []
    for ix in tx.message.instructions:
        if keys[ix.program_id_index] in ("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr",
                                         "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo"):
            data = bytes(ix.data)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = "(unparseable)"
            memos.append(f"[{len(data)}] {text}")
    return "; ".join(memos) if memos else None


def get_signatures_for_address(session: BacktestSession, params: List[Any]) -> Any:
    """Agave's getSignaturesForAddress: ``[{signature, slot, err, memo, blockTime,
    confirmationStatus}]`` newest first, ``limit`` 1..1000 (default 1000), ``before`` /
    ``until`` signatures exclusive."""
    at_most(params, 2)
    address = str(pubkey(required(params, 0, "an address")))
    cfg = context_config(params, 1, session.chain.slot)
    _no_processed(cfg)
    limit = cfg.get("limit")
    limit = MAX_SIGNATURES_LIMIT if limit is None else u64(limit)
    if not 1 <= limit <= MAX_SIGNATURES_LIMIT:
        raise agave_invalid(f"Invalid limit; max {MAX_SIGNATURES_LIMIT}")
    before, until = optional_string(cfg.get("before")), optional_string(cfg.get("until"))
    return [{"signature": r.signature, "slot": r.slot, "err": r.executed.err,
             "memo": _memo(r), "blockTime": r.block_time, "confirmationStatus": "finalized"}
            for r in session.chain.signatures_for(address, before, until, limit)]


def _unit_price(record: TxRecord) -> int:
    """The transaction's SetComputeUnitPrice (micro-lamports per CU), 0 without one."""
    tx = VersionedTransaction.from_bytes(record.raw)
    keys = record.account_keys
    for ix in tx.message.instructions:
        data = bytes(ix.data)
        if keys[ix.program_id_index] == COMPUTE_BUDGET_ID and len(data) == 9 and data[0] == 3:
            return int(struct.unpack_from("<Q", data, 1)[0])
    return 0


def get_recent_prioritization_fees(session: BacktestSession, params: List[Any]) -> Any:
    """Agave's getRecentPrioritizationFees: ``[{slot, prioritizationFee}]`` for the last 150
    blocks; with addresses, each block's minimum over the transactions that lock any of them
    writable (the block's minimum when none did), else the block's minimum."""
    at_most(params, 1)
    addresses = param(params, 0, [])
    if not isinstance(addresses, list):
        raise serde_error("invalid type: expected a sequence")
    if len(addresses) > MAX_PRIORITIZATION_ADDRESSES:
        raise agave_invalid(f"Too many inputs provided; max {MAX_PRIORITIZATION_ADDRESSES}")
    wanted = {str(pubkey(a)) for a in addresses}
    out = []
    for slot in finished(session)[-PRIORITIZATION_WINDOW:]:
        records = [r for r in session.chain.block_records(slot) if r.executed.ok]
        prices: Dict[bool, List[int]] = {True: [], False: []}
        for r in records:
            touches = bool(wanted & set(r.account_keys))
            prices[touches].append(_unit_price(r))
        chosen = prices[True] or prices[False] + prices[True]
        out.append({"slot": slot, "prioritizationFee": min(chosen) if chosen else 0})
    return out


METHODS = {
    "getBlock": get_block,
    "getBlocks": get_blocks,
    "getBlocksWithLimit": get_blocks_with_limit,
    "getBlockTime": get_block_time,
    "getFirstAvailableBlock": get_first_available_block,
    "minimumLedgerSlot": minimum_ledger_slot,
    "getTransactionCount": get_transaction_count,
    "getTransaction": get_transaction,
    "getSignaturesForAddress": get_signatures_for_address,
    "getRecentPrioritizationFees": get_recent_prioritization_fees,
}
