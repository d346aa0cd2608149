"""Account overrides are checked where they are given: every accepted shape gives the same
wire ``AccountData``, and every bad one a ``SimsyncError`` (also ``ValueError`` or
``TypeError``) naming the field. A live step shows the accepted minimal shape really works
and a refused one leaves the session usable."""
from __future__ import annotations

import base64
from typing import Any, Dict

import pytest
from solders.account import Account
from solders.keypair import Keypair
from solders.pubkey import Pubkey

import simsync
from simsync.localsim import LocalSimulator
from simsync.overrides import account_overrides
from tests.support import FAST, START

pytestmark = pytest.mark.timeout(60)

KEY = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"
OWNER = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
SYSTEM = "11111111111111111111111111111111"
DATA = b"\x01\x02\x03"
B64 = base64.b64encode(DATA).decode()
WIRE = {"data": {"data": B64, "encoding": "base64"}, "executable": False, "lamports": 7,
        "owner": OWNER, "space": 3}


@pytest.mark.parametrize("value", [
    simsync.AccountData.of(DATA, OWNER, 7),
    WIRE,                                                          # the wire dict
    {"data": [B64, "base64"], "executable": False, "lamports": 7,  # UiAccount, as in
     "owner": OWNER, "rentEpoch": 18446744073709551615, "space": 3},   # output files
    {"lamports": 7, "owner": OWNER, "data": DATA},                 # minimal, bytes
    {"lamports": 7, "owner": Pubkey.from_string(OWNER), "data": {"data": B64}},
    Account(7, DATA, Pubkey.from_string(OWNER), False, 0),         # a solders Account
], ids=["AccountData", "wire", "UiAccount", "minimal", "minimal-pubkey", "solders"])
def test_every_shape_gives_the_same_wire_account(value: Any) -> None:
    (key, account), = account_overrides({Pubkey.from_string(KEY): value}).items()
    assert key == KEY and account.wire() == WIRE


def test_a_wallet_needs_only_lamports() -> None:
    account = account_overrides({KEY: {"lamports": 10**9}})[KEY]
    assert account.wire() == {"data": {"data": "", "encoding": "base64"}, "executable": False,
                              "lamports": 10**9, "owner": SYSTEM, "space": 0}


def bad(value: Any, key: Any = KEY) -> Dict[Any, Any]:
    return {key: value}


@pytest.mark.parametrize(("accounts", "kind", "message"), [
    ([(KEY, WIRE)], TypeError, "modify_account_states: expected a mapping"),
    (bad(WIRE, "not-a-key"), ValueError, "modify_account_states key 'not-a-key': not a base58"),
    (bad(WIRE, 5), TypeError, "modify_account_states key 5: expected a base58 public key"),
    (bad({"owner": OWNER, "data": DATA}), ValueError,
     "modify_account_states['9xQeWvG8…'].lamports: missing"),
    (bad({"lamports": 1, "data": DATA}), ValueError, "['9xQeWvG8…'].owner: missing"),
    (bad({"lamports": 1, "owner": OWNER, "data": {"encoding": "base64"}}), ValueError,
     "['9xQeWvG8…'].data.data: missing"),
    (bad({**WIRE, "data": B64}), TypeError, "['9xQeWvG8…'].data: a bare string is ambiguous"),
    (bad({**WIRE, "data": ["%%%", "base64"]}), ValueError, ".data: not valid base64"),
    (bad({**WIRE, "data": [B64, "zstd"]}), ValueError, ".data.encoding: 'zstd' is not one"),
    (bad({**WIRE, "lamports": "7"}), TypeError, ".lamports: expected an int, got str"),
    (bad({**WIRE, "lamports": -1}), ValueError, ".lamports: must be between 0"),
    (bad({**WIRE, "executable": "no"}), TypeError, ".executable: expected True or False"),
    (bad({**WIRE, "space": 10}), ValueError, ".space: 10 differs from the data's length 3"),
    (bad({**WIRE, "lamport": 7}), ValueError, ".lamport: unknown field"),
    (bad({**WIRE, "owner": "x"}), ValueError, ".owner: not a base58 public key"),
    (bad([1, 2]), TypeError, "['9xQeWvG8…']: expected AccountData or a dict"),
])
def test_bad_overrides_name_the_field(accounts: Any, kind: type, message: str) -> None:
    with pytest.raises(simsync.AccountOverrideError) as caught:
        account_overrides(accounts)
    assert isinstance(caught.value, simsync.SimsyncError) and isinstance(caught.value, kind)
    assert message in str(caught.value)


def test_a_live_step_checks_overrides_where_they_are_given() -> None:
    wallet = str(Keypair.from_seed(bytes(32)).pubkey())
    with LocalSimulator(bundle_size=20, bundles=1) as sim, \
            simsync.Client(sim.url, config=FAST).start_session(
                start_slot=START, end_slot=START + 3) as session:
        event = session.next_event(30)
        while not isinstance(event, simsync.ReadyForContinue):
            event = session.next_event(30)
        with pytest.raises(simsync.AccountOverrideError, match=r"\.lamports: missing"):
            session.send_continue(modify_account_states={wallet: {"owner": SYSTEM}})
        # refused before sending: the session still waits for a step, and takes this one
        events = session.continue_until_ready(
            modify_account_states={wallet: {"lamports": 123_456_789}}, timeout=30)
        assert isinstance(events[-1], (simsync.ReadyForContinue, simsync.Completed))
        assert session.rpc.get_balance(wallet) == 123_456_789
