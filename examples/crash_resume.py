"""Resume a session from another process after a crash, exactly once.

A worker process runs a session with a transaction subscription and, after handling each
event, appends the event and ``session.cursor.to_json()`` to a journal file. The parent kills
it with SIGKILL mid-session, attaches to the same session with the last persisted cursor
(``Client.attach_session``), and drives it to the end. The union of what the two processes
saw is checked against the server's own record: every slot and every transaction exactly
once.

    python examples/crash_resume.py                    # an embedded simulator
    python examples/crash_resume.py --url ws://HOST:PORT/backtest --api-key KEY
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import simsync

SYSTEM = "11111111111111111111111111111111"
START = 400_000_000
END = START + 40


def record(event: simsync.Event) -> Optional[Dict[str, Any]]:
    """What the journal keeps of an event (slots and transactions)."""
    if isinstance(event, simsync.Slot):
        return {"slot": event.slot}
    if isinstance(event, simsync.Transaction):
        return {"signature": event.signature, "tx_slot": event.slot}
    return None


def handle(session: simsync.Session, event: simsync.Event, journal: Any) -> None:
    """Handle one event, then persist it with the cursor (one line, flushed and synced)."""
    line = {"event": record(event), "cursor": session.cursor.to_json()}
    journal.write(json.dumps(line) + "\n")
    journal.flush()
    os.fsync(journal.fileno())
    if isinstance(event, (simsync.ReadyForContinue, simsync.Paused)):
        session.send_continue(timeout=30)


def worker(url: str, api_key: Optional[str], journal_path: str, created: Any) -> None:
    """The first process: create, subscribe, step until killed."""
    client = simsync.Client(url, api_key=api_key)
    session = client.start_session(start_slot=START, end_slot=END,
                                   disconnect_timeout_secs=300)
    session.subscribe_transactions([SYSTEM])
    created.put(session.info.session_id)
    with open(journal_path, "a", encoding="utf-8") as journal:
        for event in session.events():
            handle(session, event, journal)
            time.sleep(0.01)        # a bot's work per event; the kill lands mid-session


def read_journal(path: str) -> List[Dict[str, Any]]:
    with open(path, encoding="utf-8") as journal:
        lines = journal.read().splitlines()
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break                   # a line the kill cut short: never handled
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a simulator (default: an embedded local one)")
    parser.add_argument("--api-key", default=os.environ.get("SIMULATOR_API_KEY"))
    parser.add_argument("--kill-after", type=int, default=25,
                        help="events the worker handles before it is killed")
    args = parser.parse_args(argv)
    sim = None
    url = args.url
    if url is None:
        from simsync.localsim import LocalSimulator
        sim = LocalSimulator().start()
        url = sim.url
    try:
        return run(url, args.api_key, args.kill_after, sim)
    finally:
        if sim is not None:
            sim.stop()


def run(url: str, api_key: Optional[str], kill_after: int, sim: Any) -> int:
    spawn = multiprocessing.get_context("spawn")
    created = spawn.Queue()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "journal.jsonl")
        open(path, "w").close()
        process = spawn.Process(target=worker, args=(url, api_key, path, created))
        process.start()
        session_id = created.get(timeout=60)
        deadline = time.monotonic() + 60
        while len(read_journal(path)) < kill_after and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.join()
        created.close()
        created.join_thread()
        first = read_journal(path)
        print(f"worker killed after {len(first)} handled events (exit code {process.exitcode})")

        cursor = simsync.SessionCursor.from_json(first[-1]["cursor"])
        client = simsync.Client(url, api_key=api_key)
        second: List[Dict[str, Any]] = []
        with client.attach_session(session_id, cursor) as session:
            for event in session.events():
                second.append({"event": record(event)})
                if isinstance(event, (simsync.ReadyForContinue, simsync.Paused)):
                    session.send_continue(timeout=30)
        print(f"the new process handled {len(second)} more events")
    return check(sim, session_id, first + second)


def check(sim: Any, session_id: str, lines: List[Dict[str, Any]]) -> int:
    events = [line["event"] for line in lines if line["event"]]
    slots = [e["slot"] for e in events if "slot" in e]
    signatures = [e["signature"] for e in events if "signature" in e]
    print(f"together: {len(slots)} slots, {len(signatures)} transactions")
    if sim is None:
        ok = len(slots) == len(set(slots)) and len(signatures) == len(set(signatures))
        print("no duplicates" if ok else "DUPLICATES")
        return 0 if ok else 1
    expected_slots = sim.produced_slots(START, END)
    expected = [t.signature for t in sim.executed(session_id) if SYSTEM in t.program_ids]
    ok = slots == expected_slots and signatures == expected
    print(f"server record: {len(expected_slots)} slots, {len(expected)} transactions: "
          + ("each seen exactly once, in order" if ok else "MISMATCH"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
