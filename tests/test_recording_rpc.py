"""Recordings from any Solana JSON-RPC endpoint (issue 26 item 4): ``simsync.record_rpc`` /
``simsync record --rpc URL`` against a loopback server answering a real mainnet ``getBlock``
(tests/golden/mainnet-block-100000000.json) and against a local simulator's per-session
JSON-RPC, compared with a control-protocol recording of the same range."""
from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from solders.transaction import VersionedTransaction

import simsync
from simsync.localsim import SYSTEM_PROGRAM_ID, TOKEN_PROGRAM_ID, LocalSimulator
from simsync.protocol.codec import decode_response
from simsync.recording_format import Recording, RecordingError, read
from simsync.recording_rpc import BLOCK_CONFIG, RPC_LIMITS
from tests.jsonrpc_server import JsonRpcServer
from tests.support import START, closed_port, drive

pytestmark = pytest.mark.timeout(120)

GOLDEN = Path(__file__).parent / "golden" / "mainnet-block-100000000.json"
BLOCK: Dict[str, Any] = json.loads(GOLDEN.read_text())
SLOT = 100_000_000
VOTE = "Vote111111111111111111111111111111111111111"
ORACLE = "FsJ3A3u2vn5cTVofAjvy6y5kwABJAqYWpe4975bi2epH"
SERUM = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"
PROGRAMS = [SYSTEM_PROGRAM_ID, TOKEN_PROGRAM_ID]
SIMSYNC = str(Path(sys.executable).parent / "simsync")     # the installed console script
SECRET = "rpc-provider-key-7e2f"
#: One account state the fixture server answers getMultipleAccounts with.
ACCOUNT = {"data": ["", "base64"], "executable": False, "lamports": 664650160100,
           "owner": SYSTEM_PROGRAM_ID, "rentEpoch": 361, "space": 0}
KNOWN = "7ivguYMpnUBMboByJbKc7z31fJMg2pXYQ4nNPziWLchZ"   # the System transfer's fee payer
ABSENT = "So11111111111111111111111111111111111111112"   # in no transaction of the block


class BlockServer(JsonRpcServer):
    """A JSON-RPC 2.0 server on 127.0.0.1 with one mainnet block: ``getBlocks`` (the fixture's
    slot when in range), ``getBlock`` (the fixture; Agave's -32007 for any other slot),
    ``getMultipleAccounts`` (``ACCOUNT`` for ``KNOWN``, null otherwise, context slot
    ``SLOT + 500``). ``requests`` holds each request body. A context manager: stops and joins
    its threads on exit."""

    def __init__(self, block: Optional[Dict[str, Any]] = None) -> None:
        self.block = block if block is not None else BLOCK
        super().__init__(f"/v1/{SECRET}?api-key={SECRET}")

    def answer(self, body: Dict[str, Any]) -> Dict[str, Any]:
        method, params = body["method"], body["params"]
        if method == "getBlocks":
            return {"result": [SLOT] if params[0] <= SLOT <= params[1] else []}
        if method == "getBlock":
            if params[0] == SLOT:
                return {"result": self.block}
            return {"error": {"code": -32007, "message": f"Slot {params[0]} was skipped"}}
        if method == "getMultipleAccounts":
            return {"result": {"context": {"apiVersion": "1.8.0", "slot": SLOT + 500},
                               "value": [ACCOUNT if k == KNOWN else None
                                         for k in params[0]]}}
        return {"error": {"code": -32601, "message": "Method not found"}}

    def __enter__(self) -> BlockServer:
        return self


def transactions(recording: Recording) -> List[Dict[str, Any]]:
    """The ``result`` of each transaction notification, in order."""
    return [w["params"]["result"] for w in recording.events()
            if w.get("method") == "transactionNotification"]


def tx_records(recording: Recording) -> List[Dict[str, Any]]:
    return [r for r in recording.records if r.get("type") == "event"
            and r["wire"].get("method") == "transactionNotification"]


def signature(result: Dict[str, Any]) -> str:
    raw = base64.b64decode(result["transaction"][0])
    return str(VersionedTransaction.from_bytes(raw).signatures[0])


def clean_env() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SIMULATOR_API_KEY"}


# -- a real mainnet block ---------------------------------------------------------------------

