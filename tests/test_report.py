"""The output file's entries built from real transactions (solders) in both wire forms:
which transactions are listed, their outcome, and token changes per owner and mint."""
from __future__ import annotations

import base64
from typing import Any, Dict, List, Optional

import pytest
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.token.state import TokenAccount, TokenAccountState
from solders.transaction import VersionedTransaction

import simsync
from simsync import runoutput
from simsync.cli import report
from simsync.localsim import SYSTEM_PROGRAM_ID, TOKEN_PROGRAM_ID

pytestmark = pytest.mark.timeout(30)

PAYER = Keypair.from_seed(bytes(range(32)))
OTHER = Pubkey.from_string("4TNBch7Tji5Dvw8iLdyXKXR4npaPQH6RUSv9xKRW2mz9")
MINT = Pubkey.from_string("EBtqNCa75LxJrqZvLuWTEYXURNEfNuXL1DrFB5B2YhPn")
ROUTER = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")


def signed(*instructions: Instruction) -> VersionedTransaction:
    message = MessageV0.try_compile(PAYER.pubkey(), list(instructions), [], Hash.default())
    return VersionedTransaction(message, [PAYER])


def event(tx: VersionedTransaction, meta: Optional[Dict[str, Any]], form: str = "base64",
          slot: int = 7) -> simsync.Transaction:
    """A notification as the server sends it: ``[base64, "base64"]`` or a json object."""
    if form == "base64":
        wire: Any = [base64.b64encode(bytes(tx)).decode(), "base64"]
    else:
        message = tx.message
        keys = [str(k) for k in message.account_keys]
        wire = {"signatures": [str(tx.signatures[0])],
                "message": {"accountKeys": keys, "instructions": [
                    {"programIdIndex": ix.program_id_index, "accounts": list(ix.accounts),
                     "data": ""} for ix in message.instructions]}}
    return simsync.Transaction(1, slot, wire, meta)


def ok_meta(**more: Any) -> Dict[str, Any]:
    return {"err": None, "preBalances": [100, 0, 1], "postBalances": [40, 55, 1],
            "logMessages": ["ok"], **more}


def sol_transfer() -> VersionedTransaction:
    return signed(transfer(TransferParams(from_pubkey=PAYER.pubkey(), to_pubkey=OTHER,
                                          lamports=55)))


def router_call() -> VersionedTransaction:
    """A top-level call of ROUTER that (per its meta) makes an inner System transfer."""
    return signed(Instruction(ROUTER, b"go", [AccountMeta(OTHER, False, True),
                                               AccountMeta(Pubkey.from_string(
                                                   SYSTEM_PROGRAM_ID), False, False)]))


@pytest.mark.parametrize("form", ["base64", "json"])
def test_only_transactions_that_invoked_the_program_are_entries(form: str) -> None:
    inner_system = {"innerInstructions": [{"index": 0, "instructions": [
        {"programIdIndex": 2, "accounts": [0, 1], "data": ""}]}]}
    router = router_call()
    keys = [str(k) for k in router.message.account_keys]
    assert keys[2] == SYSTEM_PROGRAM_ID      # the inner instruction's program index
    collector = runoutput.Collector(SYSTEM_PROGRAM_ID)
    collector.transaction(event(sol_transfer(), ok_meta(), form))          # top level
    collector.transaction(event(router, ok_meta(**inner_system), form))   # inner only
    collector.transaction(event(signed(Instruction(ROUTER, b"x", [])), ok_meta(),
                                form))                                    # no System at all
    collector.transaction(event(sol_transfer(), ok_meta(), form))         # a duplicate
    records = collector.records()
    assert [r["signature"] for r in records] == [str(sol_transfer().signatures[0]),
                                                 str(router.signatures[0])]
    assert collector.not_invoking == 1
    assert records[0]["sol_changes"] == {str(PAYER.pubkey()): -60, str(OTHER): 55}


def test_success_is_never_null_and_totals_add_up() -> None:
    collector = runoutput.Collector(SYSTEM_PROGRAM_ID)
    failed = {"err": {"InstructionError": [0, {"Custom": 1}]}, "preBalances": [],
              "postBalances": []}
    status_only = {"err": None, "status": {"Err": "AccountInUse"}}
    for index, meta in enumerate([ok_meta(), failed, status_only, None]):
        tx = signed(transfer(TransferParams(from_pubkey=PAYER.pubkey(), to_pubkey=OTHER,
                                            lamports=index + 1)))
        collector.transaction(event(tx, meta, slot=index))
    records = collector.records()
    assert [r["success"] for r in records] == [True, False, False, False]
    assert records[1]["error"] == {"InstructionError": [0, {"Custom": 1}]}
    assert records[2]["error"] == "AccountInUse"
    assert "no meta" in records[3]["error"]
    totals = runoutput.totals(records)
    assert totals == {"total": 4, "successes": 1, "failures": 3}


def test_diffs_join_their_transaction_in_either_order_and_others_are_left_out() -> None:
    tx = sol_transfer()
    signature = str(tx.signatures[0])
    collector = runoutput.Collector(SYSTEM_PROGRAM_ID)
    before = {"lamports": 100, "owner": SYSTEM_PROGRAM_ID, "data": ["", "base64"]}
    after = {**before, "lamports": 40}
    collector.diff(simsync.AccountDiff(2, 7, str(PAYER.pubkey()), signature, before, after))
    collector.diff(simsync.AccountDiff(2, 7, str(OTHER), "someone-else", before, after))
    collector.transaction(event(tx, ok_meta()))
    (record,) = collector.records()
    assert record["account_diffs"] == {str(PAYER.pubkey()): {"before": before, "after": after}}
    assert collector.unmatched_diffs == 1 and collector.diff_count == 2


