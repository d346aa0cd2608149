"""Workers run in other processes: ``run_range`` for process-pool tests (importable by spawned
children, returns plain data), and ``drive_then_crash`` for the model-based test's crash-resume
kind (``python -m tests.workers crash …``: drives a session, persists its cursor after each
event, then SIGKILLs itself mid-step)."""
from __future__ import annotations

import argparse
import json
import os
import signal
from typing import Any, Dict, List, Optional, Tuple

import simsync


def run_range(url: str, start: int, end: int) -> Dict[str, Any]:
    """Run one session in this process and return picklable results."""
    config = simsync.ClientConfig(handshake_timeout=10.0, backoff_initial=0.01,
                                  backoff_max=0.1)
    with simsync.Client(url, config=config).start_session(start_slot=start,
                                                          end_slot=end) as session:
        slots = []
        for event in session.events():
            if isinstance(event, simsync.Slot):
                slots.append(event.slot)
            elif isinstance(event, simsync.ReadyForContinue):
                session.send_continue()
            elif isinstance(event, simsync.Completed):
                return {"range": (start, end), "slots": slots, "completed": event}
    raise AssertionError("the session ended without Completed")


def event_key(event: Any) -> Optional[Tuple[Any, ...]]:
    """A control event as a comparable tuple (None for data-plane events); the model-based
    test compares these with the frames of the simulator's record."""
    if isinstance(event, simsync.Status):
        return ("status", event.status)
    if isinstance(event, simsync.Slot):
        return ("slot", event.slot)
    if isinstance(event, simsync.ReadyForContinue):
        return ("readyForContinue",)
    if isinstance(event, simsync.Paused):
        return ("paused", event.slot, event.batch_index)
    if isinstance(event, simsync.Completed):
        return ("completed",)
    if isinstance(event, simsync.DiscoveryBatch):
        return ("discoveryBatch", event.slot, event.batch_index)
    if isinstance(event, (simsync.Transaction, simsync.AccountDiff)):
        return None
    return ("other", type(event).__name__)


def drive_then_crash(url: str, config: Dict[str, Any], start: int, end: int,
                     detach_window: int, program: Optional[str], advance_count: int,
                     kill_after: int, last_slot: int, out: str) -> None:
    """Create a session, subscribe to ``program``'s transactions (None: no subscription),
    step ``advance_count`` blocks at every pause, and after handling each event append one
    JSON line to ``out``: ``{"key": [...], "signature": ..., "cursor": "..."}`` (the first
    line names the session). Once ``kill_after`` events were handled, or at ``Slot(last_slot)``
    (the session's last produced slot), the process SIGKILLs itself at the next event that
    is not a pause (mid-step: the server runs on). A session that completes first (a fault
    hid that slot) is closed and a ``{"done": true}`` line written."""
    client = simsync.Client(url, config=simsync.ClientConfig(**config))
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def record(body: Dict[str, Any]) -> None:
        os.write(fd, (json.dumps(body) + "\n").encode())     # one write: never torn

    session = client.start_session(start_slot=start, end_slot=end,
                                   disconnect_timeout_secs=detach_window)
    record({"session_id": session.info.session_id})
    if program is not None:
        session.subscribe_transactions([program])
    handled = 0
    while True:
        event = session.next_event(30.0)
        handled += 1
        record({"key": event_key(event),
                "signature": getattr(event, "signature", None)
                if isinstance(event, simsync.Transaction) else None,
                "cursor": session.cursor.to_json()})
        if isinstance(event, simsync.Completed):
            session.close()
            record({"done": True})
            return
        pause = isinstance(event, (simsync.ReadyForContinue, simsync.Paused))
        last = isinstance(event, simsync.Slot) and event.slot >= last_slot
        if (handled >= kill_after or last) and not pause:
            os.kill(os.getpid(), signal.SIGKILL)
        if pause:
            session.send_continue(advance_count=advance_count, timeout=30.0)


def main(argv: Optional[List[str]] = None) -> None:
    """``python -m tests.workers crash URL CONFIG_JSON START END WINDOW PROGRAM|- ADVANCE
    KILL_AFTER LAST_SLOT OUT`` (the model-based test's crash-resume kind)."""
    parser = argparse.ArgumentParser(prog="python -m tests.workers")
    parser.add_argument("command", choices=["crash"])
    parser.add_argument("url")
    parser.add_argument("config")
    parser.add_argument("start", type=int)
    parser.add_argument("end", type=int)
    parser.add_argument("window", type=int)
    parser.add_argument("program")
    parser.add_argument("advance_count", type=int)
    parser.add_argument("kill_after", type=int)
    parser.add_argument("last_slot", type=int)
    parser.add_argument("out")
    args = parser.parse_args(argv)
    drive_then_crash(args.url, json.loads(args.config), args.start, args.end, args.window,
                     None if args.program == "-" else args.program, args.advance_count,
                     args.kill_after, args.last_slot, args.out)


if __name__ == "__main__":
    main()
