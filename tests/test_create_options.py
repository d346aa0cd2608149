"""Issue 17 item 4: create options (``slot_count``, typed discovery filters), the typed
``AgentStatsReport`` of ``Completed``, ``Summary`` helpers and ``SessionInfo.rpc_url``:
units on the types, then end to end against the local simulator."""
from __future__ import annotations

import dataclasses
import json
import pickle
from typing import Any, List

import pytest
import requests

import simsync
from simsync.localsim import ORACLE_ACCOUNT, SYSTEM_PROGRAM_ID, LocalSimulator
from simsync.protocol import decode_request, decode_response, encode_request, encode_response
from simsync.protocol.types import CreateBacktestSession, discovery_filter
from simsync.rpc import close_http
from tests.fixtures import compact, frames
from tests.support import FAST, START, client, drive, sim, slots

pytestmark = pytest.mark.timeout(60)
__all__ = ["sim"]

JUP = "JUP6LkbZbjS1jKKwapdHNy74zcZ3tLUZoi5QNyVTaV4"
SYSTEM = "11111111111111111111111111111111"


def get_slot(rpc_url: str) -> Any:
    """``getSlot`` over plain HTTP at ``rpc_url``; the pooled socket is closed at once."""
    http = requests.Session()
    try:
        return http.post(rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "getSlot"},
                         timeout=10).json()["result"]
    finally:
        close_http(http)


def golden(note: str) -> Any:
    return next(r["frame"] for r in frames("control.jsonl", "s2c") if r["note"] == note)


# ----------------------------------------------------------------------------- slot_count


def test_slot_count_resolves_to_an_inclusive_end_slot_on_the_wire() -> None:
    params = simsync.CreateSessionParams(start_slot=100, slot_count=10)
    assert params.end_slot == 109 and params.slot_span == 10
    wire = json.loads(encode_request(CreateBacktestSession(params)))["params"]
    assert wire == {"startSlot": 100, "endSlot": 109}
    assert "slotCount" not in wire
    one = simsync.CreateSessionParams(start_slot=7, slot_count=1)
    assert (one.start_slot, one.end_slot) == (7, 7)


@pytest.mark.parametrize("fields, error, words", [
    ({"start_slot": 1}, TypeError, "neither"),
    ({"start_slot": 1, "end_slot": 5, "slot_count": 5}, TypeError, "both"),
    ({"start_slot": 1, "slot_count": 0}, ValueError, "slot_count"),
    ({"start_slot": 1, "slot_count": -3}, ValueError, "slot_count"),
    ({"start_slot": 1, "slot_count": True}, ValueError, "slot_count"),
    ({"start_slot": 1, "slot_count": 2.5}, ValueError, "slot_count"),
    ({"start_slot": 1, "end_slot": 2, "extra_compute_units": -1}, ValueError,
     "extra_compute_units"),
])
def test_bad_range_arguments_name_both_fields(fields: Any, error: type, words: str) -> None:
    with pytest.raises(error) as info:
        simsync.CreateSessionParams(**fields)
    assert words in str(info.value)
    if error is TypeError:
        assert "end_slot" in str(info.value) and "slot_count" in str(info.value)


def test_start_session_rejects_both_before_connecting() -> None:
    closed = simsync.Client("ws://127.0.0.1:9", config=FAST)   # nothing is contacted
    with pytest.raises(TypeError, match="end_slot and slot_count"):
        closed.start_session(start_slot=START, end_slot=START + 1, slot_count=2)


def test_slot_count_params_survive_replace_and_pickle() -> None:
    params = simsync.CreateSessionParams(start_slot=10, slot_count=5, send_summary=True)
    assert dataclasses.replace(params, parallel=True).end_slot == 14
    copy = pickle.loads(pickle.dumps(params))
    assert copy == params and copy.end_slot == 14


