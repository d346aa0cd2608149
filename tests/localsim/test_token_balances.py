"""Token balances and loaded addresses in a transaction's meta, as Agave fills them:
``preTokenBalances``/``postTokenBalances`` list every SPL Token account among the
transaction's accounts (``accountIndex, mint, owner, programId, uiTokenAmount``) before and
after, a token account the transaction creates only after; ``loadedAddresses`` holds the
lookup-table keys of a v0 transaction. Checked in the transaction notification (through
simsync), getTransaction and getBlock (through solders' parsers), and the token methods
(getTokenAccountBalance, getTokenAccountsByOwner, getTokenSupply, getTokenLargestAccounts)
through solana-py's client."""
# ruff: noqa: F811  (tests take the imported ``session`` fixture as a parameter)
from __future__ import annotations

import asyncio
import json
import struct
import time
from decimal import Decimal
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st
from solana.rpc.async_api import AsyncClient
from solana.rpc.models import TokenAccountOpts
from solders.address_lookup_table_account import AddressLookupTable, AddressLookupTableAccount
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.rpc.responses import GetBlockResp, GetTransactionResp
from solders.system_program import (
    CreateAccountParams,
    TransferParams,
    create_account,
    transfer,
)
from solders.token.associated import get_associated_token_address
from solders.token.state import Mint, TokenAccount, TokenAccountState
from solders.transaction import VersionedTransaction

import simsync
from simsync.localsim.parsed import ui_token_amount
from tests.localsim.test_runtime_checks import (
    SOL,
    funded_payer,
    latest,
    session,  # noqa: F401
    step,
)

pytestmark = pytest.mark.timeout(90)
TOKEN = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
SYSTEM = "11111111111111111111111111111111"
LOOKUP_TABLE_PROGRAM = "AddressLookupTab1e1111111111111111111111111"
DECIMALS = 6


def amount(raw: int) -> Dict[str, Any]:
    """Agave's UiTokenAmount for ``raw`` base units of a 6-decimals mint."""
    text = f"{raw / 10**DECIMALS:.6f}".rstrip("0").rstrip(".")
    return {"amount": str(raw), "decimals": DECIMALS, "uiAmount": raw / 10**DECIMALS,
            "uiAmountString": text}


@pytest.fixture
def minted(session: simsync.Session) -> Iterator[Tuple[simsync.Session, Keypair, Pubkey, Pubkey]]:
    """A new 6-decimals mint, a payer holding 5 tokens in its associated token account."""
    payer = funded_payer(session)
    mint = Keypair().pubkey()
    source = get_associated_token_address(payer.pubkey(), mint)
    held = TokenAccount(mint, payer.pubkey(), 5_000_000, None, TokenAccountState.Initialized,
                        None, 0)
    session.rpc.modify_accounts({
        mint: simsync.AccountData.of(bytes(Mint(payer.pubkey(), 5_000_000, DECIMALS, True)),
                                     str(TOKEN), 1_461_600),
        source: simsync.AccountData.of(bytes(held), str(TOKEN), 2_039_280)})
    yield session, payer, mint, source


def shown(session: simsync.Session, events: List[simsync.Event],
          tx: VersionedTransaction) -> simsync.Transaction:
    """The one ``Transaction`` event of ``tx``, among ``events`` or the next ones (30 s)."""
    signature = str(tx.signatures[0])
    seen = [e for e in events if isinstance(e, simsync.Transaction) and e.signature == signature]
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:
        event = session.next_event(max(0.1, deadline - time.monotonic()))
        if isinstance(event, simsync.Transaction) and event.signature == signature:
            seen.append(event)
    assert len(seen) == 1, events
    return seen[0]


def create_and_transfer(payer: Keypair, account: Keypair, mint: Pubkey, source: Pubkey,
                        wallet: Pubkey, raw: int) -> List[Instruction]:
    """Create ``account`` as the wallet's token account of ``mint`` (System CreateAccount,
    Token InitializeAccount3), then TransferChecked ``raw`` to it from ``source``."""
    create = create_account(CreateAccountParams(
        from_pubkey=payer.pubkey(), to_pubkey=account.pubkey(), lamports=2_039_280,
        space=165, owner=TOKEN))
    init = Instruction(TOKEN, bytes([18]) + bytes(wallet), [
        AccountMeta(account.pubkey(), False, True), AccountMeta(mint, False, False)])
    send = Instruction(TOKEN, bytes([12]) + struct.pack("<QB", raw, DECIMALS), [
        AccountMeta(source, False, True), AccountMeta(mint, False, False),
        AccountMeta(account.pubkey(), False, True), AccountMeta(payer.pubkey(), True, False)])
    return [create, init, send]


