"""Real execution (user transactions, overrides, program deployment) and per-session JSON-RPC."""
from __future__ import annotations

import base64
import struct

import pytest
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from simsync.localsim import (
    MEMO_PROGRAM_ID,
    SYSTEM_PROGRAM_ID,
    TOKEN_PROGRAM_ID,
    UPGRADEABLE_LOADER_ID,
    LocalSimulator,
)
from simsync.localsim.testing import START, b64

pytestmark = pytest.mark.timeout(30)
SOL = 1_000_000_000


def _funded(lamports: int = 10 * SOL) -> dict:
    return {"data": {"data": "", "encoding": "base64"}, "executable": False,
            "lamports": lamports, "owner": SYSTEM_PROGRAM_ID, "space": 0}


def _blockhash(sim: LocalSimulator, clients, sid: str) -> Hash:
    """The session's current recent blockhash (what a real client reads before signing)."""
    return Hash.from_string(clients["rpc"](sim, sid).result("getLatestBlockhash")
                            ["value"]["blockhash"])


def _transfer_tx(payer: Keypair, dest: Pubkey, lamports: int, blockhash: Hash,
                 sign: bool = True) -> str:
    ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=dest, lamports=lamports))
    message = MessageV0.try_compile(payer.pubkey(), [ix], [], blockhash)
    if sign:
        tx = VersionedTransaction(message, [payer])
    else:  # a dummy signature: refused (SignatureFailure)
        tx = VersionedTransaction.populate(message, [Signature.default()])
    return b64(bytes(tx))


def test_user_transactions_execute_after_history(sim: LocalSimulator, clients) -> None:
    payer, dest = Keypair(), Keypair().pubkey()
    c = clients["control"](sim)
    sid = c.create(end=START + 5)
    blockhash = _blockhash(sim, clients, sid)
    frames = c.step(advanceCount=1, transactions=[_transfer_tx(payer, dest, SOL, blockhash)],
                    modifyAccountStates={str(payer.pubkey()): _funded()})
    statuses = [f["params"]["status"] for f in frames if f["method"] == "status"]
    assert statuses == ["decodedTransactions", "appliedAccountModifications",
                        "executingBlockTransactions", "executedBlockTransactions",
                        "readyToExecuteUserTransactions", "executedUserTransactions"]
    executed = sim.executed(sid)
    assert executed[-1].source == "user" and executed[-1].ok
    assert executed[-1].program_ids == (SYSTEM_PROGRAM_ID,)
    assert executed[-1].slot == START
    assert all(e.source == "history" for e in executed[:-1])
    rpc = clients["rpc"](sim, sid)
    assert rpc.result("getBalance", str(dest))["value"] == SOL
    assert rpc.result("getBalance", str(payer.pubkey()))["value"] == 9 * SOL - 5000
    tx = rpc.result("getTransaction", executed[-1].signature,
                    {"encoding": "base64", "maxSupportedTransactionVersion": 0})
    assert tx["slot"] == START and tx["meta"]["err"] is None and tx["meta"]["fee"] == 5000
    assert tx["transaction"][1] == "base64"


def test_dummy_signature_transaction_is_refused(sim: LocalSimulator, clients) -> None:
    """Agave verifies signatures: a transaction with a dummy signature does not run, pays
    no fee, and the step says so with a non-fatal error; the session goes on."""
    payer, dest = Keypair(), Keypair().pubkey()
    c = clients["control"](sim)
    sid = c.create(end=START + 5)
    frames = c.step(transactions=[_transfer_tx(payer, dest, SOL, _blockhash(sim, clients, sid),
                                               sign=False)],
                    modifyAccountStates={str(payer.pubkey()): _funded()})
    errors = [f["params"] for f in frames if f["method"] == "error"]
    assert len(errors) == 1 and "SignatureFailure" in errors[0]["simulationError"]["error"]
    assert all(e.source == "history" for e in sim.executed(sid))
    rpc = clients["rpc"](sim, sid)
    assert rpc.result("getBalance", str(dest))["value"] == 0
    assert rpc.result("getBalance", str(payer.pubkey()))["value"] == 10 * SOL
    assert frames[-1]["method"] == "readyForContinue"


def test_failed_user_transaction_is_recorded_not_fatal(sim: LocalSimulator, clients) -> None:
    payer, dest = Keypair(), Keypair().pubkey()
    c = clients["control"](sim)
    sid = c.create(end=START + 5)
    c.step(transactions=[_transfer_tx(payer, dest, 100 * SOL, _blockhash(sim, clients, sid))],
           modifyAccountStates={str(payer.pubkey()): _funded(SOL)})
    last = sim.executed(sid)[-1]
    assert last.source == "user" and not last.ok and last.err is not None
    assert c.step()[-1]["method"] == "readyForContinue"


