"""Issue 24 items 6 and 7: a range spanning bundles is refused as the service refuses it; a
corrupt program override is a bad request naming the program, and the session goes on."""
from __future__ import annotations

import base64

import pytest

from simsync.localsim import SYSTEM_PROGRAM_ID, LocalSimulator
from simsync.localsim.testing import START, Rpc, slots_of

pytestmark = pytest.mark.timeout(60)

BPF_LOADER = "BPFLoader2111111111111111111111111111111111"
PROGRAM = "Prog111111111111111111111111111111111111111"
JUNK = {"lamports": 10**9, "owner": BPF_LOADER, "executable": True,
        "data": [base64.b64encode(b"definitely not an ELF").decode(), "base64"]}


def test_a_range_spanning_bundles_is_bundle_not_found(make_sim, clients) -> None:
    sim = make_sim(bundle_size=100, bundles=3)
    c = clients["control"](sim)
    c.send("createBacktestSession", {"startSlot": START + 50, "endSlot": START + 150})
    assert c.recv() == {"method": "error", "params": {"bundleNotFound": {
        "start_slot": START + 50, "end_slot": START + 150}}}
    assert sim.session_ids() == []


def test_a_range_in_one_bundle_and_a_parallel_range_across_bundles_are_accepted(
        make_sim, clients) -> None:
    sim = make_sim(bundle_size=100, bundles=3)
    one = clients["control"](sim)
    one.create(START + 100, START + 199)                 # a whole bundle, not its start alone
    both = clients["control"](sim)
    both.send("createBacktestSession", {"startSlot": START + 50, "endSlot": START + 150,
                                        "parallel": True})
    both.until("sessionsCreatedV2")
    assert len(sim.session_ids()) == 3


def test_a_corrupt_program_override_is_refused_and_the_session_goes_on(
        sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    sid = c.create(START, START + 5)
    c.send("continue", {"advanceCount": 1, "modifyAccountStates": {PROGRAM: JUNK}})
    frames = c.until("readyForContinue")
    errors = [f for f in frames if f["method"] == "error"]
    assert len(errors) == 1, frames
    refused = errors[0]["params"]["invalidAccountEncoding"]
    assert refused["address"] == PROGRAM
    assert PROGRAM in refused["error"] and "ELF" in refused["error"]
    assert slots_of(frames) == []                        # the step did not run
    after = c.step(advanceCount=1)                       # the session goes on
    assert slots_of(after) == sim.produced_slots(START, START + 5)[1:2]
    assert not [f for f in after if f["method"] == "error"]
    rpc = Rpc(sim.http_url, sid)
    try:
        answer = rpc.call("modifyAccounts", {PROGRAM: JUNK})
        assert answer["error"]["code"] == -32602 and PROGRAM in answer["error"]["message"]
        assert rpc.result("getAccountInfo", PROGRAM)["value"] is None
        assert rpc.result("getAccountInfo", SYSTEM_PROGRAM_ID)["value"]["executable"]
    finally:
        rpc.close()
