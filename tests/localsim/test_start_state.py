"""Issue 24 item 5: a session that starts mid-history, and a parallel sub-session, start from
the state the history reaches at their first slot: the balances a sequential session holds
when it has run there."""
from __future__ import annotations

import time
from typing import Any, Dict, List

import pytest

from simsync.localsim import ORACLE_ACCOUNT, LocalSimulator
from simsync.localsim.history import History
from simsync.localsim.testing import START, Rpc, method_of

pytestmark = pytest.mark.timeout(120)


def balances(sim: LocalSimulator, session_id: str) -> Dict[str, Any]:
    """Lamports of the history's signers and the oracle account, token amounts of the
    wallets' token accounts, as the session's RPC answers them."""
    history = sim.history
    rpc = Rpc(sim.http_url, session_id)
    try:
        lamports = {key: rpc.result("getBalance", key)["value"]
                    for key in [*history.wallet_ids, history.oracle_authority_id,
                                ORACLE_ACCOUNT]}
        tokens = {str(ata): rpc.result("getTokenAccountBalance", str(ata))["value"]["amount"]
                  for ata in history.token_accounts}
    finally:
        rpc.close()
    return {"lamports": lamports, "tokens": tokens}


def reference_at(ref: LocalSimulator, clients: Any, slot: int) -> Dict[str, Any]:
    """Balances of a sequential session of ``ref`` (one bundle from START) standing before
    the block at ``slot``, having executed every block before it."""
    c = clients["control"](ref)
    sid = c.create(START, ref.history.last_slot)
    blocks_before = len(ref.produced_slots(START, slot - 1))
    frames = c.step(advanceCount=blocks_before)
    assert method_of(frames[-1]) == "readyForContinue", frames[-1]
    return balances(ref, sid)


def layouts(make_sim: Any) -> List[LocalSimulator]:
    """Three 100-slot bundles, and one 300-slot bundle with the same produced slots (so a
    sequential session of the second runs through what the first's bundles hold)."""
    sim = make_sim(bundle_size=100, bundles=3)
    ref = make_sim(bundle_size=300, bundles=1)
    assert sim.produced_slots(START, START + 299) == ref.produced_slots(START, START + 299)
    return [sim, ref]


def test_a_session_starting_mid_bundle_starts_from_the_history_state(make_sim,
                                                                     clients) -> None:
    sim, ref = layouts(make_sim)
    start = sim.produced_slots(START + 100, START + 199)[40]
    expected = reference_at(ref, clients, start)
    assert expected["lamports"][sim.history.wallet_ids[0]] != 10**15    # the history moved it
    sid = clients["control"](sim).create(start, START + 199)
    assert balances(sim, sid) == expected


def test_a_parallel_sub_session_starts_from_the_history_state(make_sim, clients) -> None:
    sim, ref = layouts(make_sim)
    expected = reference_at(ref, clients, START + 100)
    c = clients["control"](sim)
    c.send("createBacktestSession", {"startSlot": START + 50, "endSlot": START + 150,
                                     "parallel": True})
    c.until("sessionsCreatedV2")
    c.until("readyForContinue")
    c.until("readyForContinue")                          # both sub-sessions at their first pause
    infos = {sid: sim.session_info(sid) for sid in sim.session_ids()}
    first, second = sorted(infos, key=lambda sid: infos[sid]["slot"])   # type: ignore[index]
    assert infos[second]["slot"] == START + 100                         # type: ignore[index]
    assert balances(sim, second) == expected
    assert balances(sim, first) == reference_at(ref, clients, START + 50)


def test_a_start_far_into_the_history_is_cheap() -> None:
    """9,000 slots in (no checkpoint found yet): well under a second, even on a loaded box."""
    history = History(0, START, 1000, 10)
    began = time.perf_counter()
    history.state_at(START + 9_000)
    assert time.perf_counter() - began < 2.0