def test_modify_account_states_is_visible_over_rpc(sim: LocalSimulator, clients) -> None:
    key = Keypair().pubkey()
    c = clients["control"](sim)
    sid = c.create(end=START + 5)
    data = b"\x01\x02\x03\x04"
    c.step(modifyAccountStates={str(key): {
        "data": {"data": b64(data), "encoding": "base64"}, "executable": False,
        "lamports": 33594, "owner": TOKEN_PROGRAM_ID, "space": 4}})
    info = clients["rpc"](sim, sid).result("getAccountInfo", str(key), {"encoding": "base64"})
    assert info["value"]["lamports"] == 33594 and info["value"]["owner"] == TOKEN_PROGRAM_ID
    assert base64.b64decode(info["value"]["data"][0]) == data


def test_program_override_loads_and_runs(sim: LocalSimulator, clients) -> None:
    """Deploy an ELF (the Memo program's, copied over RPC) under a new id, upgradeable loader."""
    c = clients["control"](sim)
    sid = c.create(end=START + 5)
    rpc = clients["rpc"](sim, sid)
    memo = rpc.result("getAccountInfo", MEMO_PROGRAM_ID, {"encoding": "base64"})["value"]
    elf = base64.b64decode(memo["data"][0])
    assert elf[:4] == b"\x7fELF"
    loader = Pubkey.from_string(UPGRADEABLE_LOADER_ID)
    program = Keypair().pubkey()
    program_data, _ = Pubkey.find_program_address([bytes(program)], loader)
    header = struct.pack("<IQ", 3, START - 1) + bytes(33)  # ProgramData{slot, authority: None}
    overrides = {
        str(program_data): {"data": {"data": b64(header + elf), "encoding": "base64"},
                            "executable": False, "lamports": 10 * SOL,
                            "owner": UPGRADEABLE_LOADER_ID, "space": len(header) + len(elf)},
        str(program): {"data": {"data": b64(struct.pack("<I", 2) + bytes(program_data)),
                                "encoding": "base64"},
                       "executable": True, "lamports": SOL, "owner": UPGRADEABLE_LOADER_ID,
                       "space": 36},
    }
    payer = Keypair()
    overrides[str(payer.pubkey())] = _funded()
    ix = Instruction(program, b"hello override", [])
    tx = VersionedTransaction(MessageV0.try_compile(payer.pubkey(), [ix], [],
                                                    _blockhash(sim, clients, sid)), [payer])
    c.step(transactions=[b64(bytes(tx))], modifyAccountStates=overrides)
    last = sim.executed(sid)[-1]
    assert last.ok and last.program_ids == (str(program),)
    logs = rpc.result("getTransaction", last.signature,
                      {"maxSupportedTransactionVersion": 0})["meta"]["logMessages"]
    assert "Program log: hello override" in logs


def test_rpc_reads_while_paused_see_state_through_previous_batch(sim: LocalSimulator,
                                                                  clients) -> None:
    slot = next(s for s in sim.produced_slots(START + 1, START + 100)
                if len(sim.history.plan(s)) >= 2)
    c = clients["control"](sim)
    sid = c.create(end=slot + 2)
    c.send("continueTo", {"slot": slot, "batchIndex": 1})
    c.until("paused")
    rpc = clients["rpc"](sim, sid)
    assert rpc.result("getSlot") == slot
    before = [e for e in sim.executed(sid) if e.slot == slot]
    assert before and {e.batch_index for e in before} == {0}
    for e in before:
        assert rpc.result("getSignatureStatuses", [e.signature])["value"][0]["slot"] == slot
    payer, dest = Keypair(), Keypair().pubkey()
    rpc.result("modifyAccounts", {str(payer.pubkey()): _funded()})
    sig = rpc.result("sendTransaction", _transfer_tx(payer, dest, SOL,
                                                     _blockhash(sim, clients, sid)),
                     {"encoding": "base64"})
    c.step()
    order = [(e.source, e.batch_index) for e in sim.executed(sid) if e.slot == slot]
    rpc_at = order.index(("rpc", None))
    assert all(b == 0 for _, b in order[:rpc_at]) and all(b >= 1 for _, b in order[rpc_at + 1:])
    assert next(e for e in sim.executed(sid) if e.source == "rpc").signature == sig