def test_slot_count_end_to_end(sim: LocalSimulator) -> None:
    with client(sim).start_session(start_slot=START, slot_count=12) as session:
        events = drive(session)
    assert slots(events) == sim.produced_slots(START, START + 11)   # the inclusive end


def test_slot_count_parallel_end_to_end(sim: LocalSimulator) -> None:
    count = 150                                  # spans two of the simulator's bundles
    with client(sim).start_parallel(start_slot=START, slot_count=count) as batch:
        ranges = [tuple(sub.range) for sub in batch.sub_sessions]
    assert ranges == [(START, START + 99), (START + 100, START + count - 1)]


# ----------------------------------------------------------------------------- discovery filters


def test_typed_filters_encode_to_the_wire_forms() -> None:
    params = simsync.CreateSessionParams(
        1, 2, discoveries=[simsync.ProgramExecuted(JUP),
                           simsync.OracleUpdate(programs=[SYSTEM], accounts=[JUP]),
                           {"someNewKind": {"x": 1}}])
    wire = json.loads(encode_request(CreateBacktestSession(params)))["params"]
    assert wire["discoveries"] == [{"programExecuted": JUP},
                                   {"oracleUpdate": {"programs": [SYSTEM], "accounts": [JUP]}},
                                   {"someNewKind": {"x": 1}}]
    golden_create = next(r["frame"] for r in frames("control.jsonl", "c2s")
                         if r["note"] == "create with a discovery filter")
    typed = simsync.CreateSessionParams(400000000, 400000005,
                                        discoveries=[simsync.ProgramExecuted(JUP)])
    assert json.loads(encode_request(CreateBacktestSession(typed))) == golden_create


def test_to_dict_writes_typed_filters_in_their_wire_form() -> None:
    params = simsync.CreateSessionParams(1, 2, discoveries=[simsync.ProgramExecuted(JUP),
                                                            {"raw": 1}])
    assert params.to_dict()["discoveries"] == [{"programExecuted": JUP}, {"raw": 1}]


def test_typed_filters_round_trip_through_the_decoder() -> None:
    typed = [simsync.ProgramExecuted(JUP), simsync.OracleUpdate(accounts=(JUP,))]
    params = simsync.CreateSessionParams(1, 2, discoveries=list(typed))
    decoded = decode_request(encode_request(CreateBacktestSession(params)))
    assert isinstance(decoded, CreateBacktestSession)
    assert [discovery_filter(d) for d in decoded.create.discoveries or []] == typed


@pytest.mark.parametrize("build, words", [
    (lambda: simsync.ProgramExecuted("not-base58-0OIl"), "program_id"),
    (lambda: simsync.ProgramExecuted(JUP[:-4]), "program_id"),
    (lambda: simsync.OracleUpdate(), "programs or accounts"),
    (lambda: simsync.OracleUpdate(programs=SYSTEM), "not one string"),   # type: ignore
    (lambda: simsync.OracleUpdate(accounts=["nope"]), "accounts"),
    (lambda: simsync.CreateSessionParams(1, 2, discoveries=[42]), "discoveries"),  # type: ignore
])
def test_bad_filters_are_refused_at_construction(build: Any, words: str) -> None:
    with pytest.raises((ValueError, TypeError), match=words):
        build()


def test_discovery_filter_keeps_unknown_and_malformed_entries_raw() -> None:
    for raw in ({"someNewKind": 1}, {"programExecuted": "bad"}, {"oracleUpdate": {}}, "x", 3,
                {"programExecuted": JUP, "also": 1}):
        assert discovery_filter(raw) == raw
    assert discovery_filter({"oracleUpdate": {"programs": [SYSTEM]}}) == \
        simsync.OracleUpdate(programs=(SYSTEM,))


def test_golden_discovery_batch_has_typed_matches() -> None:
    _, batch = decode_response(compact(golden("discovery batch")))
    assert isinstance(batch, simsync.DiscoveryBatch)
    assert batch.matched_filters == [simsync.ProgramExecuted(JUP)]


