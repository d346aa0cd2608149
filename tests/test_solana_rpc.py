"""``simsync.SolanaRpc``, the blocking Solana JSON-RPC client (issue 27 item 6), on real
loopback sockets: every typed Agave method against a small JSON-RPC server answering the
Agave-shaped fixtures of ``tests/golden/rpc/agave.json``; the methods the local simulator
serves through ``session.rpc`` (a ``SolanaRpc`` bound to the session) and through a
standalone ``SolanaRpc`` at the session's endpoint; errors: a JSON-RPC error object, a result
that is not Agave's shape, a server that never answers (``RpcTimeout``), a refused port
(``RpcConnectionError``)."""
from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Tuple

import pytest
from solders.account import Account, AccountJSON
from solders.address_lookup_table_account import AddressLookupTable
from solders.epoch_info import EpochInfo
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.rpc.responses import RpcSimulateTransactionResult
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction
from solders.transaction_status import (
    EncodedConfirmedTransactionWithStatusMeta,
    TransactionConfirmationStatus,
    TransactionErrorFieldless,
    TransactionStatus,
    UiTransaction,
)

import simsync
from simsync.localsim import LocalSimulator
from tests.hostile import HostileServer, Peer
from tests.jsonrpc_server import JsonRpcServer
from tests.support import FAST, START

pytestmark = pytest.mark.timeout(60)

FIXTURES: Dict[str, Any] = json.loads(
    (Path(__file__).parent / "golden" / "rpc" / "agave.json").read_text())
SOL = 1_000_000_000


class AgaveFixtureServer(JsonRpcServer):
    """A JSON-RPC 2.0 server on 127.0.0.1 answering each method with its fixture ``result``
    (or ``answers[method]``: a whole reply object without the id); ``requests`` holds each
    request body received. A context manager: stops and joins its threads on exit."""

    def __init__(self, answers: Dict[str, Any] | None = None) -> None:
        self.answers = answers or {}
        super().__init__()

    def answer(self, body: Dict[str, Any]) -> Dict[str, Any]:
        method = body["method"]
        return dict(self.answers.get(method) or {"result": FIXTURES[method]["result"]})

    def __enter__(self) -> AgaveFixtureServer:
        return self


@pytest.fixture
def agave() -> Iterator[Tuple[AgaveFixtureServer, simsync.SolanaRpc]]:
    with AgaveFixtureServer() as server, simsync.SolanaRpc(server.url, timeout=10.0) as rpc:
        yield server, rpc


MINT = "3wyAj7Rt1TWVPZVteFJPLa26JmLvdb1CAKEFZm3NY75E"
SYSTEM = "11111111111111111111111111111111"
TOKEN_PROGRAM = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
VINES = "vines1vzrYbzLMRdu58ou5XTby4qAqVRLmqo36NKPo5s"
TX_SIGNATURE = FIXTURES["getTransaction"]["params"][0]
DOC_TX = base64.b64decode(FIXTURES["sendTransaction"]["params"][0])   # the docs' transaction