def test_token_balances_of_a_new_token_account_in_every_view(
        minted: Tuple[simsync.Session, Keypair, Pubkey, Pubkey]) -> None:
    session, payer, mint, source = minted
    wallet, account = Keypair().pubkey(), Keypair()
    dest = account.pubkey()
    tx = VersionedTransaction(MessageV0.try_compile(
        payer.pubkey(), create_and_transfer(payer, account, mint, source, wallet, 1_500_000),
        [], latest(session)[0]), [payer, account])
    session.subscribe_transactions(account_keys=[payer.pubkey()])
    event = shown(session, step(session, transactions=[tx]), tx)
    assert event.err is None
    keys = [str(k) for k in tx.message.account_keys]
    src, dst = keys.index(str(source)), keys.index(str(dest))
    want_pre = [{"accountIndex": src, "mint": str(mint), "owner": str(payer.pubkey()),
                 "programId": str(TOKEN), "uiTokenAmount": amount(5_000_000)}]
    want_post = sorted([
        {"accountIndex": src, "mint": str(mint), "owner": str(payer.pubkey()),
         "programId": str(TOKEN), "uiTokenAmount": amount(3_500_000)},
        {"accountIndex": dst, "mint": str(mint), "owner": str(wallet),
         "programId": str(TOKEN), "uiTokenAmount": amount(1_500_000)}],
        key=lambda b: int(str(b["accountIndex"])))
    meta = event.meta or {}
    assert meta["preTokenBalances"] == want_pre
    assert meta["postTokenBalances"] == want_post
    answer = session.rpc.call("getTransaction", [str(tx.signatures[0]), {
        "encoding": "json", "maxSupportedTransactionVersion": 0}])
    assert answer["meta"]["preTokenBalances"] == want_pre
    assert answer["meta"]["postTokenBalances"] == want_post
    parsed = GetTransactionResp.from_json(json.dumps({"jsonrpc": "2.0", "id": 1,
                                                      "result": answer})).value
    assert parsed is not None
    balances = parsed.transaction.meta.post_token_balances
    assert [(b.account_index, b.ui_token_amount.ui_amount_string) for b in balances] == [
        (b["accountIndex"], b["uiTokenAmount"]["uiAmountString"]) for b in want_post]
    step(session)   # the block is finished: getBlock has it, with the same balances
    block = session.rpc.call("getBlock", [event.slot, {"maxSupportedTransactionVersion": 0}])
    GetBlockResp.from_json(json.dumps({"jsonrpc": "2.0", "id": 1, "result": block}))
    mine = [t for t in block["transactions"]
            if t["transaction"]["signatures"][0] == str(tx.signatures[0])]
    assert [t["meta"]["postTokenBalances"] for t in mine] == [want_post]


def test_token_methods_through_solana_py(
        minted: Tuple[simsync.Session, Keypair, Pubkey, Pubkey]) -> None:
    session, payer, mint, source = minted
    wallet, account = Keypair().pubkey(), Keypair()
    tx = VersionedTransaction(MessageV0.try_compile(
        payer.pubkey(), create_and_transfer(payer, account, mint, source, wallet, 250_000), [],
        latest(session)[0]), [payer, account])
    step(session, transactions=[tx])
    dest = account.pubkey()

    async def use(client: AsyncClient) -> Dict[str, Any]:
        return {
            "balance": (await client.get_token_account_balance(dest)).value,
            "supply": (await client.get_token_supply(mint)).value,
            "largest": (await client.get_token_largest_accounts(mint)).value,
            "owned": (await client.get_token_accounts_by_owner_json_parsed(
                wallet, TokenAccountOpts(mint=mint))).value,
            "by_program": (await client.get_token_accounts_by_owner(
                payer.pubkey(), TokenAccountOpts(program_id=TOKEN))).value}

    async def main() -> Dict[str, Any]:
        async with AsyncClient(session.rpc.url, timeout=30, http2=False) as client:
            return await use(client)

    got = asyncio.run(main())
    assert (got["balance"].amount, got["balance"].ui_amount_string) == ("250000", "0.25")
    assert got["balance"].decimals == DECIMALS
    assert got["supply"].amount == "5000000" and got["supply"].ui_amount_string == "5"
    assert [(str(a.address), a.amount.amount) for a in got["largest"]] == [
        (str(source), "4750000"), (str(dest), "250000")]
    [owned] = got["owned"]
    info = owned.account.data.parsed["info"]
    assert str(owned.pubkey) == str(dest) and owned.account.data.program == "spl-token"
    assert info["owner"] == str(wallet) and info["tokenAmount"] == amount(250_000)
    assert [str(a.pubkey) for a in got["by_program"]] == [str(source)]
    with pytest.raises(simsync.RpcError) as info:
        session.rpc.call("getTokenAccountBalance", [str(payer.pubkey())])
    assert info.value.code == -32602 and "Invalid param: not a Token account" in str(info.value)


