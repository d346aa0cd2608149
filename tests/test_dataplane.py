"""The data plane over real sockets: RPC, transaction and account-diff streams exactly once
across PubSub drops, the completion drain, and backpressure."""
from __future__ import annotations

import time
from typing import Any, List, Tuple

import pytest

import simsync
from simsync.localsim import Fault
from tests.support import FAST, START, client, drive, sim, slots, wait_for

pytestmark = pytest.mark.timeout(180)
__all__ = ["sim"]

SYSTEM = "11111111111111111111111111111111"
END = START + 11
LONG_END = START + 39      # enough slots for 30+ system transfers


def run_with_streams(server: Any, config: simsync.ClientConfig = FAST, diffs: bool = False,
                     end: int = END) -> Tuple[List[Any], str]:
    with client(server, config).start_session(start_slot=START, end_slot=end,
                                              disconnect_timeout_secs=60) as session:
        session.subscribe_transactions([SYSTEM])
        if diffs:
            session.subscribe_account_diffs([SYSTEM])
        return drive(session), session.info.session_id


def executed_signatures(server: Any, session_id: str) -> List[str]:
    return [tx.signature for tx in server.executed(session_id) if SYSTEM in tx.program_ids]


def test_every_transaction_arrives_once_before_completed(sim: Any) -> None:
    events, session_id = run_with_streams(sim)
    delivered = [e.signature for e in events if isinstance(e, simsync.Transaction)]
    assert delivered, "the history should execute system transfers"
    assert delivered == executed_signatures(sim, session_id)
    assert isinstance(events[-1], simsync.Completed)
    assert slots(events) == sim.produced_slots(START, END)


def test_pubsub_drop_after_each_of_the_first_30_notifications(sim: Any) -> None:
    for index in range(1, 31):
        sim.faults.clear()
        fault = sim.faults.add(Fault("drop", channel="pubsub", after_frames=index + 1))
        events, session_id = run_with_streams(sim, end=LONG_END)
        delivered = [e.signature for e in events if isinstance(e, simsync.Transaction)]
        assert delivered == executed_signatures(sim, session_id), f"drop after {index}"
        assert fault.fired == 1, f"the drop after notification {index} never fired"


def test_account_diffs_are_exactly_once_across_drops(sim: Any) -> None:
    clean, _ = run_with_streams(sim, diffs=True)
    clean_diffs = [e.dedup_key for e in clean if isinstance(e, simsync.AccountDiff)]
    assert clean_diffs and len(set(clean_diffs)) == len(clean_diffs)
    sim.faults.add(Fault("drop", channel="pubsub", after_frames=7, times=3))
    faulty, _ = run_with_streams(sim, diffs=True)
    assert [e.dedup_key for e in faulty if isinstance(e, simsync.AccountDiff)] == clean_diffs


def test_a_stalled_subscription_fails_the_drain(sim: Any) -> None:
    config = FAST.replace(ping_interval=30.0, dead_after=60.0, drain_timeout=1.0)
    sim.faults.add(Fault("stall", channel="pubsub", after_frames=3))
    with pytest.raises(simsync.SubscriptionFailed, match="incomplete"):
        run_with_streams(sim, config)


def test_slow_consumer_fails_within_the_timeout_and_buffer_stays_bounded(sim: Any) -> None:
    limit = 5
    config = FAST.replace(max_buffered_events=limit, slow_consumer_timeout=1.0)
    with client(sim, config).start_session(start_slot=START, end_slot=START + 40) as session:
        session.subscribe_transactions([SYSTEM])
        while not isinstance(session.next_event(10), simsync.ReadyForContinue):
            pass
        session.send_continue(advance_count=40)
        mailbox = session._inbox.mailbox
        full_at = wait_for(lambda: mailbox.buffered_data >= limit and time.monotonic(),
                           what="a full mailbox")
        failed_at = wait_for(lambda: mailbox.ended and time.monotonic(),
                             timeout=config.slow_consumer_timeout + 5, what="the failure")
        assert mailbox.buffered_data <= limit
        assert failed_at - full_at <= config.slow_consumer_timeout + 1.0
        with pytest.raises(simsync.SlowConsumerError):
            while True:
                session.next_event(5)


def test_rpc_reads_and_writes_at_a_pause(sim: Any) -> None:
    with client(sim).start_session(start_slot=START, end_slot=END) as session:
        while not isinstance(session.next_event(10), simsync.ReadyForContinue):
            pass
        assert session.rpc.get_slot() >= START
        wallet = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"
        override = simsync.AccountData.of(b"", SYSTEM, 123_456)
        session.rpc.modify_accounts({wallet: override})
        assert session.rpc.get_balance(wallet) == 123_456
        blockhash = session.rpc.get_latest_blockhash()
        assert len(bytes(blockhash.blockhash)) == 32 and blockhash.last_valid_block_height > 0
        with pytest.raises(simsync.RpcError) as info:
            session.rpc.call("noSuchMethod", [])
        assert info.value.code == -32601


def test_rpc_after_completion_fails_fast(sim: Any) -> None:
    with client(sim).start_session(start_slot=START, end_slot=START + 2) as session:
        drive(session)
        started = time.monotonic()
        with pytest.raises(simsync.RpcError, match="ended"):
            session.rpc.get_slot()
        assert time.monotonic() - started < FAST.rpc_timeout


def test_subscription_refusal_raises_with_the_server_message(sim: Any) -> None:
    with client(sim).start_session(start_slot=START, end_slot=END) as session, \
            pytest.raises(simsync.SubscriptionFailed, match="refused"):
        session.subscribe_transactions(["not-a-base58-key!"])


def test_modify_program_installs_a_program_that_runs(sim: Any) -> None:
    from solders.instruction import AccountMeta, Instruction
    from solders.keypair import Keypair
    from solders.litesvm import LiteSVM
    from solders.message import MessageV0
    from solders.pubkey import Pubkey
    from solders.transaction import VersionedTransaction

    memo = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
    elf = bytes(LiteSVM().get_account(memo).data)
    assert elf[:4] == b"\x7fELF"
    program, signer = Pubkey.new_unique(), Keypair()
    payer = signer.pubkey()
    instruction = Instruction(program, b"installed by simsync", [AccountMeta(payer, True, True)])
    with client(sim).start_session(start_slot=START, end_slot=END) as session:
        while not isinstance(session.next_event(10), simsync.ReadyForContinue):
            pass
        blockhash = session.rpc.get_latest_blockhash().blockhash
        message = MessageV0.try_compile(payer, [instruction], [], blockhash)
        transaction = VersionedTransaction(message, [signer])
        overrides = session.modify_program(program, elf)
        overrides[str(payer)] = simsync.AccountData.of(b"", SYSTEM, 10**9)
        session.continue_until_ready(transactions=[transaction],
                                     modify_account_states=overrides, timeout=10)
        ran = [t for t in sim.executed(session.info.session_id) if str(program) in t.program_ids]
        assert [t.ok for t in ran] == [True]
        record = session.rpc.get_transaction(ran[0].signature)
        assert record is not None and record.transaction.meta is not None
        logs = record.transaction.meta.log_messages or []
        assert any("installed by simsync" in line for line in logs)
