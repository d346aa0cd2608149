"""The JSON-RPC methods Solana clients call, served from the simulated chain with Agave's
shapes and errors, checked through clients nobody here wrote: solana-py's `AsyncClient` at the
session's RPC URL (it parses every answer with solders' response types, so a shape Agave would
not send fails to parse) and raw JSON-RPC for the error texts. Agave is the reference: its
getBlock/getBlocks/getSignaturesForAddress/getEpochInfo shapes, -32004 for a block not yet
available, -32015 for a v0 transaction without ``maxSupportedTransactionVersion``, -32602
with serde's texts for bad params and a bogus commitment, -32016 for ``minContextSlot``."""
# ruff: noqa: F811  (tests take the imported ``session`` fixture as a parameter)
from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable, Dict, List, Tuple, TypeVar

import pytest
import requests
from solana.rpc.async_api import AsyncClient
from solders.compute_budget import set_compute_unit_price
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.rpc.responses import GetSignaturesForAddressResp, GetTransactionResp
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction
from solders.transaction_status import TransactionDetails

import simsync
from simsync.localsim.history import History

# the ``session`` fixture (a session paused at its first slot); tests take it by name
from tests.localsim.test_runtime_checks import (
    CLOCK_SYSVAR,
    SOL,
    funded_payer,
    latest,
    session,  # noqa: F401
    step,
    transfer_tx,
)

pytestmark = pytest.mark.timeout(90)
T = TypeVar("T")
SLOTS_PER_EPOCH = 432_000
MEMO = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")


def with_client(session: simsync.Session, use: Callable[[AsyncClient], Awaitable[T]]) -> T:
    """Run ``use`` with solana-py's client at the session's RPC URL (closed after)."""
    async def main() -> T:
        async with AsyncClient(session.rpc.url, timeout=30, http2=False) as client:
            return await use(client)
    return asyncio.run(main())


def raw(session: simsync.Session, method: str, *params: Any) -> Dict[str, Any]:
    """One JSON-RPC call on a fresh socket: the whole answer (result or error)."""
    with requests.Session() as http:
        resp = http.post(session.rpc.url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                                "params": list(params)},
                         headers={"Connection": "close"}, timeout=30)
    assert resp.status_code == 200, resp.text
    answer: Dict[str, Any] = resp.json()
    return answer


def run_blocks(session: simsync.Session, count: int) -> None:
    for _ in range(count):
        step(session)


def test_blocks_through_solana_py_parse_as_agave_shapes(session: simsync.Session) -> None:
    run_blocks(session, 4)
    here = session.rpc.get_slot()

    async def use(client: AsyncClient) -> Dict[str, Any]:
        blocks = (await client.get_blocks(400_000_000)).value
        full = await client.get_block(blocks[0], "json", max_supported_transaction_version=0)
        parsed = await client.get_block(blocks[1], "jsonParsed",
                                        max_supported_transaction_version=0)
        b64 = await client.get_block(blocks[1], "base64", max_supported_transaction_version=0)
        sigs = await client.get_block(blocks[1], max_supported_transaction_version=0,
                                      transaction_details=TransactionDetails.Signatures)
        none = await client.get_block(blocks[1], max_supported_transaction_version=0,
                                      transaction_details=TransactionDetails.None_,
                                      rewards=False)
        accounts = await client.get_block(blocks[1], max_supported_transaction_version=0,
                                          transaction_details=TransactionDetails.Accounts)
        times = [(await client.get_block_time(b)).value for b in blocks]
        first = (await client.get_first_available_block()).value
        minimum = (await client.get_minimum_ledger_slot()).value
        return {"blocks": blocks, "full": full.value, "parsed": parsed.value, "b64": b64.value,
                "sigs": sigs.value, "none": none.value, "accounts": accounts.value,
                "times": times, "first": first,
                "minimum": minimum}

    got = with_client(session, use)
    blocks = got["blocks"]
    assert blocks and blocks[0] == 400_000_000 and all(b < here for b in blocks)
    assert blocks == sorted(blocks) and got["first"] == got["minimum"] == blocks[0]
    full, parsed, b64, sigs, none = (got[k] for k in ("full", "parsed", "b64", "sigs", "none"))
    assert full.transactions and all(t.meta.err is None for t in full.transactions)
    # the chain of blocks: heights consecutive, each block's parent hash the previous one's hash
    assert parsed.parent_slot == blocks[0]
    assert parsed.previous_blockhash == full.blockhash
    assert parsed.block_height == full.block_height + 1
    history = History(0, 400_000_000, 1000, 10)   # LocalSimulator()'s history
    assert [full.block_height, parsed.block_height] == [history.block_height(b)
                                                         for b in blocks[:2]]
    assert [t.transaction.signatures[0] for t in parsed.transactions] == sigs.signatures
    assert [t.transaction.signatures[0] for t in b64.transactions] == sigs.signatures
    assert none.transactions is None and none.signatures is None and none.rewards is None
    listed = got["accounts"].transactions   # accountKeys and the balance part of the meta
    assert [t.transaction.signatures[0] for t in listed] == sigs.signatures
    assert all(t.meta.pre_balances and t.meta.log_messages is None for t in listed)
    assert str(listed[0].transaction.account_keys[0].pubkey) == \
        str(parsed.transactions[0].transaction.message.account_keys[0].pubkey)
    assert got["times"] == [session.rpc.call("getBlockTime", [b]) for b in blocks]
    # every transaction of the block is in getTransaction too, in the same slot
    sig = str(sigs.signatures[0])
    answer = raw(session, "getTransaction", sig, {"maxSupportedTransactionVersion": 0})
    tx = GetTransactionResp.from_json(_text(answer)).value
    assert tx is not None and tx.slot == blocks[1]


