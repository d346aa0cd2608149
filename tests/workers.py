"""A worker for process-pool tests: importable by spawned children, returns plain data."""
from __future__ import annotations

from typing import Any, Dict

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
