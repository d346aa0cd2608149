"""Live fuzzing: malformed and unknown frames injected into a running session's readers.

The decoder alone is fuzzed in tests/test_protocol_properties.py. Here the frames go through a
real socket, into the control and PubSub readers of a live session, at random frame indexes,
through the local simulator's fault plan (``Fault("malformed", payload=...)`` and
``Fault("unknown_method")``). Payloads come from the golden fixtures in tests/golden
(the malformed set, and mutations of every server→client frame) and from random text and JSON.

Properties: the decoder raises nothing but ``ProtocolError``; the reader logs a malformed frame
and skips it (no reconnect, no failure, no error logged); the session completes with every slot
and every subscribed transaction exactly once, in order.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Iterator, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simsync
from simsync.errors import ProtocolError
from simsync.localsim import Fault, LocalSimulator
from simsync.protocol import UnknownEvent, decode_response
from tests.fixtures import compact, frames, rows
from tests.support import FAST, START, Records, drive, sim, slots
from tests.test_protocol_properties import json_values

pytestmark = pytest.mark.timeout(300)
__all__ = ["sim"]

SYSTEM = "11111111111111111111111111111111"
END = START + 7
LIVE = settings(max_examples=25, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.function_scoped_fixture])

MALFORMED = [str(r["raw"]) for r in rows("malformed.jsonl")]
SOURCES = [compact(r["frame"]) for r in frames("control.jsonl", "s2c")
           + frames("dataplane.jsonl", "s2c")]



def paths(value: Any, prefix: Tuple[Any, ...] = ()) -> Iterator[Tuple[Any, ...]]:
    """Every path to a value nested in ``value`` (dict keys and list indexes)."""
    items = (value.items() if isinstance(value, dict)
             else enumerate(value) if isinstance(value, list) else ())
    for key, inner in items:
        yield prefix + (key,)
        yield from paths(inner, prefix + (key,))


def parent(obj: Any, path: Tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        obj = obj[key]
    return obj


@st.composite
def mutated(draw: Any) -> str:
    """A golden server→client frame, broken in one way."""
    text = draw(st.sampled_from(SOURCES))
    how = draw(st.sampled_from(["truncate", "insert", "delete", "replace", "drop", "rename"]))
    if how in ("truncate", "insert", "delete"):
        i = draw(st.integers(0, len(text) - 1))
        if how == "truncate":
            return text[:i]
        if how == "insert":
            return text[:i] + draw(st.text(min_size=1, max_size=3)) + text[i:]
        return text[:i] + text[i + draw(st.integers(1, 8)):]
    obj = json.loads(text)
    if how == "rename":
        obj.pop("seqId", None)
        obj["method"] = str(obj.get("method", "")) + draw(st.text(min_size=1, max_size=4))
        return json.dumps(obj)
    path = draw(st.sampled_from(list(paths(obj))))
    if how == "replace":
        parent(obj, path)[path[-1]] = draw(json_values)
    else:
        del parent(obj, path)[path[-1]]
    return json.dumps(obj)


random_payloads = (st.sampled_from(MALFORMED) | mutated() | st.text(max_size=60)
                   | json_values.map(json.dumps))


def harmless(payload: str) -> bool:
    """A frame the client must survive without changing the session: a malformed one, or an
    unknown method without a ``seqId``. (A well-formed known frame, or one carrying a
    ``seqId``, is the server speaking — it would rightly change what the user sees.)

    Calls the decoder: any exception but ``ProtocolError`` escapes and fails the test."""
    try:
        seq, event = decode_response(payload)
    except ProtocolError:
        return True
    return seq is None and isinstance(event, UnknownEvent)


#: Frame indexes within what each connection sends (control ~35 frames, PubSub ~14).
LAST_INDEX = {"control": 30, "pubsub": 10}


@st.composite
def injection(draw: Any) -> Tuple[str, str, int, str]:
    channel = draw(st.sampled_from(["control", "pubsub"]))
    return (channel, draw(st.sampled_from(["malformed", "malformed", "unknown_method"])),
            draw(st.integers(0, LAST_INDEX[channel])), draw(random_payloads.filter(harmless)))


injections = st.lists(injection(), min_size=1, max_size=4)


def run_with_injections(server: LocalSimulator, plan: List[Tuple[str, str, int, str]]
                        ) -> None:
    server.faults.clear()
    faults = [server.faults.add(Fault(action, channel=channel, after_frames=index,
                                      payload=payload if action == "malformed" else None))
              for channel, action, index, payload in plan]
    records = Records()
    watched = logging.getLogger("simsync")
    old = watched.level
    watched.addHandler(records)
    watched.setLevel(logging.INFO)
    try:
        with simsync.Client(server.url, config=FAST).start_session(
                start_slot=START, end_slot=END, disconnect_timeout_secs=60) as session:
            session.subscribe_transactions([SYSTEM])
            events = drive(session, timeout=30)
            session_id = session.info.session_id
            # never reconnected, never failed; closed by the delivery of Completed
            assert session.status.reconnects == 0
            assert session.status.state is simsync.State.CLOSED
    finally:
        watched.removeHandler(records)
        watched.setLevel(old)
    # every injection reached a socket; the session saw every slot and transaction once
    assert all(f.fired == 1 for f in faults), [(f.channel, f.after_frames) for f in faults]
    assert slots(events) == server.produced_slots(START, END)
    assert sum(isinstance(e, simsync.ReadyForContinue) for e in events) == len(slots(events))
    assert isinstance(events[-1], simsync.Completed)
    expected = [t.signature for t in server.executed(session_id) if SYSTEM in t.program_ids]
    assert [e.signature for e in events if isinstance(e, simsync.Transaction)] == expected
    # the readers logged and skipped: no reconnect, no error, no crash
    messages = [r.getMessage() for r in records.records]
    assert not [m for m in messages if "RECONNECTING" in m or "FAILED" in m], messages
    assert not [r for r in records.records if r.levelno >= logging.ERROR]
    skipped = sum("ignoring a malformed frame" in m for m in messages)
    malformed = sum(f.action == "malformed" for f in faults)
    assert skipped <= malformed
    unknown = [e for e in events if isinstance(e, simsync.UnknownEvent)]
    assert len(unknown) <= sum(f.channel == "control" for f in faults)
    assert not [e for e in events if isinstance(e, simsync.ServerError)]


@LIVE
@given(plan=injections)
def test_injected_frames_never_break_a_live_session(sim: LocalSimulator,
                                                    plan: List[Tuple[str, str, int, str]]
                                                    ) -> None:
    run_with_injections(sim, plan)


@pytest.mark.parametrize("channel", ["control", "pubsub"])
def test_every_golden_malformed_frame_is_skipped_live(sim: LocalSimulator, channel: str
                                                      ) -> None:
    for start in range(0, len(MALFORMED), 4):
        batch = MALFORMED[start:start + 4]
        assert all(harmless(p) for p in batch)
        run_with_injections(sim, [(channel, "malformed", 2 + 3 * i, payload)
                                  for i, payload in enumerate(batch)])


def test_the_malformed_frames_are_really_read_and_skipped(sim: LocalSimulator) -> None:
    """The check above is not vacuous: a malformed frame in mid-session is read, logged at
    WARNING and skipped."""
    records = Records()
    watched = logging.getLogger("simsync")
    watched.addHandler(records)
    try:
        run_with_injections(sim, [("control", "malformed", 5, "{not json"),
                                  ("pubsub", "malformed", 3, "[1, 2")])
    finally:
        watched.removeHandler(records)
    warnings = [r for r in records.records if r.levelno == logging.WARNING
                and "ignoring a malformed frame" in r.getMessage()]
    assert {r.name for r in warnings} == {"simsync.control", "simsync.subscriptions"}
