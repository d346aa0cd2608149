"""``GET /usage`` of the local simulator: a ledger of its sessions, by creation time.

The answer is one JSON object with snake_case fields (what the service uses)::

    {"since": "...Z" or null, "until": "...Z" or null, "sessions_started": 3,
     "sessions_completed": 2, "sessions_failed": 1, "executed_slot_count": 250,
     "session_duration": 71.5}

Rules (this simulator's; the service publishes none):

* Every figure is over the sessions *created* in ``[since, until)`` (each bound optional,
  ISO-8601; a time without an offset is UTC). A parallel batch counts each sub-session.
* ``sessions_completed``: those that reached ``completed``. ``sessions_failed``: those that
  ended otherwise and not by the client's close: the control connection dropped with no
  detach window, or the window ran out. (A session the client closed early is neither.)
* ``executed_slot_count``: blocks they executed so far (skipped slots are not counted).
* ``session_duration``: the total (sum) of their wall-clock lifetimes in seconds, from
  creation to their end, or to the request for a session still alive.

The ledger lives on the event-loop thread (`Registry` calls it); the handler runs there too.
The API key is required like on the control upgrade when the simulator has one (401).
"""
from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from aiohttp import web

UTC = datetime.timezone.utc


@dataclass
class _Entry:
    created: datetime.datetime
    started_mono: float
    session: Any = None            # the live BacktestSession; dropped when it ends
    ended_mono: Optional[float] = None
    outcome: str = "live"          # live, completed, failed, closed
    executed_slots: int = 0


class UsageLedger:
    """One entry per session ever created (event-loop thread only)."""

    def __init__(self) -> None:
        self._entries: Dict[str, _Entry] = {}

    def started(self, session: Any) -> None:
        self._entries[session.id] = _Entry(datetime.datetime.now(UTC), time.monotonic(),
                                           session)

    def completed(self, session: Any) -> None:
        entry = self._entries.get(session.id)
        if entry is not None:
            entry.outcome = "completed"

    def lost(self, sessions: List[Any]) -> None:
        """These sessions end because their client went away (no close): failed."""
        for session in sessions:
            entry = self._entries.get(session.id)
            if entry is not None and entry.outcome == "live":
                entry.outcome = "failed"

    def ended(self, session: Any) -> None:
        entry = self._entries.get(session.id)
        if entry is None or entry.ended_mono is not None:
            return
        entry.ended_mono = time.monotonic()
        entry.executed_slots = _executed(session)
        entry.session = None
        if entry.outcome == "live":
            entry.outcome = "closed"

    def report(self, since: Optional[datetime.datetime],
               until: Optional[datetime.datetime]) -> Dict[str, Any]:
        now = time.monotonic()
        chosen = [e for e in self._entries.values()
                  if (since is None or e.created >= since) and (until is None or e.created < until)]
        return {
            "since": _text(since), "until": _text(until),
            "sessions_started": len(chosen),
            "sessions_completed": sum(1 for e in chosen if e.outcome == "completed"),
            "sessions_failed": sum(1 for e in chosen if e.outcome == "failed"),
            "executed_slot_count": sum(e.executed_slots if e.session is None
                                       else _executed(e.session) for e in chosen),
            "session_duration": round(sum((e.ended_mono if e.ended_mono is not None else now)
                                          - e.started_mono for e in chosen), 6),
        }


def _executed(session: Any) -> int:
    """Blocks a localsim ``BacktestSession`` finished (its slot cursor)."""
    return int(getattr(session, "idx", 0))


def _text(when: Optional[datetime.datetime]) -> Optional[str]:
    return None if when is None else when.isoformat().replace("+00:00", "Z")


def _bound(request: web.Request, name: str) -> Optional[datetime.datetime]:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = datetime.datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} is not an ISO-8601 time") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def usage_handler(ledger: UsageLedger, key_ok: Callable[[web.Request], bool]
                  ) -> Callable[[web.Request], Any]:
    """The aiohttp handler of ``GET /usage`` (401 without the key when one is set, 400 for
    a bad ``since``/``until``)."""
    async def usage(request: web.Request) -> web.Response:
        if not key_ok(request):
            return web.Response(status=401, text="invalid API key")
        since, until = _bound(request, "since"), _bound(request, "until")
        if since is not None and until is not None and since > until:
            return web.Response(status=400, text="since is after until")
        return web.json_response(ledger.report(since, until))
    return usage


__all__ = ["UsageLedger", "usage_handler"]