#: method -> (the call, a check of its typed result)
CALLS: Dict[str, Tuple[Callable[[simsync.SolanaRpc], Any], Callable[[Any], bool]]] = {
    "getVersion": (lambda r: r.get_version(), lambda v: v.solana_core == "1.16.7"
                   and v.feature_set == 2891131721),
    "getGenesisHash": (lambda r: r.get_genesis_hash(), lambda v: v == Hash.from_string(
        "GH7ome3EiwEr7tu9JuTh2dpYWBJK3z69Xm1ZE3MEE6JC")),
    "getIdentity": (lambda r: r.get_identity(), lambda v: v == Pubkey.from_string(
        "2r1F4iWqVcb8M1DbAjQuFpebkQHY9hcVU4WuW2DJBppN")),
    "getHealth": (lambda r: r.get_health(), lambda v: v == "ok"),
    "getBlockHeight": (lambda r: r.get_block_height("confirmed"), lambda v: v == 1233),
    "getSlotLeader": (lambda r: r.get_slot_leader(), lambda v: isinstance(v, Pubkey)
                      and str(v) == "ENvAW7JScgYq6o4zKZwewtkzzJgDzuJAFxYasvmEQdpS"),
    "getEpochInfo": (lambda r: r.get_epoch_info(), lambda v: isinstance(v, EpochInfo)
                     and (v.epoch, v.slot_index, v.slots_in_epoch, v.absolute_slot,
                          v.block_height) == (27, 2790, 8192, 166598, 166500)),
    "getEpochSchedule": (lambda r: r.get_epoch_schedule(), lambda v: v.slots_per_epoch == 8192
                         and v.first_normal_slot == 8160 and v.warmup is True),
    "getBlockTime": (lambda r: r.get_block_time(5), lambda v: v == 1574721591),
    "getBlocks": (lambda r: r.get_blocks(5, 10), lambda v: v == [5, 6, 7, 8, 9, 10]),
    "getBlocksWithLimit": (lambda r: r.get_blocks_with_limit(5, 3), lambda v: v == [5, 6, 7]),
    "getFirstAvailableBlock": (lambda r: r.get_first_available_block(), lambda v: v == 250000),
    "minimumLedgerSlot": (lambda r: r.minimum_ledger_slot(), lambda v: v == 1234),
    "getTransactionCount": (lambda r: r.get_transaction_count(), lambda v: v == 268),
    "isBlockhashValid": (lambda r: r.is_blockhash_valid(Hash.from_string(
        "J7rBdM6AecPDEZp8aPq5iPSNKVkU5Q76F3oAV4eW5wsW"), "processed"), lambda v: v is False),
    "getMinimumBalanceForRentExemption": (
        lambda r: r.get_minimum_balance_for_rent_exemption(50), lambda v: v == 500),
    "getRecentPrioritizationFees": (
        lambda r: r.get_recent_prioritization_fees(
            [Pubkey.from_string("CxELquR1gPP8wHe33gZ4QxqGB3sZ9RSwsJ2KshVewkFY")]),
        lambda v: [(f.slot, f.prioritization_fee) for f in v] == [(348125, 0), (348126, 1000)]),
    "getSignaturesForAddress": (
        lambda r: r.get_signatures_for_address("Vote111111111111111111111111111111111111111",
                                               limit=1),
        lambda v: len(v) == 1 and v[0].slot == 114 and isinstance(v[0].signature, Signature)
        and v[0].err is None),
    "getTokenAccountBalance": (
        lambda r: r.get_token_account_balance("7fUAJdStEuGbc3sM84cKRL6yYaaSstyLSU4ve5oovLS7"),
        lambda v: (v.amount, v.decimals, v.ui_amount_string) == ("9864", 2, "98.64")),
    "getTokenSupply": (lambda r: r.get_token_supply(Pubkey.from_string(MINT)),
                       lambda v: (v.amount, v.decimals) == ("100000", 2)),
    "getTokenLargestAccounts": (
        lambda r: r.get_token_largest_accounts(MINT),
        lambda v: [(str(a.address), a.amount.amount) for a in v] == [
            ("FYjHNoFtSQ5uijKrZFyYAxvEr87hsKXkXcxkcmkBAf4r", "771"),
            ("BnsywxTcaYeNUtzrPxQUvzAWxfzZe3ZLUJ4wMMuLESnu", "229")]),
    "getTokenAccountsByOwner": (
        lambda r: r.get_token_accounts_by_owner(
            "A1TMhSGzQxMr1TboBKtgixKz1sS6REASMxPo1qsyTSJd", mint=MINT),
        lambda v: len(v) == 1 and isinstance(v[0].account, Account)
        and v[0].account.lamports == 2039280 and str(v[0].account.owner)
        == "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"),
    "getSupply": (lambda r: r.get_supply(), lambda v: (v.total, v.circulating,
                                                        v.non_circulating)
                  == (1016000, 16000, 1000000)),
    "requestAirdrop": (
        lambda r: r.request_airdrop(
            Pubkey.from_string("83astBRguLMdt2h5U1Tpdq5tjFoJ6noeGwaY3mDLVcri"), SOL),
        lambda v: v == Signature.from_string(FIXTURES["requestAirdrop"]["result"])),
    "getBlock": (
        lambda r: r.get_block(430, transaction_details="signatures"),
        lambda v: (v.block_height, v.parent_slot, str(v.blockhash), len(v.signatures or []))
        == (428, 429, "3Eq21vXNB5s86c62bVuUfTeaMif1N2kUqRPBmGRJhyTA", 1)),
    # the methods of PROTOCOL.md §10, typed since issue 27 item 6 (JSON dicts / str before)
    "getSlot": (lambda r: r.get_slot(), lambda v: v == 1234),
    "getBalance": (lambda r: r.get_balance("83astBRguLMdt2h5U1Tpdq5tjFoJ6noeGwaY3mDLVcri"),
                   lambda v: v == 0),
    "getAccountInfo": (
        lambda r: r.get_account_info(VINES),
        lambda v: isinstance(v, Account) and (v.lamports, bytes(v.data), str(v.owner),
                                              v.executable, v.rent_epoch)
        == (88849814690250, b"\x01\x02\x03", SYSTEM, False, 2**64 - 1)),
    "getMultipleAccounts": (
        lambda r: r.get_multiple_accounts(
            [VINES, Pubkey.from_string("4fYNw3dojWmQ4dXtSGE9epjRGy9pFSx62YypT7avPYvA")]),
        lambda v: len(v) == 2 and isinstance(v[0], Account) and v[0].lamports == 88849814690250
        and bytes(v[0].data) == b"" and v[1] is None),
    "getProgramAccounts": (
        lambda r: r.get_program_accounts(
            "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T",
            filters=[{"dataSize": 17}, {"memcmp": {"offset": 4, "bytes": "3Mc6vR"}}]),
        lambda v: [(str(k.pubkey), k.account.lamports, len(bytes(k.account.data))) for k in v]
        == [("CxELquR1gPP8wHe33gZ4QxqGB3sZ9RSwsJ2KshVewkFY", 15298080, 17)]
        and isinstance(v[0].account, Account)),
    "getLatestBlockhash": (
        lambda r: r.get_latest_blockhash("processed"),
        lambda v: v.blockhash == Hash.from_string("EkSnNWid2cvwEVnVx9aBqawnmiCNiDgp3gUdkDPTKN1N")
        and v.last_valid_block_height == 3090),
    "getSignatureStatuses": (
        lambda r: r.get_signature_statuses(
            [Signature.from_string(s) for s in FIXTURES["getSignatureStatuses"]["params"][0]],
            search_transaction_history=True),
        lambda v: len(v) == 2 and isinstance(v[0], TransactionStatus) and v[1] is None
        and (v[0].slot, v[0].confirmations, v[0].err, v[0].confirmation_status)
        == (48, None, None, TransactionConfirmationStatus.Finalized)),
    "getTransaction": (
        lambda r: r.get_transaction(Signature.from_string(TX_SIGNATURE)),
        lambda v: isinstance(v, EncodedConfirmedTransactionWithStatusMeta)
        and (v.slot, v.block_time) == (430, None)
        and v.transaction.meta is not None and v.transaction.meta.fee == 5000
        and v.transaction.meta.err is None
        and v.transaction.meta.pre_balances[0] - v.transaction.meta.post_balances[0] == 5000
        and isinstance(v.transaction.transaction, UiTransaction)
        and v.transaction.transaction.signatures == [Signature.from_string(TX_SIGNATURE)]),
    "simulateTransaction": (
        lambda r: r.simulate_transaction(DOC_TX),
        lambda v: isinstance(v, RpcSimulateTransactionResult) and v.err is None
        and v.units_consumed == 2366 and v.logs is not None and len(v.logs) == 4
        and v.return_data is not None and v.return_data.data == b"*"
        and str(v.return_data.program_id) == "83astBRguLMdt2h5U1Tpdq5tjFoJ6noeGwaY3mDLVcri"),
    "sendTransaction": (
        lambda r: r.send_transaction(DOC_TX),
        lambda v: v == Signature.from_string(FIXTURES["sendTransaction"]["result"])),
}