def test_rpc_methods(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    sid = c.create(end=START + 10)
    c.step(advanceCount=2)
    rpc = clients["rpc"](sim, sid)
    slot = rpc.result("getSlot")
    assert slot == sim.produced_slots(START, START + 10)[2]
    bh = rpc.result("getLatestBlockhash")
    assert bh["context"]["slot"] == slot and Hash.from_string(bh["value"]["blockhash"])
    wallet = sim.wallets[1]
    info = rpc.result("getAccountInfo", wallet, {"encoding": "base64"})["value"]
    assert info["owner"] == SYSTEM_PROGRAM_ID and info["lamports"] > 0
    assert rpc.result("getBalance", wallet)["value"] == info["lamports"]
    multi = rpc.result("getMultipleAccounts", [wallet, str(Keypair().pubkey())],
                       {"encoding": "base64"})["value"]
    assert multi[0]["lamports"] == info["lamports"] and multi[1] is None
    mint = str(sim.history.mint)
    token_accounts = rpc.result("getProgramAccounts", TOKEN_PROGRAM_ID, {
        "encoding": "base64", "filters": [{"dataSize": 165},
                                          {"memcmp": {"offset": 0, "bytes": mint}}]})
    assert {a["pubkey"] for a in token_accounts} == {str(t) for t in
                                                     sim.history.token_accounts}
    payer = Keypair()
    message = MessageV0.try_compile(payer.pubkey(), [transfer(TransferParams(
        from_pubkey=payer.pubkey(), to_pubkey=payer.pubkey(), lamports=1))], [], Hash.default())
    from solders.message import to_bytes_versioned
    fee = rpc.result("getFeeForMessage", b64(to_bytes_versioned(message)))
    assert fee["value"] == 5000
    executed = sim.executed(sid)
    statuses = rpc.result("getSignatureStatuses", [executed[0].signature, "1" * 64])["value"]
    assert statuses[0]["slot"] == executed[0].slot and statuses[0]["err"] is None
    assert statuses[1] is None
    tx = rpc.result("getTransaction", executed[0].signature,
                    {"encoding": "base64", "maxSupportedTransactionVersion": 0})
    assert tx["blockTime"] > 0 and tx["meta"]["logMessages"]
    assert rpc.result("getTransaction", "1" * 64) is None
    sim_tx = _transfer_tx(payer, Keypair().pubkey(), SOL,
                          Hash.from_string(bh["value"]["blockhash"]))
    simulated = rpc.result("simulateTransaction", sim_tx, {"encoding": "base64"})["value"]
    assert simulated["err"] is not None  # the payer does not exist
    refused = rpc.call("sendTransaction", sim_tx, {"encoding": "base64"})
    assert refused["error"]["code"] == -32002  # preflight failure
    assert rpc.result("getAddressLookupTable", wallet)["value"] is None
    batch = rpc.raw([{"jsonrpc": "2.0", "id": 1, "method": "getSlot"},
                     {"jsonrpc": "2.0", "id": 2, "method": "getBalance", "params": [wallet]}])
    assert [r["id"] for r in batch] == [1, 2] and batch[0]["result"] == slot


def test_rpc_error_codes(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    sid = c.create(end=START + 2)
    rpc = clients["rpc"](sim, sid)
    parse = rpc.http.post(rpc.url, data=b"{not json", timeout=5).json()
    assert parse["error"]["code"] == -32700
    assert rpc.raw({"id": 3, "method": "getSlot"})["error"]["code"] == -32600
    assert rpc.raw([])["error"]["code"] == -32600
    assert rpc.call("getTeleport")["error"]["code"] == -32601
    bad = rpc.call("getBalance", "not-a-pubkey")
    assert bad["error"]["code"] == -32602 and bad["id"] == 1
    assert rpc.call("modifyAccounts", {"x": {}})["error"]["code"] == -32602
    assert c.step()[-1]["method"] == "readyForContinue"  # the server keeps serving


def test_rpc_on_unknown_or_ended_session_fails_fast(sim: LocalSimulator, clients) -> None:
    unknown = clients["rpc"](sim, "backtest_nope").call("getSlot")
    assert unknown["error"]["code"] == -32002 and "not found" in unknown["error"]["message"]
    c = clients["control"](sim)
    sid = c.create(end=START)
    rpc = clients["rpc"](sim, sid)
    assert rpc.result("getSlot") == START
    assert c.step()[-1]["method"] == "completed"
    ended = rpc.call("getSlot")
    assert ended["error"]["code"] == -32002 and "ended" in ended["error"]["message"]
