"""``simsync.record``: drive one session over a slot range and write everything it shows to a
recording file (``simsync.recording_format``), as it goes; ``resume=True`` continues a file
cut short (a killed recorder) from its last cursor, through ``Client.attach_session``.

Runs on the calling thread and blocks on the session's events, one step (one block) at a
time; at every pause it records the block's blockhash (``getLatestBlockhash``) and a cursor.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import urllib.parse
from typing import Any, Dict, Iterable, List, Optional, Set, Union

from simsync._version import __version__
from simsync.client import Client
from simsync.cursor import SessionCursor
from simsync.errors import EventTimeout, SimsyncError
from simsync.protocol import (
    AccountDiff,
    Completed,
    Paused,
    ReadyForContinue,
    ServerError,
    Slot,
    Transaction,
)
from simsync.protocol.codec import response_wire
from simsync.protocol.types import Notification
from simsync.recording_format import (
    FORMAT,
    VERSION,
    Recording,
    RecordingError,
    RecordingWriter,
    read,
)
from simsync.runoutput import SYSTEM_PROGRAM_ID, NoObserver, RunObserver
from simsync.session import Session

TICK = 0.2          # longest wait for an event before the observer is ticked
DETACH_WINDOW = 300  # seconds the service keeps a session whose recorder died (for --resume)
_PAUSES = (ReadyForContinue, Paused)
#: The ``subscription`` a recording's notifications carry: the recording's own, the same in
#: every recording (a server numbers each connection's subscriptions its own way).
SUBSCRIPTION_IDS = {"transactionNotification": 1, "accountDiffNotification": 2}


def _host(url: str) -> str:
    """The host and port of ``url`` (no user info, path or query: no secret travels)."""
    parts = urllib.parse.urlsplit(url)
    return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else ""


def _header(url: str, start_slot: int, end_slot: int, programs: List[str],
            accounts: List[str]) -> Dict[str, Any]:
    stamp = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return {"type": "header", "format": FORMAT, "version": VERSION, "host": _host(url),
            "start_slot": start_slot, "end_slot": end_slot, "programs": programs,
            "accounts": accounts, "created_at": stamp.isoformat().replace("+00:00", "Z"),
            "simsync_version": __version__,
            "not_seen": ["transactions that neither invoke a recorded program nor reference a "
                         "recorded account, and their account diffs",
                         "the state of accounts no recorded transaction changed"]}


class _Recorder:
    """One recording in progress (user thread)."""

    def __init__(self, session: Session, writer: RecordingWriter, accounts: Iterable[str],
                 observer: RunObserver, skip_pause: Optional[Dict[str, Any]] = None,
                 slot: Optional[int] = None) -> None:
        self.session = session
        self.writer = writer
        self.observer = observer
        self.untouched: Set[str] = set(accounts)
        self.skip_pause = skip_pause      # a pause already recorded (resumed at it)
        self.slot = slot              # the last slot announced

    def run(self) -> Completed:
        while True:
            try:
                event = self.session.next_event(TICK)
            except EventTimeout:
                self.observer.tick()
                continue
            self.observer.event()
            completed = self.handle(event)
            self.observer.tick()
            if completed is not None:
                return completed

    def handle(self, event: Any) -> Optional[Completed]:
        wire = response_wire(event)
        if isinstance(event, (Transaction, AccountDiff)):    # the server's per-connection id
            wire["params"]["subscription"] = SUBSCRIPTION_IDS[type(event).METHOD]
        if isinstance(event, _PAUSES) and self.skip_pause is not None:
            again = wire == self.skip_pause
            self.skip_pause = None
            # A step always sends control frames (status, slot) before its pause (PROTOCOL.md
            # §13): a pause before any after attaching is the recorded one announced again,
            # whose step never reached the server. (Replayed notifications may come first.)
            if again:
                self.session.send_continue(advance_count=1)
                return None
        if not isinstance(event, (Transaction, AccountDiff, Notification)):
            self.skip_pause = None    # a step's control frame: a later pause is a new one
        self.writer.write({"type": "event", "wire": wire})
        if isinstance(event, _PAUSES):
            block = self.session.rpc.get_latest_blockhash()
            self.writer.write({"type": "block", "slot": self.slot,
                               "blockhash": str(block.blockhash),
                               "last_valid_block_height": block.last_valid_block_height})
            self.writer.write({"type": "cursor", "cursor": self.session.cursor.to_json()})
            self.writer.flush()
            self.session.send_continue(advance_count=1)
        elif isinstance(event, Slot):
            self.slot = event.slot
            self.observer.slot("main", event.slot)
        elif isinstance(event, AccountDiff):
            self.untouched.discard(event.account)
        elif isinstance(event, ServerError) and event.rejects_request:
            raise SimsyncError(f"the server rejected a step of the recording: {event.message}")
        elif isinstance(event, Completed):
            self.writer.write({"type": "end", "accounts_not_touched": sorted(self.untouched)})
            self.writer.flush()
            self.observer.finished("main")
            return event
        return None


def _resumable(path: str) -> Optional[Recording]:
    """The recording to continue at ``path``, or ``None`` to start afresh (no file, or no
    cursor in it yet)."""
    if not os.path.exists(path):
        return None
    try:
        found = read(path)
    except RecordingError:
        if os.path.getsize(path) == 0:
            return None
        raise
    return found if found.last_cursor() is not None or found.complete else None


def record(client: Union[Client, str], output: str, start_slot: int, end_slot: int, *,
           program_ids: Iterable[Any] = (), accounts: Iterable[Any] = (),
           resume: bool = False, api_key: Optional[str] = None,
           observer: Optional[RunObserver] = None,
           disconnect_timeout_secs: int = DETACH_WINDOW) -> Recording:
    """Record slots ``start_slot..end_slot`` into ``output`` (a ``simsync.recording_format``
    file) and return it decoded.

    ``client``: a ``Client`` or a simulator URL (with ``api_key``). Records the transactions
    (full meta) and account diffs of ``program_ids`` (base58; the System program when neither
    these nor ``accounts`` are given) and of ``accounts``, every control event, and each
    block's blockhash. ``resume=True`` continues a recording cut short at ``output`` from its
    last cursor (the session must still be in its detach window, ``disconnect_timeout_secs``
    seconds); a complete one is returned as it is. Calling thread; blocks until ``Completed``.
    Raises ``RecordingError`` for a file that cannot be continued, and what the session
    raises (``SessionCreateError``, ``ControlFailed``, ``SimsyncError`` for a rejected step)."""
    own = not isinstance(client, Client)
    made = Client(client, api_key=api_key) if isinstance(client, str) else client
    programs = [str(p) for p in program_ids]
    keys = [str(k) for k in accounts]
    if not programs and not keys:
        programs = [SYSTEM_PROGRAM_ID]
    seen = observer if observer is not None else NoObserver()
    try:
        previous = _resumable(output) if resume else None
        if previous is not None and previous.complete:
            return previous
        if previous is not None:
            return _continue(made, output, previous, seen)
        with made.start_session(start_slot=start_slot, end_slot=end_slot, send_summary=True,
                                disconnect_timeout_secs=disconnect_timeout_secs) as session:
            writer = RecordingWriter(output)
            try:
                writer.write(_header(made.url, start_slot, end_slot, programs, keys))
                writer.flush()
                session.subscribe_transactions(programs, keys)
                session.subscribe_account_diffs(programs, keys)
                _watch(seen, session, start_slot, end_slot)
                _Recorder(session, writer, keys, seen).run()
            finally:
                writer.close()
        return read(output)
    finally:
        if own:
            made.close()


def _watch(seen: RunObserver, session: Session, start_slot: int, end_slot: int) -> None:
    seen.watch(lambda: session.status)
    seen.track("main", start_slot, end_slot)


def _continue(client: Client, output: str, previous: Recording, seen: RunObserver
              ) -> Recording:
    """Cut ``output`` after its last cursor and continue the session from there."""
    found = previous.last_cursor()
    assert found is not None
    index, text = found
    cursor = SessionCursor.from_json(text)
    pause = next(r["wire"] for r in reversed(previous.records[:index])
                 if r.get("type") == "event")
    # The cursor record closes a frame (it is written just before a flush): keep the whole
    # frames up to it. Frames after it were flushed only by a later pause's cursor, so the
    # last cursor ends the file's whole frames.
    writer = RecordingWriter(output, append_at=previous.good_bytes)
    try:
        with client.attach_session(cursor.session_id, cursor) as session:
            header = previous.header
            _watch(seen, session, header["start_slot"], header["end_slot"])
            with contextlib.suppress(KeyError):
                seen.slot("main", cursor.slot)
            untouched = set(header["accounts"]) - {
                r["wire"]["params"]["result"]["account"] for r in previous.records
                if r.get("type") == "event"
                and r["wire"].get("method") == "accountDiffNotification"}
            _Recorder(session, writer, untouched, seen, skip_pause=pause,
                      slot=cursor.slot).run()
    finally:
        writer.close()
    return read(output)


__all__ = ["record"]