def test_a_mainnet_block_records_its_transactions_as_getblock_gave_them(tmp_path: Path) -> None:
    out = tmp_path / "mainnet.simrec"
    with BlockServer() as server:
        done = simsync.record_rpc(server.url, str(out), SLOT - 2, SLOT + 1,
                                  program_ids=[VOTE, ORACLE, SERUM, SYSTEM_PROGRAM_ID],
                                  accounts=[KNOWN, ABSENT])
        asked = server.calls("getBlock")
    assert done.complete and read(str(out)) == done
    assert asked == [[SLOT, BLOCK_CONFIG]] and BLOCK_CONFIG == {
        "encoding": "json", "transactionDetails": "full", "maxSupportedTransactionVersion": 0,
        "rewards": False}
    recorded = transactions(done)
    fixture = BLOCK["transactions"]
    assert len(recorded) == len(fixture) == 10
    for got, want in zip(recorded, fixture):
        assert signature(got) == want["transaction"]["signatures"][0]
        assert got["meta"] == want["meta"]     # fee, err, balances, token balances, logs...
        assert (got["meta"]["fee"], got["meta"]["err"]) == (want["meta"]["fee"],
                                                            want["meta"]["err"])
        assert got["meta"]["preBalances"] == want["meta"]["preBalances"]
        assert got["meta"]["postBalances"] == want["meta"]["postBalances"]
        assert (got["slot"], got["blockTime"], got["version"]) == (SLOT, 1633504705, "legacy")
        tx = VersionedTransaction.from_bytes(base64.b64decode(got["transaction"][0]))
        assert all(tx.verify_with_results())      # the signed bytes, re-serialised exactly
    assert [r["meta"]["err"] is not None for r in recorded].count(True) == 2
    # the notifications decode as the protocol's Transaction events
    events = [decode_response(json.dumps(w))[1] for w in done.events()]
    assert [e.slot for e in events if isinstance(e, simsync.Slot)] == [SLOT]
    assert [e.signature for e in events if isinstance(e, simsync.Transaction)] == [
        t["transaction"]["signatures"][0] for t in fixture]
    # the block and what is derived
    assert done.blocks() == [{"type": "block", "slot": SLOT,
                              "blockhash": BLOCK["previousBlockhash"],
                              "last_valid_block_height": 89586871 + 150,
                              "block_time": 1633504705, "block_height": 89586871,
                              "parent_slot": 99999999, "block_blockhash": BLOCK["blockhash"]}]
    transfer = tx_records(done)[7]
    assert transfer["lamport_changes"] == {KNOWN: [664650165100, 664650160100]}
    # what RPC could not give is said, and the provider's key is nowhere in the file
    header = done.header
    assert header["source"] == "json-rpc" and header["rpc_limits"] == RPC_LIMITS
    assert any("CURRENT state" in line for line in header["not_seen"])
    assert header["account_states"] == {"slot": SLOT + 500, "accounts": {
        KNOWN: ACCOUNT, ABSENT: None}}
    assert header["host"] == server.url.split("/")[2]
    assert SECRET.encode() not in out.read_bytes() and SECRET not in json.dumps(done.records)
    assert done.records[-1] == {"type": "end", "accounts_not_touched": [ABSENT]}
    assert "accountDiffNotification" not in done.streams()


def test_programs_match_inner_instructions_and_accounts_match_mentions(tmp_path: Path) -> None:
    """SPL Token is invoked only by the Serum transaction's inner instruction; the Vote
    program by six transactions (two failed); an account key picks its transaction."""
    with BlockServer() as server:
        token = simsync.record_rpc(server.url, str(tmp_path / "t.simrec"), SLOT, SLOT,
                                   program_ids=[TOKEN_PROGRAM_ID])
        votes = simsync.record_rpc(server.url, str(tmp_path / "v.simrec"), SLOT, SLOT,
                                   program_ids=[VOTE])
        one = simsync.record_rpc(server.url, str(tmp_path / "a.simrec"), SLOT, SLOT,
                                 accounts=[KNOWN])
    sigs = [t["transaction"]["signatures"][0] for t in BLOCK["transactions"]]
    assert [signature(t) for t in transactions(token)] == [sigs[6]]
    assert transactions(token)[0]["meta"]["postTokenBalances"][0]["uiTokenAmount"][
        "amount"] == "10509537000000"
    assert [signature(t) for t in transactions(votes)] == [sigs[i] for i in (0, 1, 2, 5, 8, 9)]
    assert [signature(t) for t in transactions(one)] == [sigs[7]]
    assert one.records[-1] == {"type": "end", "accounts_not_touched": []}