def test_get_block_answers_agave_errors(session: simsync.Session) -> None:
    run_blocks(session, 3)
    here = session.rpc.get_slot()
    blocks = session.rpc.call("getBlocks", [400_000_000])
    assert here not in blocks   # the block being built is not available yet
    for slot in (here, here + 10):
        error = raw(session, "getBlock", slot, {"maxSupportedTransactionVersion": 0})["error"]
        assert error == {"code": -32004, "message": f"Block not available for slot {slot}"}
    error = raw(session, "getBlock", blocks[0] - 1, {"maxSupportedTransactionVersion": 0})
    assert error["error"] == {"code": -32001, "message": f"Block {blocks[0] - 1} cleaned up, "
                              f"does not exist on node. First available block: {blocks[0]}"}
    skipped = next(s for s in range(blocks[0], blocks[-1]) if s not in blocks)
    error = raw(session, "getBlock", skipped, {"maxSupportedTransactionVersion": 0})["error"]
    assert error["code"] == -32007 and str(skipped) in error["message"]
    error = raw(session, "getBlock", blocks[0])["error"]   # history's transactions are v0
    assert error["code"] == -32015
    assert '"maxSupportedTransactionVersion": 0' in error["message"]
    error = raw(session, "getBlock", blocks[0], {"commitment": "processed"})["error"]
    assert error == {"code": -32602,
                     "message": "Method does not support commitment below `confirmed`"}
    error = raw(session, "getBlocks", 1, 600_001)["error"]
    assert error == {"code": -32602, "message": "Slot range too large; max 500000"}
    assert session.rpc.call("getBlocksWithLimit", [blocks[0], 2]) == blocks[:2]


def test_cluster_methods_agree_with_the_clock_sysvar(session: simsync.Session) -> None:
    run_blocks(session, 2)

    async def use(client: AsyncClient) -> Dict[str, Any]:
        return {"version": (await client.get_version()).value,
                "genesis": (await client.get_genesis_hash()).value,
                "identity": (await client.get_identity()).value,
                "leader": (await client.get_slot_leader()).value,
                "epoch": (await client.get_epoch_info()).value,
                "schedule": (await client.get_epoch_schedule()).value,
                "count": (await client.get_transaction_count()).value,
                "slot": (await client.get_slot()).value,
                "height": (await client.get_block_height()).value,
                "clock": (await client.get_account_info(Pubkey.from_string(CLOCK_SYSVAR))).value,
                "supply": (await client.get_supply()).value,
                "fees": (await client.get_recent_prioritization_fees()).value}

    got = with_client(session, use)
    assert got["version"].solana_core and got["identity"].identity == got["leader"]
    epoch, schedule = got["epoch"], got["schedule"]
    assert epoch.absolute_slot == got["slot"] and epoch.block_height == got["height"]
    assert epoch.epoch == got["slot"] // SLOTS_PER_EPOCH == 925
    assert epoch.slot_index == got["slot"] % SLOTS_PER_EPOCH
    assert schedule.slots_per_epoch == epoch.slots_in_epoch == SLOTS_PER_EPOCH
    assert not schedule.warmup
    clock = bytes(got["clock"].data)   # Clock: slot, epoch_start_timestamp, epoch, ...
    assert int.from_bytes(clock[0:8], "little") == got["slot"]
    assert int.from_bytes(clock[16:24], "little") == epoch.epoch
    assert got["count"] == epoch.transaction_count > 0
    assert got["supply"].total > 0
    assert got["fees"] and all(f.prioritization_fee == 0 for f in got["fees"])


