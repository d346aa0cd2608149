"""Replaying a recording in the local simulator (issue 26 items 2 and 3): a round trip from a
`LocalSimulator` on loopback through ``simsync.record`` to ``simsync serve --recording`` in
another process, the same bot on both; user transactions on recorded state; reconnects,
unseen accounts, divergence, prefixes and bad files."""
from __future__ import annotations

import base64
import json
import logging
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

import simsync
from simsync.localsim import SYSTEM_PROGRAM_ID, TOKEN_PROGRAM_ID, Fault, FaultPlan, LocalSimulator
from simsync.localsim.history import History
from simsync.localsim.recorded import RecordingNotFound
from simsync.protocol import AccountDiff, Completed, Paused, ReadyForContinue, ServerError, Slot
from simsync.protocol import Transaction as TxEvent
from simsync.protocol.codec import response_wire
from simsync.recording_format import RecordingError, read
from tests.support import FAST, START

pytestmark = pytest.mark.timeout(240)

PROGRAMS = [SYSTEM_PROGRAM_ID, TOKEN_PROGRAM_ID]
SIMSYNC = str(Path(sys.executable).parent / "simsync")     # the installed console script
SLOTS = 200
END = START + SLOTS - 1
WALLETS = History(0, START, 1000, 1).wallets     # the synthetic history's (seed 0) signers
_URL = re.compile(r"simsync local simulator: (ws://\S+)")