def test_program_executed_filter_end_to_end(sim: LocalSimulator) -> None:
    flt = simsync.ProgramExecuted(sim.DISCOVERY_PROGRAM_ID)
    with client(sim).start_session(start_slot=START + 1, end_slot=START + 90,
                                   discoveries=[flt]) as session:
        events = [session.next_event(10)]
        while not isinstance(events[-1], simsync.ReadyForContinue):
            events.append(session.next_event(10))
        events += session.advance_to_discovery(timeout=10)
    found = [e for e in events if isinstance(e, simsync.DiscoveryBatch)]
    assert found and found[-1].matched_filters == [flt]
    assert events[-1] == simsync.Paused(found[-1].slot, found[-1].batch_index)
    planned = sim.history.plan(found[-1].slot)[found[-1].batch_index]
    assert any(sim.DISCOVERY_PROGRAM_ID in p.program_ids for p in planned)


def test_oracle_update_filter_end_to_end() -> None:
    flt = simsync.OracleUpdate(programs=[SYSTEM_PROGRAM_ID], accounts=[ORACLE_ACCOUNT])
    with LocalSimulator(bundle_size=201, bundles=1) as sim, \
            client(sim).start_session(start_slot=START, end_slot=START + 200,
                                      discoveries=[flt]) as session:   # one bundle
        seen: List[Any] = [session.next_event(10)]
        while not isinstance(seen[-1], simsync.ReadyForContinue):
            seen.append(session.next_event(10))
    found = [e for e in seen if isinstance(e, simsync.DiscoveryBatch)]
    assert found and found[0].matched_filters == [flt]
    assert any(p.kind == "oracle"
               for p in sim.history.plan(found[0].slot)[found[0].batch_index])


# ----------------------------------------------------------------------------- agent stats


def test_golden_agent_stats_have_a_typed_view() -> None:
    _, completed = decode_response(compact(
        golden("completed from an older server, with agent stats")))
    assert isinstance(completed, simsync.Completed)
    assert completed.agent_stats is not None and completed.agent_stats[0]["name"] == "arb"
    (report,) = completed.agent_reports
    assert report == simsync.AgentStatsReport(
        name="arb", slots_processed=10, opportunities_found=3, opportunities_skipped=1,
        no_routes=0, txs_produced=2, txs_submitted=2, txs_failed=0,
        txs_simulation_rejected=0, txs_simulation_failed=0,
        expected_gain_by_mint={"So11111111111111111111111111111111111111112": 1500})
    assert report.extra == {}
    assert pickle.loads(pickle.dumps(completed)) == completed
    assert encode_response(completed) == compact(
        golden("completed from an older server, with agent stats"))


def test_agent_stats_accept_camel_case_and_keep_unknowns() -> None:
    report = simsync.AgentStatsReport.from_wire(
        {"name": "mm", "slotsProcessed": 4, "txsFailed": "n/a", "newCounter": 9,
         "expectedGainByMint": {"M": 5}})
    assert (report.name, report.slots_processed, report.txs_failed) == ("mm", 4, None)
    assert report.expected_gain_by_mint == {"M": 5}
    assert report.extra == {"txsFailed": "n/a", "newCounter": 9}


def test_completed_without_agent_stats_has_no_reports() -> None:
    _, completed = decode_response(compact(golden("completed with summary")))
    assert isinstance(completed, simsync.Completed) and completed.agent_reports == []


def test_a_non_object_agent_stat_raises_protocol_error_on_access() -> None:
    completed = simsync.Completed(None, [{"name": "a"}, 5])  # type: ignore[list-item]
    with pytest.raises(simsync.ProtocolError, match="agent_stats"):
        _ = completed.agent_reports


# ----------------------------------------------------------------------------- summary helpers


def test_summary_helpers_on_the_golden_summary() -> None:
    _, completed = decode_response(compact(golden("completed with summary")))
    summary = completed.summary               # type: ignore[union-attr]
    assert summary is not None
    assert summary.total_transactions() == 120 + 2 + 1 + 0   # balance/log diffs not added
    assert summary.has_deviations()