def test_a_versioned_transaction_keeps_its_lookups_and_loaded_keys(tmp_path: Path) -> None:
    """A v0 transaction (built from the fixture's System transfer with an address-table
    lookup): its bytes keep the lookup, and the loaded keys index its balances."""
    block = copy.deepcopy(BLOCK)
    entry = block["transactions"][7]
    lookup = {"accountKey": "4UpD2fh7xH3VP9QQaXtsS1YY3bxzWhtfpks7FatyKvdY",
              "writableIndexes": [3], "readonlyIndexes": []}
    entry["transaction"]["message"]["addressTableLookups"] = [lookup]
    entry["version"] = 0
    loaded = "8SheGtsopRUDzdiD6v6BR9a6bqZ9QwywYQY99Fp5meNf"
    entry["meta"]["loadedAddresses"] = {"writable": [loaded], "readonly": []}
    entry["meta"]["preBalances"].append(10)
    entry["meta"]["postBalances"].append(15)
    with BlockServer(block) as server:
        done = simsync.record_rpc(server.url, str(tmp_path / "v0.simrec"), SLOT, SLOT,
                                  accounts=[loaded])
    [record] = tx_records(done)
    result = record["wire"]["params"]["result"]
    tx = VersionedTransaction.from_bytes(base64.b64decode(result["transaction"][0]))
    assert result["version"] == 0 and len(tx.message.address_table_lookups) == 1
    assert str(tx.message.address_table_lookups[0].account_key) == lookup["accountKey"]
    assert bytes(tx.message.address_table_lookups[0].writable_indexes) == b"\x03"
    assert record["lamport_changes"] == {KNOWN: [664650165100, 664650160100],
                                         loaded: [10, 15]}


# -- the local simulator's per-session JSON-RPC ------------------------------------------------

def _drive_past(session: simsync.Session, slot: int) -> None:
    """Step until the session stands beyond ``slot`` (its blocks up to ``slot`` are then
    available over getBlock), and stay at that pause."""
    while True:
        event = session.next_event(60)
        if isinstance(event, (simsync.ReadyForContinue, simsync.Paused)):
            now = session.rpc.get_slot()
            if now > slot:
                return
            # big steps, then one block at a time: never past the session's end (slot + 10)
            session.send_continue(advance_count=25 if now < slot - 40 else 1)
        assert not isinstance(event, simsync.Completed), "the session ended too early"


def test_a_recorded_mainnet_block_replays_in_the_local_simulator(tmp_path: Path) -> None:
    """The mainnet block's recording served by ``LocalSimulator(recording=…)``: a session
    over its range gets the block's slot and its 10 transactions with their mainnet metas."""
    out = tmp_path / "mainnet.simrec"
    with BlockServer() as server:
        simsync.record_rpc(server.url, str(out), SLOT - 2, SLOT + 1,
                           program_ids=[VOTE, ORACLE, SERUM, SYSTEM_PROGRAM_ID])
    with LocalSimulator(recording=str(out)) as replay, simsync.Client(replay.url) as client, \
            client.start_session(start_slot=SLOT - 2, end_slot=SLOT + 1) as session:
        session.subscribe_transactions([VOTE, ORACLE, SERUM, SYSTEM_PROGRAM_ID])
        replayed = drive(session)
    assert [e.slot for e in replayed if isinstance(e, simsync.Slot)] == [SLOT]
    got = [(e.signature, e.meta["fee"], e.meta["err"], e.meta["postBalances"])
           for e in replayed if isinstance(e, simsync.Transaction)]
    assert got == [(t["transaction"]["signatures"][0], t["meta"]["fee"], t["meta"]["err"],
                    t["meta"]["postBalances"]) for t in BLOCK["transactions"]]


