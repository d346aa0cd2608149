"""Agave's encodings on the per-session RPC: accounts in ``binary``/``base58``/``base64``/
``base64+zstd``/``jsonParsed`` (SPL Token accounts and mints parsed, anything else base64 as
Agave falls back), ``dataSlice``; getTransaction defaulting to ``json``, ``-32015`` for a v0
transaction without ``maxSupportedTransactionVersion``, and ``jsonParsed`` instructions of the
System, SPL Token and Memo programs in Agave's parsed shapes (solders parses them)."""
# ruff: noqa: F811  (tests take the imported ``session`` fixture as a parameter)
from __future__ import annotations

import base64
import json
import struct
from typing import Any, Dict

import base58
import pytest
import requests
import zstandard
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.rpc.responses import GetAccountInfoMaybeJsonParsedResp, GetTransactionResp
from solders.system_program import TransferParams, transfer
from solders.token.state import Mint, TokenAccount, TokenAccountState
from solders.transaction import Transaction, VersionedTransaction
from solders.transaction_status import ParsedInstruction

import simsync
from tests.localsim.test_runtime_checks import (
    SOL,
    funded_payer,
    latest,
    session,  # noqa: F401
    step,
)

pytestmark = pytest.mark.timeout(90)
TOKEN = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
MEMO = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
ATA = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xUWYTgbbDnmD5t5x")
SYSTEM = "11111111111111111111111111111111"


def call(session: simsync.Session, method: str, *params: Any) -> Dict[str, Any]:
    """The whole JSON-RPC answer (result or error) of one raw call."""
    with requests.Session() as http:
        resp = http.post(session.rpc.url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                                "params": list(params)},
                         headers={"Connection": "close"}, timeout=30)
    answer: Dict[str, Any] = resp.json()
    return answer


def token_setup(session: simsync.Session) -> Dict[str, Any]:
    owner = funded_payer(session)
    mint, account = Keypair().pubkey(), Keypair().pubkey()
    held = TokenAccount(mint, owner.pubkey(), 1_234_500, None, TokenAccountState.Initialized,
                        None, 0)
    session.rpc.modify_accounts({
        mint: simsync.AccountData.of(bytes(Mint(owner.pubkey(), 9_000_000, 4, True)),
                                     str(TOKEN), 1_461_600),
        account: simsync.AccountData.of(bytes(held), str(TOKEN), 2_039_280)})
    return {"owner": owner, "mint": mint, "account": account, "data": bytes(held)}


def test_account_encodings_as_agave(session: simsync.Session) -> None:
    t = token_setup(session)
    key, data = str(t["account"]), t["data"]
    b64 = call(session, "getAccountInfo", key, {"encoding": "base64"})["result"]["value"]
    assert b64["data"] == [base64.b64encode(data).decode(), "base64"] and b64["space"] == 165
    zstd = call(session, "getAccountInfo", key, {"encoding": "base64+zstd"})["result"]["value"]
    packed, name = zstd["data"]
    assert name == "base64+zstd"
    assert zstandard.ZstdDecompressor().decompress(base64.b64decode(packed)) == data
    sliced = call(session, "getAccountInfo", key, {"encoding": "base58",
                                                    "dataSlice": {"offset": 32, "length": 32}})
    assert sliced["result"]["value"]["data"] == [str(t["owner"].pubkey()), "base58"]
    binary = call(session, "getAccountInfo", str(t["owner"].pubkey()))["result"]["value"]
    assert binary["data"] == ""   # the default is Agave's legacy "binary": a bare base58 string
    too_big = call(session, "getAccountInfo", key, {"encoding": "base58"})
    assert too_big["error"]["code"] == -32600
    parsed = call(session, "getAccountInfo", key, {"encoding": "jsonParsed"})
    value = GetAccountInfoMaybeJsonParsedResp.from_json(json.dumps(parsed)).value
    assert value is not None and value.data.program == "spl-token"
    info = value.data.parsed["info"]
    assert value.data.parsed["type"] == "account"
    assert info == {"isNative": False, "mint": str(t["mint"]), "owner": str(t["owner"].pubkey()),
                    "state": "initialized", "tokenAmount": {
                        "amount": "1234500", "decimals": 4, "uiAmount": 123.45,
                        "uiAmountString": "123.45"}}
    mint = call(session, "getAccountInfo", str(t["mint"]), {"encoding": "jsonParsed"})
    assert mint["result"]["value"]["data"]["parsed"] == {"type": "mint", "info": {
        "decimals": 4, "freezeAuthority": None, "isInitialized": True,
        "mintAuthority": str(t["owner"].pubkey()), "supply": "9000000"}}
    memo = call(session, "getAccountInfo", str(MEMO), {"encoding": "jsonParsed"})
    assert memo["result"]["value"]["data"][1] == "base64"   # unparseable: base64, as Agave
    many = call(session, "getMultipleAccounts", [key, str(t["mint"])],
                {"encoding": "jsonParsed"})["result"]["value"]
    assert [m["data"]["parsed"]["type"] for m in many] == ["account", "mint"]
    programs = call(session, "getProgramAccounts", str(TOKEN), {
        "encoding": "jsonParsed", "filters": [{"memcmp": {"offset": 0,
                                                          "bytes": str(t["mint"])}}]})
    assert [(p["pubkey"], p["account"]["data"]["parsed"]["type"])
            for p in programs["result"]] == [(key, "account")]
    error = call(session, "getAccountInfo", key, {"encoding": "jsonParsed",
                                                   "dataSlice": {"offset": 0, "length": 8}})
    assert error["error"]["code"] == -32602


