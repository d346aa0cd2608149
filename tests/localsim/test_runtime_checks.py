"""The runtime's admission checks and clock, as Agave has them, reached the way users reach
the simulator: through simsync (steps, ``session.rpc``) with transactions built and signed by
solders. Agave's behaviour is the reference: a signature is processed once
(``AlreadyProcessed``; over RPC -32002 "This transaction has already been processed"),
signatures are verified (``SignatureFailure``; -32003), a blockhash older than 150 blocks or
unknown is refused (``BlockhashNotFound``), and the Clock sysvar carries the block's time and
mainnet's epoch."""
from __future__ import annotations

import struct
from typing import Iterator, List, Optional, Tuple

import pytest
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

import simsync
from simsync.localsim import LocalSimulator
from tests.support import FAST, START

pytestmark = pytest.mark.timeout(60)
SOL = 1_000_000_000
CLOCK_SYSVAR = "SysvarC1ock11111111111111111111111111111111"


@pytest.fixture
def session() -> Iterator[simsync.Session]:
    with LocalSimulator() as sim, simsync.Client(sim.url, config=FAST).start_session(
            start_slot=START, end_slot=START + 400) as session:
        pause(session)
        yield session


def pause(session: simsync.Session) -> List[simsync.Event]:
    seen: List[simsync.Event] = []
    while not isinstance(seen[-1] if seen else None, simsync.ReadyForContinue):
        seen.append(session.next_event(30))
    return seen


def step(session: simsync.Session, **kwargs: object) -> List[simsync.Event]:
    session.send_continue(timeout=30, **kwargs)  # type: ignore[arg-type]
    return pause(session)


def funded_payer(session: simsync.Session) -> Keypair:
    payer = Keypair()
    session.rpc.modify_accounts({payer.pubkey(): simsync.AccountData.of(
        b"", "11111111111111111111111111111111", 10 * SOL)})
    return payer


def transfer_tx(payer: Keypair, dest: Pubkey, blockhash: Hash, lamports: int = SOL,
                signer: Optional[Keypair] = None) -> VersionedTransaction:
    """A transfer from ``payer``, signed by ``payer`` or, forged, by ``signer``."""
    ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=dest, lamports=lamports))
    message = MessageV0.try_compile(payer.pubkey(), [ix], [], blockhash)
    if signer is None:
        return VersionedTransaction(message, [payer])
    return VersionedTransaction.populate(message, [signer.sign_message(
        to_bytes_versioned(message))])


def latest(session: simsync.Session) -> Tuple[Hash, int]:
    value = session.rpc.get_latest_blockhash()
    return value.blockhash, value.last_valid_block_height


def errors(events: List[simsync.Event]) -> List[str]:
    return [repr(e) for e in events if isinstance(e, simsync.ServerError)]


def test_the_same_transaction_three_times_in_one_step_runs_once(session: simsync.Session
                                                                ) -> None:
    payer, dest = funded_payer(session), Keypair().pubkey()
    tx = transfer_tx(payer, dest, latest(session)[0])
    events = step(session, transactions=[tx, tx, tx])
    assert session.rpc.get_balance(dest) == SOL
    assert session.rpc.get_balance(payer.pubkey()) == 9 * SOL - 5000   # one fee
    refused = errors(events)
    assert len(refused) == 2 and all("AlreadyProcessed" in e for e in refused)


def test_the_same_bytes_in_consecutive_steps_run_once(session: simsync.Session) -> None:
    payer, dest = funded_payer(session), Keypair().pubkey()
    tx = transfer_tx(payer, dest, latest(session)[0])
    outcomes = [errors(step(session, transactions=[tx])) for _ in range(3)]
    assert outcomes[0] == [] and all("AlreadyProcessed" in e[0] for e in outcomes[1:])
    assert session.rpc.get_balance(dest) == SOL


def test_send_transaction_three_times_runs_once(session: simsync.Session) -> None:
    payer, dest = funded_payer(session), Keypair().pubkey()
    tx = transfer_tx(payer, dest, latest(session)[0])
    assert session.rpc.send_transaction(tx) == tx.signatures[0]
    for _ in range(2):
        with pytest.raises(simsync.RpcError) as info:
            session.rpc.send_transaction(tx)
        assert info.value.code == -32002
        assert "This transaction has already been processed" in str(info.value)
    assert session.rpc.get_balance(dest) == SOL