def test_signatures_for_address_newest_first_with_before_and_until(
        session: simsync.Session) -> None:
    payer = funded_payer(session)
    sent: List[str] = []
    for _ in range(2):
        tx = transfer_tx(payer, Keypair().pubkey(), latest(session)[0], lamports=SOL // 10)
        step(session, transactions=[tx])
        sent.append(str(tx.signatures[0]))
    memo = VersionedTransaction(MessageV0.try_compile(payer.pubkey(), [
        Instruction(MEMO, "héllo".encode(), []), Instruction(MEMO, b"gm", [])], [],
        latest(session)[0]), [payer])
    step(session, transactions=[memo])
    sent.append(str(memo.signatures[0]))
    address = str(payer.pubkey())
    answer = raw(session, "getSignaturesForAddress", address)
    listed = GetSignaturesForAddressResp.from_json(_text(answer)).value
    assert [str(s.signature) for s in listed] == sent[::-1]
    assert [s.slot for s in listed] == sorted((s.slot for s in listed), reverse=True)
    assert all(s.err is None and s.block_time for s in listed)
    assert [s.memo for s in listed] == ["[6] héllo; [2] gm", None, None]   # byte lengths
    page = session.rpc.call("getSignaturesForAddress", [address, {"before": sent[2],
                                                                  "limit": 1}])
    assert [p["signature"] for p in page] == [sent[1]]
    page = session.rpc.call("getSignaturesForAddress", [address, {"until": sent[0]}])
    assert [p["signature"] for p in page] == [sent[2], sent[1]]
    error = raw(session, "getSignaturesForAddress", address, {"limit": 1001})["error"]
    assert error == {"code": -32602, "message": "Invalid limit; max 1000"}


def test_recent_prioritization_fees_per_block_and_per_account(session: simsync.Session) -> None:
    payer = funded_payer(session)
    priced = MessageV0.try_compile(payer.pubkey(), [
        set_compute_unit_price(7_000),
        transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=Keypair().pubkey(),
                                lamports=SOL))], [], latest(session)[0])
    tx = VersionedTransaction(priced, [payer])
    step(session, transactions=[tx])
    record = session.rpc.get_transaction(tx.signatures[0])
    assert record is not None
    slot = record.slot
    step(session)   # the block is finished

    async def use(client: AsyncClient) -> Tuple[Any, Any]:
        return ((await client.get_recent_prioritization_fees([payer.pubkey()])).value,
                (await client.get_recent_prioritization_fees()).value)

    mine, everyone = with_client(session, use)
    assert {f.slot: f.prioritization_fee for f in mine}[slot] == 7_000
    # the block's minimum: the history's transactions in that block pay no priority fee
    assert {f.slot: f.prioritization_fee for f in everyone}[slot] == 0
    error = raw(session, "getRecentPrioritizationFees", [str(payer.pubkey())] * 129)["error"]
    assert error == {"code": -32602, "message": "Too many inputs provided; max 128"}


def test_request_airdrop_executes_a_transfer(session: simsync.Session) -> None:
    dest = Keypair().pubkey()

    async def use(client: AsyncClient) -> Any:
        return (await client.request_airdrop(dest, 3 * SOL)).value

    signature = with_client(session, use)
    assert session.rpc.get_balance(dest) == 3 * SOL
    record = session.rpc.get_transaction(signature)
    assert record is not None and record.transaction.meta is not None
    assert record.transaction.meta.err is None


@pytest.mark.parametrize("method, params, message", [
    ("getSlot", ["x"], 'Invalid params: invalid type: string "x", expected struct '
                       "RpcContextConfig."),
    ("getSlot", [{"commitment": "bogus"}], "Invalid params: unknown variant `bogus`, expected "
                                           "one of `processed`, `confirmed`, `finalized`."),
    ("getBalance", ["not-a-key"], "Invalid param: Invalid"),
    ("getBlockTime", [], "Invalid params: invalid length 0, expected a slot."),
    ("getBlock", [-1], "Invalid params: invalid type: integer `-1`, expected u64."),
    ("getVersion", [1], "Invalid parameters: No parameters were expected"),
    ("getAccountInfo", [CLOCK_SYSVAR, {"encoding": "json"}],
     "Invalid params: unknown variant `json`, expected one of `binary`, `base58`, `base64`, "
     "`jsonParsed`, `base64+zstd`."),
])
def test_invalid_params_are_32602_with_agave_texts(session: simsync.Session, method: str,
                                                   params: List[Any], message: str) -> None:
    assert raw(session, method, *params)["error"] == {"code": -32602, "message": message}


def test_list_limits_are_agaves(session: simsync.Session) -> None:
    keys = [str(Keypair().pubkey()) for _ in range(101)]
    assert raw(session, "getMultipleAccounts", keys)["error"] == {
        "code": -32602, "message": "Too many inputs provided; max 100"}
    assert len(raw(session, "getMultipleAccounts", keys[:100])["result"]["value"]) == 100
    assert raw(session, "getSignatureStatuses", ["1" * 64] * 257)["error"] == {
        "code": -32602, "message": "Too many inputs provided; max 256"}


def test_min_context_slot_above_the_current_slot_is_32016(session: simsync.Session) -> None:
    here = session.rpc.get_slot()
    for method, params in [("getSlot", [{"minContextSlot": here + 1}]),
                           ("getBalance", [CLOCK_SYSVAR, {"minContextSlot": here + 1}]),
                           ("getAccountInfo", [CLOCK_SYSVAR, {"minContextSlot": here + 5}])]:
        error = raw(session, method, *params)["error"]
        assert error == {"code": -32016, "message": "Minimum context slot has not been reached",
                         "data": {"contextSlot": here}}, method
    assert raw(session, "getSlot", {"minContextSlot": here})["result"] == here


def _text(answer: Dict[str, Any]) -> str:
    return json.dumps(answer)