@pytest.mark.timeout(300)
def test_round_trip_from_a_session_rpc_matches_the_control_recording(tmp_path: Path) -> None:
    end = START + 199
    with LocalSimulator(bundle_size=400, bundles=1) as sim:
        control = simsync.record(sim.url, str(tmp_path / "control.simrec"), START, end,
                                 program_ids=PROGRAMS)
        with simsync.Client(sim.url) as client, client.start_session(
                start_slot=START, end_slot=end + 10) as session:
            _drive_past(session, end)
            url = session.rpc.url
            done = simsync.record_rpc(url, str(tmp_path / "rpc.simrec"), START, end,
                                      program_ids=PROGRAMS)
            # an account the range changes: its state in the header is the CURRENT one
            diffs = [w["params"]["result"] for w in control.events()
                     if w.get("method") == "accountDiffNotification"
                     and "pre" in w["params"]["result"] and "post" in w["params"]["result"]]
            moved = next(d for d in diffs if d["pre"]["lamports"] != d["post"]["lamports"])
            key = moved["account"]
            with_key = simsync.record_rpc(url, str(tmp_path / "key.simrec"), START, end,
                                          program_ids=PROGRAMS, accounts=[key])
            now = session.rpc.call("getAccountInfo", [key, {"encoding": "base64"}])["value"]
    # same slots, blockhashes, last valid block heights
    slot_events = [w["params"] for w in control.events() if w["method"] == "slotNotification"]
    assert [w["params"] for w in done.events()
            if w["method"] == "slotNotification"] == slot_events and len(slot_events) > 150
    assert [(b["slot"], b["blockhash"], b["last_valid_block_height"])
            for b in done.blocks()] == [(b["slot"], b["blockhash"],
                                         b["last_valid_block_height"])
                                        for b in control.blocks()]
    # the same transactions, bytes, metas, times, versions, in the same order
    ours, theirs = transactions(done), transactions(control)
    assert len(ours) == len(theirs) > 100
    assert any(t["meta"]["postTokenBalances"] for t in ours), "no SPL Token transaction"
    for got, want in zip(ours, theirs):
        assert got["transaction"] == want["transaction"]
        assert (got["slot"], got["blockTime"], got["version"]) == (
            want["slot"], want["blockTime"], want["version"])
        # what RPC cannot give: getBlock with rewards=false leaves meta.rewards out
        assert "rewards" not in got["meta"] and want["meta"]["rewards"] == []
        assert got["meta"] == {k: v for k, v in want["meta"].items() if k != "rewards"}
    # the derived lamport changes agree with every account diff the session sent
    derived = {signature(r["wire"]["params"]["result"]): r["lamport_changes"]
               for r in tx_records(done)}
    changed = [d for d in diffs if d["pre"]["lamports"] != d["post"]["lamports"]
               and d["signature"] in derived]   # (a diff of a start-up transaction has none)
    assert len(changed) > 100 and all(derived[d["signature"]][d["account"]] == [
        d["pre"]["lamports"], d["post"]["lamports"]] for d in changed)
    # what RPC cannot give, asserted as such: no diffs, no control events but slots, and the
    # accounts' states are the current ones, not those before the range
    assert set(done.streams()) == {"control", "transactionNotification"}
    assert {w["method"] for w in done.streams()["control"]} == {"slotNotification"}
    assert {w["method"] for w in control.streams()["control"]} >= {
        "status", "readyForContinue", "completed"}
    assert "accountDiffNotification" in control.streams()
    first_pre = next(d["pre"] for d in diffs if d["account"] == key)
    state = with_key.header["account_states"]["accounts"][key]
    assert state == now and state != first_pre
    assert with_key.header["account_states"]["slot"] > end
    # the RPC recording replays in the local simulator: every recorded transaction, the last
    # block's included (its blocks are whole: no pause follows the last one)
    with LocalSimulator(recording=str(tmp_path / "rpc.simrec")) as replay, \
            simsync.Client(replay.url) as client, \
            client.start_session(start_slot=START, end_slot=end) as session:
        session.subscribe_transactions(PROGRAMS)
        replayed = drive(session)
    assert [e.slot for e in replayed if isinstance(e, simsync.Slot)] == slot_events
    assert [e.signature for e in replayed if isinstance(e, simsync.Transaction)] == [
        signature(t) for t in ours]