def lookup_table(authority: Pubkey, addresses: List[Pubkey]) -> bytes:
    """An active address lookup table account's data (its on-chain layout)."""
    meta = struct.pack("<IQQB", 1, 2**64 - 1, 0, 0) + b"\x01" + bytes(authority) + b"\0\0"
    data = meta + b"".join(bytes(a) for a in addresses)
    table = AddressLookupTable.deserialize(data)
    assert [str(a) for a in table.addresses] == [str(a) for a in addresses]
    return data


def test_loaded_addresses_of_a_v0_transaction_with_a_lookup_table(
        session: simsync.Session) -> None:
    payer = funded_payer(session)
    writable, readonly = Keypair().pubkey(), Keypair().pubkey()
    table_key = Keypair().pubkey()
    session.rpc.modify_accounts({
        table_key: simsync.AccountData.of(lookup_table(payer.pubkey(), [writable, readonly]),
                                          LOOKUP_TABLE_PROGRAM, 10**7),
        readonly: simsync.AccountData.of(b"", SYSTEM, SOL)})
    step(session)   # the table's addresses are usable from the next slot on
    ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=writable, lamports=SOL))
    ix = Instruction(ix.program_id, bytes(ix.data), list(ix.accounts) + [
        AccountMeta(readonly, False, False)])
    message = MessageV0.try_compile(payer.pubkey(), [ix], [
        AddressLookupTableAccount(table_key, [writable, readonly])], latest(session)[0])
    assert len(message.address_table_lookups) == 1
    tx = VersionedTransaction(message, [payer])
    session.subscribe_transactions(account_keys=[payer.pubkey()])
    event = shown(session, step(session, transactions=[tx]), tx)
    assert event.err is None
    want = {"writable": [str(writable)], "readonly": [str(readonly)]}
    assert (event.meta or {})["loadedAddresses"] == want
    answer = session.rpc.call("getTransaction", [str(tx.signatures[0]), {
        "encoding": "json", "maxSupportedTransactionVersion": 0}])
    assert answer["meta"]["loadedAddresses"] == want
    assert session.rpc.get_balance(writable) == SOL
    parsed = session.rpc.call("getTransaction", [str(tx.signatures[0]), {
        "encoding": "jsonParsed", "maxSupportedTransactionVersion": 0}])
    keys = parsed["transaction"]["message"]["accountKeys"]
    assert [(k["pubkey"], k["writable"], k["source"]) for k in keys[-2:]] == [
        (str(writable), True, "lookupTable"), (str(readonly), False, "lookupTable")]


@given(st.integers(min_value=0, max_value=2**64 - 1), st.integers(min_value=0, max_value=18))
def test_ui_token_amount_is_agaves_trimmed_decimal(raw: int, decimals: int) -> None:
    """``uiAmountString`` is the exact decimal with trailing zeros (and a bare point) trimmed,
    ``uiAmount`` the f64 quotient, as Agave's ``token_amount_to_ui_amount``."""
    got = ui_token_amount(raw, decimals)
    exact = Decimal(raw).scaleb(-decimals)
    text = f"{exact:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    assert got == {"amount": str(raw), "decimals": decimals, "uiAmount": raw / 10**decimals,
                   "uiAmountString": text}