def test_a_system_nonce_account_in_json_parsed(session: simsync.Session) -> None:
    authority, nonce, durable = Keypair().pubkey(), Keypair().pubkey(), Keypair().pubkey()
    data = struct.pack("<II", 1, 1) + bytes(authority) + bytes(durable) + struct.pack("<Q", 5000)
    session.rpc.modify_accounts({nonce: simsync.AccountData.of(data, SYSTEM, 1_447_680)})
    value = call(session, "getAccountInfo", str(nonce), {"encoding": "jsonParsed"})
    assert value["result"]["value"]["data"] == {"program": "nonce", "space": 80, "parsed": {
        "type": "initialized", "info": {"authority": str(authority), "blockhash": str(durable),
                                        "feeCalculator": {"lamportsPerSignature": "5000"}}}}


def test_get_transaction_defaults_to_json_and_refuses_v0_without_max_version(
        session: simsync.Session) -> None:
    payer = funded_payer(session)
    blockhash = latest(session)[0]
    ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=Keypair().pubkey(),
                                 lamports=SOL))
    legacy = Transaction([payer], Message([ix], payer.pubkey()), blockhash)
    v0 = VersionedTransaction(MessageV0.try_compile(payer.pubkey(), [ix], [], blockhash),
                              [payer])
    step(session, transactions=[VersionedTransaction.from_legacy(legacy), v0])
    answer = call(session, "getTransaction", str(legacy.signatures[0]))["result"]
    assert isinstance(answer["transaction"], dict)   # json, not [base64, "base64"]
    assert answer["transaction"]["message"]["accountKeys"][0] == str(payer.pubkey())
    assert "version" not in answer   # no maxSupportedTransactionVersion: no version field
    error = call(session, "getTransaction", str(v0.signatures[0]))["error"]
    assert error["code"] == -32015 and "Transaction version (0) is not supported" in \
        error["message"]
    ok = call(session, "getTransaction", str(v0.signatures[0]),
              {"maxSupportedTransactionVersion": 0})["result"]
    assert ok["version"] == 0
    legacy_with = call(session, "getTransaction", str(legacy.signatures[0]),
                       {"maxSupportedTransactionVersion": 0})["result"]
    assert legacy_with["version"] == "legacy"
    bogus = call(session, "getTransaction", str(v0.signatures[0]), {"encoding": "hex"})
    assert bogus["error"]["code"] == -32602