def test_a_transfer_signed_by_another_key_is_refused(session: simsync.Session) -> None:
    victim, thief = funded_payer(session), Keypair()
    forged = transfer_tx(victim, thief.pubkey(), latest(session)[0], lamports=5 * SOL,
                         signer=thief)
    events = step(session, transactions=[forged])
    assert any("SignatureFailure" in e for e in errors(events))
    assert session.rpc.get_balance(victim.pubkey()) == 10 * SOL   # no fee either
    assert session.rpc.get_balance(thief.pubkey()) == 0


def test_send_and_simulate_verify_signatures_as_agave(session: simsync.Session) -> None:
    payer, dest = funded_payer(session), Keypair().pubkey()
    blockhash = latest(session)[0]
    message = MessageV0.try_compile(payer.pubkey(), [transfer(TransferParams(
        from_pubkey=payer.pubkey(), to_pubkey=dest, lamports=SOL))], [], blockhash)
    zero = VersionedTransaction.populate(message, [Signature.default()])
    with pytest.raises(simsync.RpcError) as info:
        session.rpc.send_transaction(zero)
    assert info.value.code == -32003
    with pytest.raises(simsync.RpcError) as info:
        session.rpc.simulate_transaction(zero, sigVerify=True)
    assert info.value.code == -32003
    assert session.rpc.simulate_transaction(zero).err is None   # sigVerify off: runs
    assert session.rpc.get_balance(dest) == 0


def test_unknown_and_expired_blockhashes_are_refused_without_a_fee(session: simsync.Session
                                                                   ) -> None:
    payer = funded_payer(session)
    old, _ = latest(session)
    assert session.rpc.call("isBlockhashValid", [str(old)])["value"] is True
    unknown = transfer_tx(payer, Keypair().pubkey(), Hash.new_unique())
    assert any("BlockhashNotFound" in e for e in errors(step(session, transactions=[unknown])))
    with pytest.raises(simsync.RpcError) as info:
        session.rpc.send_transaction(transfer_tx(payer, Keypair().pubkey(), Hash.new_unique()))
    assert info.value.code == -32002 and "Blockhash not found" in str(info.value)
    recent = transfer_tx(payer, Keypair().pubkey(), old)          # 1 block old: fine
    assert errors(step(session, transactions=[recent])) == []
    step(session, advance_count=200)                              # 200 blocks later
    assert session.rpc.call("isBlockhashValid", [str(old)])["value"] is False
    stale = transfer_tx(payer, Keypair().pubkey(), old, lamports=2 * SOL)
    assert any("BlockhashNotFound" in e for e in errors(step(session, transactions=[stale])))
    assert session.rpc.get_balance(payer.pubkey()) == 9 * SOL - 5000   # one transfer, one fee


def test_block_height_is_its_own_scale_and_bounds_the_blockhash(session: simsync.Session
                                                                ) -> None:
    first_height = session.rpc.call("getBlockHeight")
    slot = session.rpc.get_slot()
    assert first_height < slot
    _, last_valid = latest(session)
    assert last_valid == first_height + 150
    step(session, advance_count=10)
    later_slot = session.rpc.get_slot()
    assert session.rpc.call("getBlockHeight") == first_height + 10   # one per produced block
    assert later_slot - slot >= 10                                    # skipped slots add none


def test_the_clock_sysvar_has_the_block_time_and_mainnet_epoch(session: simsync.Session
                                                               ) -> None:
    step(session, advance_count=3)
    slot = session.rpc.get_slot()
    data = session.rpc.get_account_info(CLOCK_SYSVAR)
    assert data is not None
    raw = bytes(data.data)
    clock_slot, _epoch_start, epoch, _leader_epoch, unix_timestamp = struct.unpack("<QqQQq",
                                                                                   raw[:40])
    assert clock_slot == slot
    assert epoch == slot // 432_000 == 925
    assert unix_timestamp > 1_700_000_000                    # not 1970