def test_every_fixture_has_a_typed_call() -> None:
    assert set(CALLS) == set(FIXTURES)


@pytest.mark.parametrize("method", sorted(FIXTURES))
def test_each_agave_method_sends_agaves_params_and_reads_a_typed_result(
        agave: Tuple[AgaveFixtureServer, simsync.SolanaRpc], method: str) -> None:
    server, rpc = agave
    call, check = CALLS[method]
    value = call(rpc)
    assert [(r["method"], r["params"]) for r in server.requests] == [
        (method, FIXTURES[method]["params"])]
    assert check(value), f"{method} read as {value!r}"


def test_a_json_rpc_error_object_keeps_code_message_and_data() -> None:
    data = {"err": {"InstructionError": [0, "Custom"]}, "logs": ["Program log: x"]}
    answers = {"getBlock": {"error": {"code": -32007, "message": "Slot 430 was skipped",
                                      "data": data}}}
    with AgaveFixtureServer(answers) as server, simsync.SolanaRpc(server.url) as rpc, \
            pytest.raises(simsync.RpcError) as info:
        rpc.get_block(430)
    assert (info.value.code, info.value.rpc_message, info.value.data) == (
        -32007, "Slot 430 was skipped", data)
    assert "Slot 430 was skipped" in str(info.value) and "getBlock" in str(info.value)
    assert type(info.value) is simsync.RpcError