@pytest.mark.parametrize("name", simsync.Summary.DEVIATIONS)
def test_each_deviation_counter_alone_flags_deviations(name: str) -> None:
    assert not simsync.Summary(correct_simulation=50).has_deviations()
    assert simsync.Summary(correct_simulation=50, **{name: 1}).has_deviations()
    assert not simsync.Summary(correct_simulation=50, **{name: 0}).has_deviations()


def test_missing_counters_count_as_zero() -> None:
    empty = simsync.Summary()
    assert empty.total_transactions() == 0 and not empty.has_deviations()
    assert simsync.Summary(incorrect_simulation=3, log_diff=2, balance_diff=1,
                           unsanitizable=4).total_transactions() == 7


def test_summary_helpers_end_to_end(sim: LocalSimulator) -> None:
    with client(sim).start_session(start_slot=START, end_slot=START + 30,
                                   send_summary=True) as session:
        events = drive(session)
        session_id = session.info.session_id
    completed = events[-1]
    assert isinstance(completed, simsync.Completed) and completed.summary is not None
    history = [t for t in sim.executed(session_id) if t.source == "history"]
    failed = [t for t in history if not t.ok]
    assert history and completed.summary.total_transactions() == len(history)
    assert completed.summary.has_deviations() == bool(failed)


# ----------------------------------------------------------------------------- SessionInfo


def test_rpc_url_keeps_the_endpoint_and_resolves_it() -> None:
    path = simsync.SessionInfo("id", "/backtest/id", None, "wss://sim.example.com/backtest")
    assert path.rpc_endpoint == "/backtest/id"
    assert path.rpc_url == "https://sim.example.com/backtest/id"
    assert path.pubsub_url == "wss://sim.example.com/backtest/id"
    absolute = simsync.SessionInfo("id", "https://data.example.com/backtest/id")
    assert absolute.rpc_url == "https://data.example.com/backtest/id"
    with pytest.raises(ValueError, match="control_url"):
        _ = simsync.SessionInfo("id", "/backtest/id").rpc_url
    assert pickle.loads(pickle.dumps(path)) == path


@pytest.mark.parametrize("endpoint_host", [None, "127.0.0.1"])
def test_rpc_url_answers_json_rpc_end_to_end(endpoint_host: Any) -> None:
    with LocalSimulator(bundle_size=100, bundles=2, rpc_endpoint_host=endpoint_host) as server:
        sim_client = client(server)
        with sim_client.start_session(start_slot=START, end_slot=START + 5) as session:
            while not isinstance(session.next_event(10), simsync.ReadyForContinue):
                pass
            info = dataclasses.replace(session.info, control_url=sim_client.url)
            assert info.rpc_endpoint.startswith("/" if endpoint_host is None else "http://")
            assert info.rpc_url == f"{server.http_url}/backtest/{info.session_id}"
            assert get_slot(info.rpc_url) == START


def test_session_info_from_a_session_has_an_absolute_rpc_url(sim: LocalSimulator) -> None:
    with client(sim).start_session(start_slot=START, end_slot=START + 2) as session:
        info = session.info
        assert info.rpc_endpoint == f"/backtest/{info.session_id}"    # as the server sent it
        assert info.rpc_url == f"{sim.http_url}/backtest/{info.session_id}"
        while not isinstance(session.next_event(10), simsync.ReadyForContinue):
            pass
        assert get_slot(info.rpc_url) == START


def test_sub_session_infos_have_absolute_rpc_urls(sim: LocalSimulator) -> None:
    with client(sim).start_parallel(start_slot=START, end_slot=START + 150) as batch:
        infos = [sub.info for sub in batch.sub_sessions]
    assert len(infos) == 2
    assert [i.rpc_url for i in infos] == [f"{sim.http_url}/backtest/{i.session_id}"
                                          for i in infos]
