"""Control channel, one session: life cycle, stepping, discoveries, errors (PROTOCOL §2-§9)."""
from __future__ import annotations

import pytest

from simsync.localsim import DISCOVERY_PROGRAM_ID, ORACLE_ACCOUNT, LocalSimulator
from simsync.localsim.testing import START, slots_of

pytestmark = pytest.mark.timeout(30)


def test_happy_path_announces_every_produced_slot_once(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    c.send("createBacktestSession", {"startSlot": START, "endSlot": START + 20,
                                     "sendSummary": True})
    created = c.recv()
    assert created["method"] == "sessionCreated"
    sid = created["params"]["session_id"]
    assert created["params"]["rpc_endpoint"] == f"/backtest/{sid}"
    assert "task_id" in created["params"]
    startup = c.until("readyForContinue")
    statuses = [f["params"]["status"] for f in startup if f["method"] == "status"]
    assert statuses == ["preparingBundle", "bundleReady", "startingRuntime",
                        "programAccountsLoaded"]
    assert slots_of(startup) == [START]
    while True:
        last = c.step(advanceCount=3)[-1]
        if last["method"] == "completed":
            break
    assert slots_of(c.frames) == sim.produced_slots(START, START + 20)
    assert len(sim.produced_slots(START, START + 20)) < 21  # some slots are skipped
    summary = last["params"]["summary"]
    assert summary["correctSimulation"] == len(sim.executed(sid)) > 0
    assert set(summary) >= {"correctSimulation", "incorrectSimulation", "executionErrors",
                            "balanceDiff", "logDiff", "unsanitizable"}
    assert all("seqId" not in f for f in c.frames)  # no window: no sequence
    executed_slots = sorted({e.slot for e in sim.executed(sid)})
    assert executed_slots == sim.produced_slots(START, START + 20)
    c.send("closeBacktestSession")
    assert c.recv() == {"method": "success"}
    assert c.recv_text() == ""  # server closes the WebSocket
    assert sid not in sim.session_ids()
    assert sim.stats.sessions_completed == 1 and sim.stats.sessions_destroyed == 1


def test_completed_without_summary_is_null(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    c.create(end=START)
    assert c.step()[-1] == {"method": "completed", "params": {"summary": None}}
    c.send("continue", {"advanceCount": 1})
    assert c.recv() == {"method": "error", "params": "noMoreBlocks"}


def test_sequenced_frames_strictly_increase(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    c.create(end=START + 5, disconnectTimeoutSecs=5)
    c.step(advanceCount=10)
    seqs = [f["seqId"] for f in c.frames if f["method"] != "sessionCreated"]
    assert len(seqs) == len(c.frames) - 1
    assert seqs == sorted(set(seqs))
    assert "seqId" not in c.frames[0]


def test_continue_to_pauses_before_batch_and_continue_resumes(sim: LocalSimulator,
                                                             clients) -> None:
    slot, batch = _slot_with_batches(sim, 2)
    c = clients["control"](sim)
    sid = c.create(end=slot + 3)
    c.send("continueTo", {"slot": slot, "batchIndex": batch})
    frames = c.until("paused")
    assert frames[-1]["params"] == {"slot": slot, "batchIndex": batch}
    assert slot in slots_of(frames)
    done = [e for e in sim.executed(sid) if e.slot == slot]
    assert {e.batch_index for e in done} == set(range(batch))
    c.step()
    assert {e.batch_index for e in sim.executed(sid) if e.slot == slot} == set(
        range(len(sim.history.plan(slot))))
    # behind the session now: rejected, and the pause is announced again
    c.send("continueTo", {"slot": slot, "batchIndex": 0})
    err = c.recv()
    assert err["method"] == "error" and "invalidRequest" in err["params"]
    assert c.recv()["method"] == "readyForContinue"


def test_continue_to_block_boundary(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    target = sim.produced_slots(START + 3, START + 9)[0]
    c.create(end=START + 9)
    c.send("continueTo", {"slot": target, "batchIndex": None})
    assert c.until("paused")[-1]["params"] == {"slot": target, "batchIndex": None}


def test_discovery_program_executed_is_announced_ahead(sim: LocalSimulator, clients) -> None:
    memo_slots = [s for s in sim.produced_slots(START, START + 60)
                  if any(DISCOVERY_PROGRAM_ID in p.program_ids
                         for batch in sim.history.plan(s) for p in batch)]
    assert memo_slots and len(memo_slots) < len(sim.produced_slots(START, START + 60))
    c = clients["control"](sim)
    flt = {"programExecuted": DISCOVERY_PROGRAM_ID}
    c.send("createBacktestSession", {"startSlot": START, "endSlot": START + 60,
                                     "discoveries": [flt]})
    startup = c.until("readyForContinue")
    found = [f for f in startup if f["method"] == "discoveryBatch"]
    assert len(found) == 1  # before the first readyForContinue
    disc = found[0]["params"]
    assert disc["slot"] == memo_slots[0] and disc["matched"] == [flt]
    assert disc["transactions"] and disc["transactions"][0]["encoding"] == "base64"
    c.send("continueTo", {"slot": disc["slot"], "batchIndex": disc["batchIndex"]})
    paused = c.until("paused")[-1]
    assert paused["params"] == {"slot": disc["slot"], "batchIndex": disc["batchIndex"]}
    nxt = [f for f in c.step() if f["method"] == "discoveryBatch"]
    assert nxt and (nxt[0]["params"]["slot"], nxt[0]["params"]["batchIndex"]) > (
        disc["slot"], disc["batchIndex"])


def test_discovery_oracle_update(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    flt = {"oracleUpdate": {"programs": ["11111111111111111111111111111111"],
                            "accounts": [ORACLE_ACCOUNT]}}
    c.send("createBacktestSession", {"startSlot": START, "endSlot": START + 200,
                                     "discoveries": [flt]})
    disc = [f for f in c.until("readyForContinue") if f["method"] == "discoveryBatch"]
    assert disc and disc[0]["params"]["matched"] == [flt]
    slot, batch = disc[0]["params"]["slot"], disc[0]["params"]["batchIndex"]
    assert any(p.kind == "oracle" for p in sim.history.plan(slot)[batch])


def test_signer_filter_skips_historical_transactions(sim: LocalSimulator, clients) -> None:
    skipped = sim.wallets[0]
    c = clients["control"](sim)
    sid = c.create(end=START + 30, signerFilter=[skipped])
    c.step(advanceCount=100)
    planned = [p for s in sim.produced_slots(START, START + 30)
               for batch in sim.history.plan(s) for p in batch]
    assert any(p.payer == skipped for p in planned)
    assert len(sim.executed(sid)) == sum(1 for p in planned if p.payer != skipped)


def test_step_while_running_is_rejected(make_sim, clients) -> None:
    sim = make_sim(slot_delay=0.2)
    c = clients["control"](sim)
    c.create(end=START + 20)
    c.send("continue", {"advanceCount": 5})
    c.send("continue", {"advanceCount": 1})
    frames = c.until("readyForContinue")
    errors = [f for f in frames if f["method"] == "error"]
    assert errors == [{"method": "error", "params": {"invalidRequest": {
        "error": "a step is not allowed now (session is running)"}}}]
    assert len(slots_of(frames)) == 5
    assert [f["method"] for f in frames].count("readyForContinue") == 1


@pytest.mark.parametrize("params,variant", [
    ({"transactions": ["%%%not base64"]}, "invalidTransactionEncoding"),
    ({"transactions": ["AQABAgMEBQYHCAkKCwwNDg8="]}, "invalidTransactionFormat"),
    ({"modifyAccountStates": {"not-a-key": {"owner": "11111111111111111111111111111111"}}},
     "invalidAccountPubkey"),
    ({"modifyAccountStates": {"So11111111111111111111111111111111111111112": {
        "owner": "bad owner", "lamports": 1, "data": {"data": "", "encoding": "base64"}}}},
     "invalidAccountOwner"),
    ({"modifyAccountStates": {"So11111111111111111111111111111111111111112": {
        "owner": "11111111111111111111111111111111", "lamports": 1,
        "data": {"data": "@@", "encoding": "base64"}}}}, "invalidAccountEncoding"),
])
def test_bad_step_params_are_rejected_and_session_goes_on(sim: LocalSimulator, clients,
                                                          params, variant) -> None:
    c = clients["control"](sim)
    c.create(end=START + 5)
    c.send("continue", {"advanceCount": 1, **params})
    err = c.recv()
    assert err["method"] == "error" and list(err["params"]) == [variant]
    fields = err["params"][variant]
    if variant.startswith("invalidTransaction"):
        assert fields["index"] == 0 and fields["error"]
    else:
        assert "address" in fields and fields["error"]
    assert c.recv()["method"] == "readyForContinue"
    assert slots_of(c.step()) == sim.produced_slots(START + 1, START + 5)[:1]


@pytest.mark.parametrize("start,end", [(START + 5, START + 1), (START - 10, START),
                                       (START, START + 10_000 * 1000)])
def test_create_outside_the_bundles_is_bundle_not_found(sim: LocalSimulator, clients,
                                                        start, end) -> None:
    c = clients["control"](sim)
    c.send("createBacktestSession", {"startSlot": start, "endSlot": end})
    assert c.recv() == {"method": "error", "params": {"bundleNotFound": {
        "start_slot": start, "end_slot": end}}}
    assert sim.session_ids() == []


def test_unknown_method_and_malformed_frames_keep_the_connection(sim: LocalSimulator,
                                                                  clients) -> None:
    c = clients["control"](sim)
    for raw in ("{not json", "[]", "42", '{"params":{}}', '{"method":"teleport"}'):
        c.send_raw(raw)
        err = c.recv()
        assert err["method"] == "error" and "invalidRequest" in err["params"], raw
    c.send("continue", {"advanceCount": 1})  # no session yet
    assert "invalidRequest" in c.recv()["params"]
    sid = c.create(end=START + 2)
    c.send("createBacktestSession", {"startSlot": START, "endSlot": START + 1})
    assert "invalidRequest" in c.recv()["params"]
    assert sim.session_ids() == [sid]
    c.ws.send_binary(b'{"method":"continue","params":{"advanceCount":1}}')
    assert c.until("readyForContinue")


def test_camel_case_struct_fields_are_accepted(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    sid = c.create(end=START + 5, disconnectTimeoutSecs=5)
    c.close()
    c2 = clients["control"](sim)
    c2.send("attachBacktestSession", {"sessionId": sid, "lastSequence": None})
    assert c2.recv()["method"] == "sessionAttached"


def test_no_window_drop_destroys_the_session(sim: LocalSimulator, clients) -> None:
    from simsync.localsim.testing import wait_for
    c = clients["control"](sim)
    sid = c.create(end=START + 5)
    c.close()
    wait_for(lambda: sid not in sim.session_ids(), what="session destroyed")
    rpc = clients["rpc"](sim, sid)
    assert rpc.call("getSlot")["error"]["code"] == -32002
    c2 = clients["control"](sim)
    c2.send("attachBacktestSession", {"session_id": sid, "last_sequence": None})
    assert c2.recv() == {"method": "error", "params": {"sessionNotFound": {"session_id": sid}}}


def _slot_with_batches(sim: LocalSimulator, n: int) -> tuple[int, int]:
    for slot in sim.produced_slots(START + 1, START + 200):
        if len(sim.history.plan(slot)) >= n + 1:
            return slot, n
    raise AssertionError("no slot with enough batches")


def test_history_is_deterministic_from_the_seed(make_sim, clients) -> None:
    a, b, other = make_sim(seed=7), make_sim(seed=7), make_sim(seed=8)
    assert a.produced_slots(START, START + 300) == b.produced_slots(START, START + 300)
    assert a.produced_slots(START, START + 300) != other.produced_slots(START, START + 300)
    runs = []
    for sim in (a, b):
        c = clients["control"](sim)
        sid = c.create(end=START + 10)
        c.step(advanceCount=20)
        runs.append([(e.slot, e.signature, e.ok) for e in sim.executed(sid)])
    assert runs[0] == runs[1] and runs[0]