def test_commitment_is_sent_only_when_given() -> None:
    answers = {"getSlot": {"result": 7}, "getBalance": {"result": {"context": {"slot": 7},
                                                                   "value": 5}}}
    with AgaveFixtureServer(answers) as server, simsync.SolanaRpc(server.url) as rpc:
        assert rpc.get_slot() == 7 and rpc.get_slot("confirmed") == 7
        assert rpc.get_balance(MINT, commitment="finalized") == 5
    assert [r["params"] for r in server.requests] == [
        [], [{"commitment": "confirmed"}], [MINT, {"commitment": "finalized"}]]


NESTED: Any = 0
for _ in range(500):
    NESTED = [NESTED]


@pytest.mark.parametrize("result", [{"absoluteSlot": "x"}, [1, 2], None, "ok", NESTED])
def test_a_result_without_agaves_shape_is_an_rpc_error_naming_the_method(result: Any) -> None:
    with AgaveFixtureServer({"getEpochInfo": {"result": result}}) as server, \
            simsync.SolanaRpc(server.url) as rpc, \
            pytest.raises(simsync.RpcError, match="getEpochInfo: unexpected result"):
        rpc.get_epoch_info()


def test_a_server_that_never_answers_is_an_rpc_timeout_within_the_timeout() -> None:
    with HostileServer(Peer.idle) as server, \
            simsync.SolanaRpc(f"http://127.0.0.1:{server.port}/", timeout=1.0) as rpc:
        began = time.monotonic()
        with pytest.raises(simsync.RpcTimeout) as info:
            rpc.get_version()
        took = time.monotonic() - began
    assert 0.9 <= took < 1.0 + 4.0                  # the deadline, with room for a loaded box
    assert isinstance(info.value, simsync.RpcError) and isinstance(info.value, TimeoutError)
    assert "timeout=1s ran out while waiting for the response headers" in str(info.value)


def test_a_refused_port_is_an_rpc_connection_error_at_once() -> None:
    with socket.socket() as probe:                  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with simsync.SolanaRpc(f"http://127.0.0.1:{port}/", timeout=10.0) as rpc:
        began = time.monotonic()
        with pytest.raises(simsync.RpcConnectionError) as info:
            rpc.get_health()
        took = time.monotonic() - began
    assert took < 5.0                               # refused, not the 10 s deadline
    assert isinstance(info.value, simsync.RpcError) and isinstance(info.value, ConnectionError)
    assert "getHealth: connection failed" in str(info.value)


def test_a_closed_client_refuses_calls_and_bad_arguments_fail_before_sending(
        agave: Tuple[AgaveFixtureServer, simsync.SolanaRpc]) -> None:
    server, rpc = agave
    with pytest.raises(TypeError):
        rpc.get_block_time("5")                     # type: ignore[arg-type]
    with pytest.raises(ValueError):
        rpc.get_blocks(-1)
    with pytest.raises(TypeError):
        rpc.get_token_accounts_by_owner(MINT)       # neither mint nor program_id
    assert server.requests == []
    rpc.close()
    with pytest.raises(simsync.RpcError, match="this SolanaRpc is closed"):
        rpc.get_health()
    assert server.requests == []


