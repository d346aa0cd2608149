"""The cluster methods of the per-session JSON-RPC: getVersion, getGenesisHash, getIdentity,
getSlotLeader, getEpochInfo, getEpochSchedule, getSupply, requestAirdrop. Event-loop thread.

The simulated cluster is one validator: its identity and the slot leader are a keypair derived
from the history's seed, the genesis hash a hash of the seed (the chain is synthetic, not
mainnet); the epoch schedule is mainnet's (432,000 slots an epoch, no warm-up), as the Clock
sysvar has it (`Chain.warp`). requestAirdrop executes a real System transfer from a faucet.
"""
from __future__ import annotations

import hashlib
from typing import Any, List

from solders.account import Account
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.system_program import ID as SYSTEM_ID
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from simsync.localsim.chain import SLOTS_PER_EPOCH, TxRecord
from simsync.localsim.jsonrpc import INVALID_REQUEST, RpcError
from simsync.localsim.rpc_params import (
    at_most,
    config,
    context_config,
    pubkey,
    required,
    u64,
)
from simsync.localsim.session import BacktestSession

SOLANA_CORE = "2.2.0"
FEATURE_SET = 3294202862
AIRDROP_FEE = 5000


def _seeded(session: BacktestSession, what: str) -> bytes:
    return hashlib.sha256(f"simsync-localsim:{session.history.seed}:{what}".encode()).digest()


def identity(session: BacktestSession) -> str:
    """The simulated validator's identity (also every slot's leader)."""
    return str(Keypair.from_seed(_seeded(session, "identity")).pubkey())


def get_version(session: BacktestSession, params: List[Any]) -> Any:
    at_most(params, 0)
    return {"solana-core": SOLANA_CORE, "feature-set": FEATURE_SET}


def get_genesis_hash(session: BacktestSession, params: List[Any]) -> Any:
    at_most(params, 0)
    return str(Hash(_seeded(session, "genesis")))


def get_identity(session: BacktestSession, params: List[Any]) -> Any:
    at_most(params, 0)
    return {"identity": identity(session)}


def get_slot_leader(session: BacktestSession, params: List[Any]) -> Any:
    at_most(params, 1)
    context_config(params, 0, session.chain.slot)
    return identity(session)


def get_epoch_schedule(session: BacktestSession, params: List[Any]) -> Any:
    at_most(params, 0)
    return {"firstNormalEpoch": 0, "firstNormalSlot": 0,
            "leaderScheduleSlotOffset": SLOTS_PER_EPOCH, "slotsPerEpoch": SLOTS_PER_EPOCH,
            "warmup": False}


def get_epoch_info(session: BacktestSession, params: List[Any]) -> Any:
    """``{absoluteSlot, blockHeight, epoch, slotIndex, slotsInEpoch, transactionCount}`` at
    the slot the session stands at (the epoch the Clock sysvar has)."""
    at_most(params, 1)
    chain = session.chain
    context_config(params, 0, chain.slot)
    return {"absoluteSlot": chain.slot, "blockHeight": chain.block_height,
            "epoch": chain.slot // SLOTS_PER_EPOCH, "slotIndex": chain.slot % SLOTS_PER_EPOCH,
            "slotsInEpoch": SLOTS_PER_EPOCH, "transactionCount": chain.transaction_count()}


def get_supply(session: BacktestSession, params: List[Any]) -> Any:
    """Agave's shape; the amounts are the lamports of the history's genesis accounts as they
    stand now (the simulated chain has no full account index to sum)."""
    at_most(params, 1)
    chain = session.chain
    total = 0
    for key, _ in session.history.genesis():
        account = chain.account(key)
        total += 0 if account is None else account.lamports
    context_config(params, 0, chain.slot)
    return {"context": {"slot": chain.slot, "apiVersion": SOLANA_CORE}, "value": {
        "total": total, "circulating": total, "nonCirculating": 0,
        "nonCirculatingAccounts": []}}


def request_airdrop(session: BacktestSession, params: List[Any]) -> Any:
    """Execute a System transfer of ``lamports`` to ``pubkey`` from the faucet, in the slot
    the session stands at (it shows up in notifications and getTransaction); the signature.
    A request identical to one already processed in the slot is -32600, as Agave's faucet."""
    at_most(params, 3)
    to = pubkey(required(params, 0, "a pubkey"))
    lamports = u64(required(params, 1, "lamports"))
    config(params, 2)
    chain = session.chain
    faucet = Keypair.from_seed(_seeded(session, "faucet"))
    key = faucet.pubkey()
    held = chain.account(key)
    chain.install([(key, Account((0 if held is None else held.lamports) + lamports
                                 + AIRDROP_FEE, b"", SYSTEM_ID, False, 0))])
    blockhash, _ = chain.latest_blockhash()
    ix = transfer(TransferParams(from_pubkey=key, to_pubkey=to, lamports=lamports))
    tx = VersionedTransaction(MessageV0.try_compile(key, [ix], [], Hash.from_string(blockhash)),
                              [faucet])
    record = chain.execute(tx, None, "rpc")
    if not isinstance(record, TxRecord) or not record.executed.ok:
        raise RpcError(INVALID_REQUEST, "airdrop request failed. This can happen when the "
                       "rate limit is reached.")
    session.hub.publish(record.slot, record)
    return record.signature


METHODS = {
    "getVersion": get_version,
    "getGenesisHash": get_genesis_hash,
    "getIdentity": get_identity,
    "getSlotLeader": get_slot_leader,
    "getEpochSchedule": get_epoch_schedule,
    "getEpochInfo": get_epoch_info,
    "getSupply": get_supply,
    "requestAirdrop": request_airdrop,
}