def token_state(owner: Pubkey, amount: int) -> Dict[str, Any]:
    data = bytes(TokenAccount(MINT, owner, amount, None, TokenAccountState.Initialized, None,
                              0))
    return {"data": [base64.b64encode(data).decode(), "base64"], "executable": False,
            "lamports": 2_039_280, "owner": TOKEN_PROGRAM_ID, "rentEpoch": 0,
            "space": len(data)}


def test_token_changes_per_owner_and_mint_from_the_meta() -> None:
    alice, bob = str(PAYER.pubkey()), str(OTHER)

    def balance(index: int, owner: str, amount: int) -> Dict[str, Any]:
        return {"accountIndex": index, "mint": str(MINT), "owner": owner,
                "uiTokenAmount": {"amount": str(amount), "decimals": 6}}
    meta = ok_meta(preTokenBalances=[balance(1, alice, 500), balance(2, bob, 0)],
                   postTokenBalances=[balance(1, alice, 200), balance(2, bob, 300)])
    record = runoutput.transaction_record(3, "sig", ["", "base64"], meta)
    assert record["token_changes"] == {alice: {str(MINT): -300}, bob: {str(MINT): 300}}


def test_token_changes_fall_back_to_token_account_diffs() -> None:
    """The local simulator's meta has empty token balances: the diffs tell the change."""
    alice, bob = PAYER.pubkey(), OTHER
    tx = signed(Instruction(Pubkey.from_string(TOKEN_PROGRAM_ID), b"\x03",
                            [AccountMeta(alice, True, False)]))
    signature = str(tx.signatures[0])
    collector = runoutput.Collector(TOKEN_PROGRAM_ID)
    collector.transaction(event(tx, ok_meta(preTokenBalances=[], postTokenBalances=[])))
    for account, owner, pre, post in (("SrcAta", alice, 500, 200), ("DstAta", bob, 0, 300)):
        collector.diff(simsync.AccountDiff(2, 7, account, signature, token_state(owner, pre),
                                           token_state(owner, post)))
    not_token = {"data": [base64.b64encode(bytes(165)).decode(), "base64"],
                 "owner": SYSTEM_PROGRAM_ID, "lamports": 1}
    collector.diff(simsync.AccountDiff(2, 7, "Plain", signature, not_token,
                                       {**not_token, "lamports": 2}))
    (record,) = collector.records()
    assert record["token_changes"] == {str(alice): {str(MINT): -300},
                                       str(bob): {str(MINT): 300}}


def test_compare_reports_token_differences() -> None:
    def doc(tokens: List[int]) -> Dict[str, Any]:
        return {"transactions": [
            {"slot": 1, "signature": f"s{i}", "success": bool(t), "error": None,
             "sol_changes": {}, "token_changes": {"Owner": {"Mint": t}} if t else {}}
            for i, t in enumerate(tokens)]}
    lines = report.compare(doc([5, 7]), doc([5, 0]), "balances")
    assert "token balance differences (sum of token_changes): 1 accounts" in lines
    assert "  Owner  mint Mint  BASE +12  EXP +5  diff -7" in lines


def test_the_library_never_imports_the_command_line() -> None:
    """DESIGN.md's house: ``simsync.cli`` builds on the library, never the other way round.
    A fresh interpreter imports every library module (and reads the imports inside functions)."""
    import importlib.util
    import pkgutil
    import subprocess
    import sys
    from pathlib import Path

    modules = [m.name for m in pkgutil.walk_packages(simsync.__path__, "simsync.")
               if m.name.split(".")[1] not in ("cli", "localsim")
               and m.name != "simsync.__main__"]
    assert "simsync.sweep" in modules and "simsync.runoutput" in modules
    code = ("import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            "leaked = sorted(m for m in sys.modules if m.split('.')[:2] == ['simsync', 'cli'])\n"
            "print(leaked)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    # Imports inside functions (a sweep worker's) do not run on import: read them.
    import ast

    lazy = []
    for name in modules:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            lazy += [f"{name}: {n}" for n in names if n.split(".")[:2] == ["simsync", "cli"]]
    assert lazy == []


def test_token_changes_are_measured_from_filled_meta_or_diffs_only() -> None:
    tx = signed(Instruction(Pubkey.from_string(TOKEN_PROGRAM_ID), b"\x03",
                            [AccountMeta(PAYER.pubkey(), True, False)]))
    empty = ok_meta(preTokenBalances=[], postTokenBalances=[])
    unmeasured = runoutput.Collector(TOKEN_PROGRAM_ID)
    unmeasured.transaction(event(tx, empty))
    assert unmeasured.token_changes_measured is False
    assert runoutput.Collector(TOKEN_PROGRAM_ID, diffs_subscribed=True).token_changes_measured
    balance = {"accountIndex": 0, "mint": str(MINT), "owner": str(PAYER.pubkey()),
               "uiTokenAmount": {"amount": "5", "decimals": 6}}
    filled = runoutput.Collector(TOKEN_PROGRAM_ID)
    filled.transaction(event(tx, ok_meta(preTokenBalances=[balance], postTokenBalances=[])))
    assert filled.token_changes_measured is True
    doc = runoutput.document(unmeasured.records(), 1, 2, TOKEN_PROGRAM_ID, ["s"],
                             token_changes_measured=unmeasured.token_changes_measured)
    lines = report.compare(doc, doc)
    assert lines[-1].startswith("token balance differences: not measured (BASE and EXP")