def clean_env() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SIMULATOR_API_KEY"}


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 slots of System and SPL Token history, recorded from a local simulator."""
    out = tmp_path_factory.mktemp("replay") / "r.simrec"
    with LocalSimulator(bundle_size=1000, bundles=1) as sim:
        done = simsync.record(sim.url, str(out), START, END, program_ids=PROGRAMS)
    assert done.complete
    return out


@pytest.fixture
def served(recording: Path) -> Iterator[str]:
    """``simsync serve --recording FILE --port 0`` in another process; yields its URL."""
    proc = subprocess.Popen([SIMSYNC, "serve", "--recording", str(recording), "--port", "0"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=clean_env())
    try:
        yield _read_url(proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            proc.kill()
            proc.wait(timeout=30)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def _read_url(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> str:
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(0.5):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
            found = _URL.search(seen.decode(errors="replace"))
            if found and b"replaying" in seen:
                return found.group(1)
    raise AssertionError(f"simsync serve printed no URL: {seen!r}")


def _transfer(signer: Keypair, to: Pubkey, lamports: int, blockhash: str
              ) -> VersionedTransaction:
    from solders.hash import Hash
    ix = transfer(TransferParams(from_pubkey=signer.pubkey(), to_pubkey=to, lamports=lamports))
    message = MessageV0.try_compile(signer.pubkey(), [ix], [], Hash.from_string(blockhash))
    return VersionedTransaction(message, [signer])


def bot(url: str, transfer_at: Optional[int] = None, to: Optional[Pubkey] = None,
        window: int = 0) -> Dict[str, Any]:
    """Step one block at every pause over the recorded range; read two wallets' balances at
    every 20th pause; at the ``transfer_at``-th pause send a System transfer (wallet 0 to
    ``to``, default wallet 1) with the step, and read its status and the balances at the
    next pause. Returns what it saw."""
    seen: Dict[str, Any] = {"slots": [], "txs": [], "diffs": [], "errors": [], "balances": [],
                            "summary": None, "transfer": None}
    payer, dest = WALLETS[0], to if to is not None else WALLETS[1].pubkey()
    with simsync.Client(url, config=FAST) as client, client.start_session(
            start_slot=START, end_slot=END, send_summary=True,
            disconnect_timeout_secs=window) as session:
        session.subscribe_transactions(PROGRAMS)
        session.subscribe_account_diffs(PROGRAMS)
        pauses = 0
        sent: Optional[str] = None
        while True:
            event = session.next_event(60)
            if isinstance(event, Slot):
                seen["slots"].append(event.slot)
            elif isinstance(event, TxEvent):
                seen["txs"].append(response_wire(event)["params"]["result"])
            elif isinstance(event, AccountDiff):
                seen["diffs"].append(response_wire(event)["params"]["result"])
            elif isinstance(event, ServerError):
                seen["errors"].append(event.message)
            elif isinstance(event, Completed):
                seen["summary"] = event.summary
                return seen
            elif isinstance(event, (ReadyForContinue, Paused)):
                pauses += 1
                rpc = session.rpc
                if pauses % 20 == 0 or sent is not None:
                    balances = [rpc.get_balance(w.pubkey()) for w in WALLETS[:2]]
                    seen["balances"].append((seen["slots"][-1], balances))
                if sent is not None:
                    status = rpc.get_signature_statuses([sent])
                    seen["transfer"] = {"status": status, "balances": [
                        rpc.get_balance(payer.pubkey()), rpc.get_balance(dest)]}
                    sent = None
                txs: List[VersionedTransaction] = []
                if pauses == transfer_at:
                    seen["transfer_slot"] = seen["slots"][-1]
                    blockhash = str(rpc.get_latest_blockhash().blockhash)
                    txs = [_transfer(payer, dest, 12_345, blockhash)]
                    sent = str(txs[0].signatures[0])
                session.send_continue(transactions=txs, timeout=60)


def _recorded(recording: Path) -> Tuple[List[int], List[Any], List[Any], Any]:
    found = read(str(recording))
    streams = found.streams()
    slots = [e["params"] for e in streams["control"] if e["method"] == "slotNotification"]
    txs = [e["params"]["result"] for e in streams.get("transactionNotification", [])]
    diffs = [e["params"]["result"] for e in streams.get("accountDiffNotification", [])]
    summary = streams["control"][-1]["params"]["summary"]
    return slots, txs, diffs, summary


def test_round_trip_through_a_recording_served_by_another_process(
        recording: Path, served: str) -> None:
    slots, txs, diffs, summary = _recorded(recording)
    with LocalSimulator(bundle_size=1000, bundles=1) as sim:
        live = bot(sim.url)
        live_transfer = bot(sim.url, transfer_at=30)
    replay = bot(served)
    assert replay["slots"] == live["slots"] == slots and len(slots) > 150
    assert replay["txs"] == live["txs"] == txs and len(txs) > 200        # signatures, metas
    assert replay["diffs"] == live["diffs"] == diffs and len(diffs) > 400
    assert replay["summary"] == live["summary"]
    assert replay["summary"] is not None and replay["summary"].correct_simulation == \
        summary["correctSimulation"]
    assert replay["balances"] == live["balances"] and len(replay["balances"]) >= 8
    assert replay["errors"] == live["errors"] == []
    # the same user transfer at the same pause: the same result and balances
    replay_transfer = bot(served, transfer_at=30)
    assert replay_transfer["transfer"] == live_transfer["transfer"]
    status = replay_transfer["transfer"]["status"][0]
    assert status is not None and status.err is None
    # wallets 0 and 1 change again later in the recording: the replay says so, live does not
    assert live_transfer["errors"] == []
    wallet = str(WALLETS[0].pubkey())
    assert any("replay diverges" in e and wallet in e for e in replay_transfer["errors"])
    diverged = replay_transfer["summary"].extra["replay"]["diverged"]
    assert {d["account"] for d in diverged} >= {wallet, str(WALLETS[1].pubkey())}
    assert all(d["slot"] > replay_transfer["transfer_slot"] for d in diverged)
    assert "replay" not in live_transfer["summary"].extra


def test_rpc_reads_answer_the_recorded_transactions(recording: Path) -> None:
    _, txs, _, _ = _recorded(recording)
    first = txs[0]
    signature = first["transaction"][0]
    with LocalSimulator(recording=str(recording)) as sim, simsync.Client(
            sim.url, config=FAST) as client, client.start_session(
            start_slot=START, end_slot=END) as session:
        for event in iter(lambda: session.next_event(30), None):
            if isinstance(event, ReadyForContinue):
                if session.cursor.slot > first["slot"]:
                    break
                session.send_continue(timeout=30)
        rpc = session.rpc
        block = rpc.call("getBlock", [first["slot"], {"encoding": "base64",
                                                     "maxSupportedTransactionVersion": 0}])
        got = [t["transaction"][0] for t in block["transactions"]]
        assert got == [t["transaction"][0] for t in txs if t["slot"] == first["slot"]]
        assert signature in got
        sig = str(VersionedTransaction.from_bytes(base64.b64decode(signature)).signatures[0])
        answer = rpc.call("getTransaction", [sig, {"encoding": "base64",
                                                   "maxSupportedTransactionVersion": 0}])
        assert answer["meta"] == first["meta"] and answer["slot"] == first["slot"]
        assert answer["transaction"] == first["transaction"]
        statuses = rpc.call("getSignatureStatuses", [[sig]])["value"]
        assert statuses[0]["slot"] == first["slot"]
        latest = rpc.get_latest_blockhash()
        recorded = {b["slot"]: b for b in read(str(recording)).blocks()}
        here = recorded[session.cursor.slot]
        assert str(latest.blockhash) == here["blockhash"]
        assert latest.last_valid_block_height == here["last_valid_block_height"]


def test_reconnects_during_a_replay_deliver_everything_exactly_once(recording: Path) -> None:
    slots, txs, diffs, _ = _recorded(recording)
    plan = FaultPlan([Fault("drop", after_frames=60, on_connection=1),
                      Fault("drop", after_frames=200, on_connection=2)])
    with LocalSimulator(recording=str(recording), faults=plan) as sim:
        seen = bot(sim.url, window=60)
        assert len(plan.history) == 2            # both drops happened
    assert seen["slots"] == slots
    assert seen["txs"] == txs
    assert seen["diffs"] == diffs


def test_a_transaction_on_an_account_the_recording_never_saw_is_refused(
        recording: Path) -> None:
    stranger = Keypair().pubkey()
    with LocalSimulator(recording=str(recording)) as sim:
        seen = bot(sim.url, transfer_at=3, to=stranger)
        with simsync.Client(sim.url, config=FAST) as client, client.start_session(
                start_slot=START, end_slot=END) as session:
            while not isinstance(session.next_event(30), ReadyForContinue):
                pass
            blockhash = str(session.rpc.get_latest_blockhash().blockhash)
            tx = _transfer(WALLETS[0], stranger, 1, blockhash)
            with pytest.raises(simsync.RpcError, match=str(stranger)):
                session.rpc.send_transaction(tx)
            # installed by the user, it is known: the transfer runs
            session.rpc.modify_accounts({stranger: {
                "data": {"data": "", "encoding": "base64"}, "executable": False,
                "lamports": 1_000_000, "owner": SYSTEM_PROGRAM_ID, "space": 0}})
            session.rpc.send_transaction(tx)
            assert session.rpc.get_balance(stranger) == 1_000_001
    assert any(str(stranger) in e and "never seen by the recording" in e
               for e in seen["errors"])
    assert seen["transfer"]["status"] == [None]          # not executed
    assert seen["transfer"]["balances"][1] == 0


def test_a_prefix_is_served_and_says_so(recording: Path, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    data = recording.read_bytes()
    short = tmp_path / "short.simrec"
    short.write_bytes(data[:len(data) // 2])
    prefix = read(str(short))
    assert not prefix.complete
    announced = [e["params"] for e in prefix.streams()["control"]
                 if e["method"] == "slotNotification"]
    with caplog.at_level(logging.WARNING, logger="simsync.localsim.recorded"):
        sim = LocalSimulator(recording=str(short))
    assert any("incomplete" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)
    last = announced[-2]
    assert sim.history.last_slot == last
    with sim, simsync.Client(sim.url, config=FAST) as client:
        with pytest.raises(simsync.SessionCreateError, match=f"holds slots {START}-{last}"):
            client.start_session(start_slot=START, end_slot=END).close()
        with client.start_session(start_slot=START, end_slot=last,
                                  send_summary=True) as session:
            events = []
            for event in iter(lambda: session.next_event(30), None):
                events.append(event)
                if isinstance(event, Completed):
                    break
                if isinstance(event, ReadyForContinue):
                    session.send_continue(timeout=30)
    warnings = [e.message for e in events if isinstance(e, ServerError)]
    assert len(warnings) == 1 and "incomplete" in warnings[0]
    assert [e.slot for e in events if isinstance(e, Slot)] == announced[:-1]
    summary = events[-1].summary
    assert summary is not None and summary.extra["replay"]["recording"] == "prefix"


def test_missing_and_bad_recordings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(RecordingNotFound, match="no recording at"):
        LocalSimulator(recording=str(tmp_path / "nothing.simrec"))
    plain = tmp_path / "plain.simrec"
    plain.write_text("not a recording\n")
    with pytest.raises(RecordingError, match="not zstandard"):
        LocalSimulator(recording=str(plain))
    assert issubclass(RecordingNotFound, simsync.SimsyncError)
    result = subprocess.run([SIMSYNC, "run", "--recording", str(plain), "--start-slot",
                             str(START), "--end-slot", str(END)], capture_output=True,
                            text=True, timeout=60, env=clean_env(), stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert "not a simsync recording" in result.stderr and "Traceback" not in result.stderr


def test_simsync_run_replays_a_recording(recording: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    result = subprocess.run([SIMSYNC, "run", "--recording", str(recording), "--start-slot",
                             str(START), "--end-slot", str(END), "--output-file", str(out)],
                            capture_output=True, text=True, timeout=120, env=clean_env(),
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert f"replaying {recording}" in result.stderr
    doc = json.loads(out.read_text())
    _, txs, _, _ = _recorded(recording)
    system = [t for t in txs if SYSTEM_PROGRAM_ID in _programs(t)]
    assert len(doc["transactions"]) == len(system) > 0


def _programs(result: Dict[str, Any]) -> List[str]:
    tx = VersionedTransaction.from_bytes(base64.b64decode(result["transaction"][0]))
    keys = tx.message.account_keys
    return [str(keys[ix.program_id_index]) for ix in tx.message.instructions]