def test_json_parsed_instructions_of_system_token_and_memo(session: simsync.Session) -> None:
    t = token_setup(session)
    owner, dest = t["owner"], Keypair().pubkey()
    other = Keypair().pubkey()
    session.rpc.modify_accounts({other: simsync.AccountData.of(bytes(TokenAccount(
        t["mint"], dest, 0, None, TokenAccountState.Initialized, None, 0)), str(TOKEN),
        2_039_280)})
    ixs = [transfer(TransferParams(from_pubkey=owner.pubkey(), to_pubkey=dest, lamports=SOL)),
           Instruction(TOKEN, bytes([3]) + struct.pack("<Q", 500), [
               AccountMeta(t["account"], False, True), AccountMeta(other, False, True),
               AccountMeta(owner.pubkey(), True, False)]),
           Instruction(TOKEN, bytes([12]) + struct.pack("<QB", 25_000, 4), [
               AccountMeta(t["account"], False, True), AccountMeta(t["mint"], False, False),
               AccountMeta(other, False, True), AccountMeta(owner.pubkey(), True, False)]),
           Instruction(MEMO, b"gm from simsync", [])]
    tx = VersionedTransaction(MessageV0.try_compile(owner.pubkey(), ixs, [],
                                                    latest(session)[0]), [owner])
    step(session, transactions=[tx])
    answer = call(session, "getTransaction", str(tx.signatures[0]),
                  {"encoding": "jsonParsed", "maxSupportedTransactionVersion": 0})
    resp = GetTransactionResp.from_json(json.dumps(answer)).value
    assert resp is not None and resp.transaction.meta.err is None
    parsed = resp.transaction.transaction.message.instructions
    assert all(isinstance(ix, ParsedInstruction) for ix in parsed)
    got = [(ix.program, ix.parsed) for ix in parsed]   # type: ignore[union-attr]
    assert got == [
        ("system", {"type": "transfer", "info": {"source": str(owner.pubkey()),
                                                 "destination": str(dest), "lamports": SOL}}),
        ("spl-token", {"type": "transfer", "info": {
            "source": str(t["account"]), "destination": str(other),
            "authority": str(owner.pubkey()), "amount": "500"}}),
        ("spl-token", {"type": "transferChecked", "info": {
            "source": str(t["account"]), "mint": str(t["mint"]), "destination": str(other),
            "authority": str(owner.pubkey()), "tokenAmount": {
                "amount": "25000", "decimals": 4, "uiAmount": 2.5, "uiAmountString": "2.5"}}}),
        ("spl-memo", "gm from simsync")]
    keys = answer["result"]["transaction"]["message"]["accountKeys"]
    assert keys[0] == {"pubkey": str(owner.pubkey()), "writable": True, "signer": True,
                       "source": "transaction"}
    assert "loadedAddresses" not in answer["result"]["meta"]


def test_json_parsed_falls_back_to_raw_for_unknown_programs(session: simsync.Session) -> None:
    payer = funded_payer(session)
    ix = Instruction(MEMO, bytes([0xFF, 0xFE]), [])   # not UTF-8: neither parses nor runs
    tx = VersionedTransaction(MessageV0.try_compile(payer.pubkey(), [ix], [],
                                                    latest(session)[0]), [payer])
    step(session, transactions=[tx])
    answer = call(session, "getTransaction", str(tx.signatures[0]),
                  {"encoding": "jsonParsed", "maxSupportedTransactionVersion": 0})["result"]
    [raw] = answer["transaction"]["message"]["instructions"]
    assert raw["programId"] == str(MEMO) and raw["data"] == base58.b58encode(b"\xff\xfe").decode()
    assert "parsed" not in raw


def test_associated_token_instructions_parse_even_when_they_fail(
        session: simsync.Session) -> None:
    """LiteSVM here has no Associated Token Account program, so the instruction fails
    (InvalidProgramForExecution, fee paid), but the recorded transaction still shows it
    parsed, as Agave shows a failed transaction's instructions."""
    payer, wallet, mint, ata = (funded_payer(session), Keypair().pubkey(),
                                Keypair().pubkey(), Keypair().pubkey())
    ix = Instruction(ATA, bytes([1]), [
        AccountMeta(payer.pubkey(), True, True), AccountMeta(ata, False, True),
        AccountMeta(wallet, False, False), AccountMeta(mint, False, False),
        AccountMeta(Pubkey.from_string(SYSTEM), False, False), AccountMeta(TOKEN, False, False)])
    tx = VersionedTransaction(MessageV0.try_compile(payer.pubkey(), [ix], [],
                                                    latest(session)[0]), [payer])
    step(session, transactions=[tx])
    answer = call(session, "getTransaction", str(tx.signatures[0]),
                  {"encoding": "jsonParsed", "maxSupportedTransactionVersion": 0})["result"]
    assert answer["meta"]["err"] is not None and answer["meta"]["fee"] == 5000
    [parsed] = answer["transaction"]["message"]["instructions"]
    assert parsed == {"program": "spl-associated-token-account", "programId": str(ATA),
                      "stackHeight": None, "parsed": {"type": "createIdempotent", "info": {
                          "source": str(payer.pubkey()), "account": str(ata),
                          "wallet": str(wallet), "mint": str(mint), "systemProgram": SYSTEM,
                          "tokenProgram": str(TOKEN)}}}