@pytest.mark.timeout(300)
def test_a_cut_recording_resumes_to_the_uninterrupted_one(tmp_path: Path) -> None:
    end = START + 79
    whole, cut = tmp_path / "whole.simrec", tmp_path / "cut.simrec"
    with LocalSimulator(bundle_size=200, bundles=1) as sim, simsync.Client(
            sim.url) as client, client.start_session(start_slot=START,
                                                     end_slot=end + 10) as session:
        _drive_past(session, end)
        url = session.rpc.url
        full = simsync.record_rpc(url, str(whole), START, end, program_ids=PROGRAMS)
        data = whole.read_bytes()
        for size in (len(data) // 3, len(data) // 2, len(data) - 1):
            cut.write_bytes(data[:size])
            prefix = read(str(cut))
            assert not prefix.complete and 0 < len(prefix.records) < len(full.records)
            resumed = simsync.record_rpc(url, str(cut), START, end, program_ids=PROGRAMS,
                                         resume=True)
            assert resumed.records == full.records and resumed.header == full.header
            assert cut.read_bytes() == data        # whole blocks kept, the rest re-read
        before = cut.read_bytes()
        again = simsync.record_rpc(url, str(cut), START, end, program_ids=PROGRAMS,
                                   resume=True)
        assert again == full and cut.read_bytes() == before    # complete: left as it is
        with pytest.raises(RecordingError, match="end_slot"):
            simsync.record_rpc(url, str(cut), START, end + 1, program_ids=PROGRAMS,
                               resume=True)


# -- bad input --------------------------------------------------------------------------------

def test_bad_input_raises_before_any_file_is_written(tmp_path: Path) -> None:
    out = tmp_path / "r.simrec"
    with pytest.raises(simsync.RpcConnectionError, match="connection failed"):
        simsync.record_rpc(f"http://127.0.0.1:{closed_port()}/", str(out), SLOT, SLOT)
    with pytest.raises(ValueError, match="before start_slot"):
        simsync.record_rpc("http://127.0.0.1:1/", str(out), SLOT, SLOT - 1)
    with BlockServer() as server, pytest.raises(simsync.SimsyncError,
                                                match="no blocks in slots 5-9"):
        simsync.record_rpc(server.url, str(out), 5, 9)
    assert not out.exists()


def test_the_cli_records_from_an_rpc_url_and_reports_bad_input(tmp_path: Path) -> None:
    out = tmp_path / "cli.simrec"
    with BlockServer() as server:
        ok = subprocess.run([SIMSYNC, "record", "--rpc", server.url, "--start-slot",
                             str(SLOT - 5), "--end-slot", str(SLOT + 5), "--output", str(out),
                             "--program-id", VOTE, "--account", KNOWN],
                            capture_output=True, text=True, timeout=60, env=clean_env(),
                            stdin=subprocess.DEVNULL)
        empty = subprocess.run([SIMSYNC, "record", "--rpc", server.url, "--start-slot", "5",
                                "--end-slot", "9", "--output", str(tmp_path / "e.simrec")],
                               capture_output=True, text=True, timeout=60, env=clean_env(),
                               stdin=subprocess.DEVNULL)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == (f"recorded slots {SLOT - 5}-{SLOT + 5} from JSON-RPC: 1 blocks, "
                                 f"7 transactions to {out}")
    assert SECRET not in ok.stdout + ok.stderr
    assert [signature(t) for t in transactions(read(str(out)))] == [
        BLOCK["transactions"][i]["transaction"]["signatures"][0] for i in (0, 1, 2, 5, 7, 8, 9)]
    assert empty.returncode == 1 and "no blocks in slots 5-9" in empty.stderr
    port = closed_port()
    down = subprocess.run([SIMSYNC, "record", "--rpc", f"http://127.0.0.1:{port}/",
                           "--start-slot", "1", "--end-slot", "2", "--output",
                           str(tmp_path / "d.simrec")], capture_output=True, text=True,
                          timeout=60, env=clean_env(), stdin=subprocess.DEVNULL)
    assert down.returncode == 1
    assert "connection failed" in down.stderr and f"127.0.0.1:{port}" in down.stderr
    backwards = subprocess.run([SIMSYNC, "record", "--rpc", "http://127.0.0.1:1/",
                                "--start-slot", "9", "--end-slot", "5", "--output",
                                str(tmp_path / "b.simrec")], capture_output=True, text=True,
                               timeout=60, env=clean_env(), stdin=subprocess.DEVNULL)
    assert backwards.returncode == 2 and "--start-slot 9 is after --end-slot 5" in \
        backwards.stderr
    both = subprocess.run([SIMSYNC, "record", "--rpc", "http://127.0.0.1:1/", "--url",
                           "ws://127.0.0.1:1", "--start-slot", "1", "--end-slot", "2",
                           "--output", str(tmp_path / "x.simrec")], capture_output=True,
                          text=True, timeout=60, env=clean_env(), stdin=subprocess.DEVNULL)
    assert both.returncode == 1 and "not both" in both.stderr
    helped = subprocess.run([SIMSYNC, "record", "--help"], capture_output=True, text=True,
                            timeout=60, env=clean_env(), stdin=subprocess.DEVNULL)
    assert "--rpc URL" in helped.stdout and "CURRENT" in " ".join(helped.stdout.split())
    assert not any((tmp_path / n).exists() for n in ("e.simrec", "d.simrec", "b.simrec",
                                                     "x.simrec"))