def test_a_forked_child_cannot_use_the_parents_client_and_leaves_its_pool_alone(
        agave: Tuple[AgaveFixtureServer, simsync.SolanaRpc]) -> None:
    server, rpc = agave
    assert rpc.get_health() == "ok"                 # the pool now holds a live connection
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # the child: report, never return
        try:
            try:
                rpc.get_health()
                outcome = "answered"
            except simsync.ForkedSessionError as exc:
                rpc.close()
                outcome = "ForkedSessionError" if "SolanaRpc" in str(exc) else str(exc)
            except BaseException as exc:            # noqa: BLE001 - reported to the parent
                outcome = type(exc).__name__
            os.write(write, outcome.encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        with os.fdopen(read, "rb") as pipe:
            outcome = pipe.read().decode()
    finally:
        os.waitpid(pid, 0)
    assert outcome == "ForkedSessionError"
    assert rpc.get_health() == "ok"                 # the parent's pool still answers
    assert len(server.requests) == 2


# ---------------------------------------------------------------------------------------------
# Against the local simulator
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def session() -> Iterator[simsync.Session]:
    with LocalSimulator() as sim, simsync.Client(sim.url, config=FAST).start_session(
            start_slot=START, end_slot=START + 400) as session:
        while not isinstance(session.next_event(30), simsync.ReadyForContinue):
            pass
        yield session


def test_session_rpc_is_a_solana_rpc_with_typed_reads(session: simsync.Session) -> None:
    rpc = session.rpc
    assert isinstance(rpc, simsync.SolanaRpc)
    payer = Keypair()
    rpc.modify_accounts({payer.pubkey(): simsync.AccountData.of(
        b"\x01\x02", "11111111111111111111111111111111", 10 * SOL)})
    account = rpc.get_account(payer.pubkey())
    assert isinstance(account, Account)
    assert (account.lamports, bytes(account.data), str(account.owner)) == (
        10 * SOL, b"\x01\x02", "11111111111111111111111111111111")
    assert rpc.get_account(Keypair().pubkey()) is None
    assert rpc.get_health() == "ok"
    height = rpc.get_block_height()
    assert 0 < height < rpc.get_slot()              # its own scale, below the slot
    latest = rpc.get_latest_blockhash()
    assert isinstance(latest.blockhash, Hash) and latest.last_valid_block_height > height
    assert rpc.is_blockhash_valid(latest.blockhash) is True
    assert rpc.is_blockhash_valid(Hash.new_unique()) is False
    assert rpc.get_minimum_balance_for_rent_exemption(0) == 890_880   # Agave's rent
    assert rpc.get_minimum_balance_for_rent_exemption(165) == 2_039_280


def test_a_standalone_solana_rpc_at_the_session_endpoint_sends_and_reads(
        session: simsync.Session) -> None:
    payer = Keypair()
    dest = Keypair().pubkey()
    session.rpc.modify_accounts({payer.pubkey(): simsync.AccountData.of(
        b"", SYSTEM, 10 * SOL)})
    with simsync.SolanaRpc(session.rpc.url, timeout=10.0) as rpc:
        slot = rpc.get_slot()
        blockhash = rpc.get_latest_blockhash().blockhash
        message = MessageV0.try_compile(payer.pubkey(), [transfer(TransferParams(
            from_pubkey=payer.pubkey(), to_pubkey=dest, lamports=SOL))], [], blockhash)
        tx = VersionedTransaction(message, [payer])
        simulated = rpc.simulate_transaction(tx)
        assert isinstance(simulated, RpcSimulateTransactionResult)
        assert simulated.err is None and simulated.units_consumed == 150
        assert simulated.logs == [f"Program {SYSTEM} invoke [1]", f"Program {SYSTEM} success"]
        assert rpc.get_fee_for_message(message) == 5000
        signature = rpc.send_transaction(tx)
        assert isinstance(signature, Signature) and signature == tx.signatures[0]
        assert rpc.get_balance(dest) == SOL
        status, unknown = rpc.get_signature_statuses([signature, Signature.new_unique()])
        assert unknown is None and isinstance(status, TransactionStatus)
        assert (status.slot, status.err, status.confirmation_status) == (
            slot, None, TransactionConfirmationStatus.Finalized)
        record = rpc.get_transaction(signature)
        assert isinstance(record, EncodedConfirmedTransactionWithStatusMeta)
        meta = record.transaction.meta
        assert record.slot == slot and meta is not None and meta.err is None
        assert (meta.fee, meta.pre_balances[:2], meta.post_balances[:2]) == (
            5000, [10 * SOL, 0], [9 * SOL - 5000, SOL])
        assert isinstance(record.transaction.transaction, UiTransaction)
        raw = rpc.get_transaction(signature, "base64")
        assert raw is not None and raw.transaction.transaction == tx
        assert rpc.get_transaction(Signature.new_unique()) is None
        accounts = rpc.get_multiple_accounts([payer.pubkey(), dest, Keypair().pubkey()])
        assert [a.lamports if a else None for a in accounts] == [9 * SOL - 5000, SOL, None]
        assert all(isinstance(a, Account) for a in accounts[:2])
        owned = rpc.get_program_accounts(SYSTEM, filters=[{"dataSize": 0}])
        mine = {k.pubkey: k.account for k in owned}
        assert mine[dest] == Account(lamports=SOL, data=b"", owner=Pubkey.from_string(SYSTEM))
        assert mine[payer.pubkey()].lamports == 9 * SOL - 5000
        account = rpc.get_account_info(dest)
        assert isinstance(account, Account) and account.lamports == SOL
        assert rpc.get_account_info(Keypair().pubkey()) is None


def test_typed_methods_read_parsed_accounts_and_lookup_tables(session: simsync.Session) -> None:
    rpc = session.rpc
    minted = rpc.get_program_accounts(TOKEN_PROGRAM, encoding="jsonParsed")
    parsed = [k for k in minted if isinstance(k.account, AccountJSON)]
    assert parsed and all(k.account.data.program == "spl-token" for k in parsed)
    assert {k.account.data.parsed["type"] for k in parsed} <= {"account", "mint"}
    first = parsed[0]
    again = rpc.get_account_info(first.pubkey, "jsonParsed")
    assert isinstance(again, AccountJSON) and again.data.parsed == first.account.data.parsed
    assert rpc.get_multiple_accounts([first.pubkey, Keypair().pubkey()], "jsonParsed") == [
        again, None]
    owner, dest = Keypair().pubkey(), Keypair().pubkey()
    table = Keypair().pubkey()
    data = (struct.pack("<IQQB", 1, 2**64 - 1, 7, 0) + b"\x01" + bytes(owner) + b"\0\0"
            + bytes(dest))
    rpc.modify_accounts({table: simsync.AccountData.of(
        data, "AddressLookupTab1e1111111111111111111111111", SOL)})
    found = rpc.get_address_lookup_table(table)
    assert isinstance(found, AddressLookupTable) and found.addresses == [dest]
    assert (found.meta.authority, found.meta.deactivation_slot, found.meta.last_extended_slot) == (
        owner, 2**64 - 1, 7)
    assert rpc.get_address_lookup_table(Keypair().pubkey()) is None


def test_typed_methods_fail_as_agave_does(session: simsync.Session) -> None:
    rpc = session.rpc
    poor = Keypair()                                # holds nothing: cannot pay the fee
    message = MessageV0.try_compile(poor.pubkey(), [transfer(TransferParams(
        from_pubkey=poor.pubkey(), to_pubkey=Keypair().pubkey(), lamports=SOL))], [],
        rpc.get_latest_blockhash().blockhash)
    tx = VersionedTransaction(message, [poor])
    assert rpc.simulate_transaction(tx).err == TransactionErrorFieldless.AccountNotFound
    with pytest.raises(simsync.RpcError) as info:
        rpc.send_transaction(tx)                    # the preflight refuses it
    assert info.value.code == -32002 and info.value.data["err"] == "AccountNotFound"
    signature = rpc.send_transaction(tx, skip_preflight=True)
    assert signature == tx.signatures[0]
    (status,) = rpc.get_signature_statuses([signature])
    assert status is not None and status.err == TransactionErrorFieldless.AccountNotFound
    with pytest.raises(simsync.RpcError) as info:   # a list of more than 100 keys
        rpc.get_multiple_accounts([Keypair().pubkey() for _ in range(101)])
    assert info.value.code == -32602 and type(info.value) is simsync.RpcError
    with pytest.raises(ValueError, match="call"):   # refused before sending: use call()
        rpc.get_account_info(poor.pubkey(), "base64+zstd")  # type: ignore[call-overload]


def serves(*methods: str) -> Any:
    """Skip unless the local simulator serves ``methods`` (helper rpc24 adds Agave's ledger,
    cluster and token methods to it; these tests run from the merge on)."""
    from simsync.localsim.rpc_methods import METHODS
    missing = [m for m in methods if m not in METHODS]
    return pytest.mark.skipif(bool(missing), reason=f"the local simulator does not serve "
                              f"{', '.join(missing)} yet")


@serves("getVersion", "getGenesisHash", "getIdentity", "getSlotLeader", "getEpochInfo",
        "getEpochSchedule", "getTransactionCount", "getSupply")
def test_the_cluster_methods_read_typed_from_the_simulator(session: simsync.Session) -> None:
    rpc = session.rpc
    slot = rpc.get_slot()
    assert rpc.get_version().solana_core
    assert isinstance(rpc.get_genesis_hash(), Hash)
    assert isinstance(rpc.get_identity(), Pubkey) and isinstance(rpc.get_slot_leader(), Pubkey)
    info = rpc.get_epoch_info()
    assert (info.epoch, info.absolute_slot, info.slots_in_epoch) == (
        slot // 432_000, slot, 432_000)
    assert info.slot_index == slot % 432_000
    assert rpc.get_epoch_schedule().slots_per_epoch == 432_000
    assert rpc.get_transaction_count() >= 0
    supply = rpc.get_supply()
    assert supply.total >= supply.circulating > 0


@serves("getBlock", "getBlocks", "getBlocksWithLimit", "getBlockTime",
        "getFirstAvailableBlock", "minimumLedgerSlot")
def test_the_ledger_methods_read_typed_from_the_simulator(session: simsync.Session) -> None:
    rpc = session.rpc
    session.send_continue(advance_count=3, timeout=30)
    while not isinstance(session.next_event(30), simsync.ReadyForContinue):
        pass
    first = rpc.get_first_available_block()
    assert rpc.minimum_ledger_slot() <= first == START
    blocks = rpc.get_blocks(first, rpc.get_slot() - 1)
    assert blocks[0] == first and blocks == sorted(blocks) and len(blocks) >= 3
    assert rpc.get_blocks_with_limit(first, 2) == blocks[:2]
    block = rpc.get_block(blocks[1], transaction_details="signatures")
    assert block.parent_slot == blocks[0] and block.block_time == rpc.get_block_time(blocks[1])
    assert str(block.previous_blockhash) == str(rpc.get_block(blocks[0]).blockhash)


@serves("requestAirdrop", "getSignaturesForAddress", "getRecentPrioritizationFees")
def test_an_airdrop_lands_and_is_found_by_address(session: simsync.Session) -> None:
    rpc = session.rpc
    who = Keypair().pubkey()
    signature = rpc.request_airdrop(who, SOL)
    assert isinstance(signature, Signature)
    assert rpc.get_balance(who) == SOL
    found = rpc.get_signatures_for_address(who, limit=10)
    assert [s.signature for s in found] == [signature]
    assert all(f.prioritization_fee >= 0 for f in rpc.get_recent_prioritization_fees([who]))


@serves("getTokenAccountsByOwner", "getTokenAccountBalance", "getTokenSupply",
        "getTokenLargestAccounts")
def test_the_token_methods_read_typed_from_the_simulator() -> None:
    with LocalSimulator() as sim, simsync.Client(sim.url, config=FAST).start_session(
            start_slot=START, end_slot=START + 400) as session:
        while not isinstance(session.next_event(30), simsync.ReadyForContinue):
            pass
        rpc = session.rpc
        held = [(owner, keyed) for owner in sim.wallets
                for keyed in rpc.get_token_accounts_by_owner(owner, program_id=TOKEN_PROGRAM)]
        assert held, "the synthetic history has token accounts"
        owner, keyed = held[0]
        data = bytes(keyed.account.data)            # SPL Token account: mint, owner, amount
        mint, amount = Pubkey.from_bytes(data[:32]), int.from_bytes(data[64:72], "little")
        assert str(Pubkey.from_bytes(data[32:64])) == str(owner)
        assert int(rpc.get_token_account_balance(keyed.pubkey).amount) == amount
        assert [k.pubkey for k in rpc.get_token_accounts_by_owner(owner, mint=mint)] == [
            keyed.pubkey]
        largest = rpc.get_token_largest_accounts(mint)
        supply = int(rpc.get_token_supply(mint).amount)
        assert supply >= sum(int(a.amount.amount) for a in largest) >= amount
