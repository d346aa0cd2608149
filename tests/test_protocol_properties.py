"""Property tests of the codec: encode → decode is the identity for every request and
response type, and no input makes a decoder raise anything but ``ProtocolError``.

Normalisations of the codec (inherent, not bugs), each checked explicitly below:

* ``ServerError``: ``decode`` keeps the params as received in ``raw``, lower-cases the first
  letter of the variant (``SessionNotFound`` → ``sessionNotFound``) and snake_cases the
  field names (``startSlot`` → ``start_slot``); a non-object field value ``v`` becomes
  ``{"error": v}`` and ``null`` fields become ``{}``. So a ``ServerError`` built with
  ``raw=None`` decodes with ``raw`` set to its wire params; one built from a wire form
  (``kind``/``fields`` as the decoder derives them, ``raw`` the wire params) is exact.
* PubSub frames (``Transaction``, ``AccountDiff``, ``Notification``, ``SubscriptionAck``,
  ``SubscriptionRefused``, ``SubscriptionComplete``) are never sequenced (PROTOCOL.md §2 is
  about the control channel): ``encode_response(r, seq_id)`` ignores ``seq_id`` and
  ``decode_response`` returns ``(None, r)``.
* ``Transaction.signature_hint`` is ``compare=False``; it is checked on its own.
* ``encode_request(Subscribe(...))`` is a JSON-RPC 2.0 frame in the order of the golden
  fixtures (``jsonrpc``, ``id``, ``method``, ``params``); every control request starts with
  ``method``.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simsync.protocol as P
import simsync.protocol.types as protocol_types
from simsync.protocol.server_errors import snake_case
from tests.fixtures import compact, frames

pytestmark = pytest.mark.timeout(120)

#: Reproducible and bounded: no example database, derandomised, no deadline.
PROPERTY = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

# ----------------------------------------------------------------------------- strategies

#: Finite floats only: ``NaN != NaN`` would break equality (and ``NaN`` is not JSON).
json_scalars = (st.none() | st.booleans() | st.integers(-(2**64), 2**64)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda inner: (st.lists(inner, max_size=4)
                   | st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)

texts = st.text(max_size=24)
ints = st.integers(-(2**63), 2**64)
nat = st.integers(0, 2**64)
opt_int = st.none() | ints
seq_ids = st.none() | ints

#: Every method PROTOCOL.md §4 names (plus the legacy decode-only ones): never "unknown".
KNOWN_METHODS = frozenset({
    "sessionCreated", "sessionAttached", "sessionsCreatedV2", "parallelSessionAttachedV2",
    "readyForContinue", "slotNotification", "paused", "discoveryBatch", "status", "error",
    "success", "completed", "sessionEventV2", "sessionsCreated", "sessionEventV1",
})
#: PubSub methods with their own types; any other ``…Notification`` is a ``Notification``.
PUBSUB_METHODS = frozenset({"transactionNotification", "accountDiffNotification",
                            "subscriptionComplete"})
REQUEST_METHODS = ("createBacktestSession", "continue", "continueTo", "closeBacktestSession",
                   "attachBacktestSession", "resumeAttachedSession", "continueSessionV1",
                   "continueToSessionV1", "closeSessionV1", "attachParallelControlSessionV2")

CREATE_WIRE_NAMES = frozenset(wire for _, wire in protocol_types.CREATE_FIELDS)
OPAQUE_CREATE_FIELDS = ("actions", "reroute", "diagnosticProbes", "preloadPrograms", "agents")

# --- requests


@st.composite
def create_params(draw: Any) -> P.CreateSessionParams:
    start = draw(nat)
    end = draw(st.integers(start, start + 2**20))
    extra_keys = st.sampled_from(OPAQUE_CREATE_FIELDS) | texts.filter(
        lambda k: k not in CREATE_WIRE_NAMES)
    return P.CreateSessionParams(
        start, end,
        signer_filter=draw(st.none() | st.lists(texts, max_size=3)),
        send_summary=draw(st.none() | st.booleans()),
        parallel=draw(st.none() | st.booleans()),
        disconnect_timeout_secs=draw(st.none() | st.integers(0, 900)),
        capacity_wait_timeout_secs=draw(st.none() | nat),
        extra_compute_units=draw(st.none() | nat),
        discoveries=draw(st.none() | st.lists(json_objects, max_size=3)),
        replay_account_state=draw(st.none() | st.booleans()),
        extra=draw(st.dictionaries(extra_keys, json_values, max_size=4)))


account_data = st.builds(
    P.AccountData, st.builds(P.EncodedData, texts, st.sampled_from(["base64", "base58"]) | texts),
    st.booleans(), nat, texts, nat)
continue_params = st.builds(
    P.ContinueParams, st.integers(1, 2**32),
    st.lists(texts, max_size=3).map(tuple),
    st.dictionaries(texts, account_data, max_size=3))

requests = st.one_of(
    st.builds(P.CreateBacktestSession, create_params()),
    st.builds(P.Continue, continue_params),
    st.builds(P.ContinueTo, nat, st.none() | nat),
    st.just(P.CloseBacktestSession()),
    st.builds(P.AttachBacktestSession, texts, st.none() | ints),
    st.just(P.ResumeAttachedSession()),
    st.builds(P.ContinueSessionV1, texts, continue_params),
    st.builds(P.ContinueToSessionV1, texts, nat, st.none() | nat),
    st.builds(P.CloseSessionV1, texts),
    st.builds(P.AttachParallelControlSessionV2, texts,
              st.dictionaries(texts, st.none() | ints, max_size=4)),
    st.builds(P.Subscribe, ints, texts, json_objects, json_objects),
)

# --- responses

#: (wire spelling, snake_case the decoder derives) of error field names.
ERROR_FIELD_SPELLINGS = {
    "session_id": ("session_id", "sessionId", "SessionId"),
    "start_slot": ("start_slot", "startSlot"),
    "end_slot": ("end_slot", "endSlot"),
    "session_name": ("session_name", "sessionName"),
    "error": ("error", "Error"),
    "index": ("index",),
    "address": ("address",),
    "slot": ("slot",),
    "reason": ("reason",),
}
variant_names = st.sampled_from(sorted(P.FATAL_ERRORS | P.NON_FATAL_ERRORS)) | st.from_regex(
    r"\A[a-z][A-Za-z0-9]{0,15}\Z")
pascal = st.sampled_from(["lower", "upper"])


@st.composite
def wire_errors(draw: Any) -> Tuple[Any, P.ServerError]:
    """An ``error`` params value in any accepted form, and the ServerError it decodes to."""
    kind = draw(variant_names)
    name = kind[0].upper() + kind[1:] if draw(pascal) == "upper" else kind
    shape = draw(st.sampled_from(["bare", "fields", "null", "scalar"]))
    if shape == "bare":
        return name, P.ServerError(kind, {}, name)
    if shape == "null":
        raw: Any = {name: None}
        return raw, P.ServerError(kind, {}, raw)
    if shape == "scalar":
        value = draw(st.text(max_size=12) | st.integers() | st.lists(st.integers(), max_size=2))
        raw = {name: value}
        return raw, P.ServerError(kind, {"error": value}, raw)
    fields = draw(st.dictionaries(st.sampled_from(sorted(ERROR_FIELD_SPELLINGS)), json_values,
                                  max_size=3))
    wire_fields = {draw(st.sampled_from(ERROR_FIELD_SPELLINGS[k])): v for k, v in fields.items()}
    raw = {name: wire_fields}
    return raw, P.ServerError(kind, fields, raw)


#: ServerErrors in the decoder's own form (exact round trip).
decoded_errors = wire_errors().map(lambda pair: pair[1])

#: Summary wire names in both casings: ``extra`` must not repeat them.
SUMMARY_NAMES = ("correct_simulation", "incorrect_simulation", "execution_errors",
                 "balance_diff", "log_diff", "unsanitizable", "reroute_stats")
SUMMARY_WIRE = frozenset(SUMMARY_NAMES) | frozenset(
    n.split("_")[0] + "".join(w.title() for w in n.split("_")[1:]) for n in SUMMARY_NAMES)
summaries = st.builds(
    P.Summary, *(st.none() | nat for _ in range(6)), json_values,
    st.dictionaries(texts.filter(lambda k: k not in SUMMARY_WIRE), json_values, max_size=3))
completed = st.builds(P.Completed, st.none() | summaries,
                      st.none() | st.lists(json_objects, max_size=3))
opt_text = st.none() | texts

#: The events a ``sessionEventV2`` may carry (PROTOCOL.md §4).
control_events = st.one_of(
    st.just(P.ReadyForContinue()), st.builds(P.Slot, ints),
    st.builds(P.Paused, ints, opt_int),
    st.builds(P.DiscoveryBatch, ints, ints, st.lists(json_values, max_size=3),
              st.lists(json_values, max_size=3)),
    decoded_errors, st.just(P.Success()), completed, st.builds(P.Status, texts))

control_responses = st.one_of(
    st.builds(P.SessionCreated, texts, texts, opt_text),
    st.builds(P.SessionAttached, texts, texts, opt_text),
    st.builds(P.SessionsCreatedV2, texts, st.lists(texts, max_size=4),
              st.lists(opt_text, max_size=4), st.none() | st.lists(ints, max_size=4),
              st.none() | st.lists(ints, max_size=4)),
    st.builds(P.SessionsCreated, st.lists(texts, max_size=4)),
    st.builds(P.ParallelSessionAttachedV2, texts, st.lists(texts, max_size=4),
              st.lists(opt_text, max_size=4)),
    control_events,
    st.builds(P.SessionEventV2, texts, opt_int, control_events),
    st.builds(P.SessionEventV1, texts, control_events),
    st.builds(P.UnknownResponse, texts.filter(lambda m: m not in KNOWN_METHODS), json_values),
)

pubsub_responses = st.one_of(
    st.builds(P.SubscriptionAck, ints, ints),
    st.builds(P.SubscriptionRefused, opt_int, opt_int, texts),
    st.builds(P.SubscriptionComplete, ints),
    st.builds(P.Transaction, ints, ints, json_values, st.none() | json_objects, opt_int,
              json_values, opt_text),
    st.builds(P.AccountDiff, ints, ints, texts, texts, st.none() | json_objects,
              st.none() | json_objects),
    st.builds(P.Notification, texts.filter(lambda m: m not in PUBSUB_METHODS), ints,
              json_values),
)

# ----------------------------------------------------------------------------- requests


@PROPERTY
@given(requests)
def test_request_round_trip(request: P.Request) -> None:
    assert P.decode_request(P.encode_request(request)) == request


@PROPERTY
@given(requests)
def test_request_encoding_is_compact_canonical_json(request: P.Request) -> None:
    text = P.encode_request(request)
    obj = json.loads(text)
    # compact separators, nothing else: re-dumping the parsed object gives the same text
    assert text == json.dumps(obj, separators=(",", ":"))
    keys = list(obj)
    if isinstance(request, P.Subscribe):
        assert keys == ["jsonrpc", "id", "method", "params"]
        assert obj["method"] == request.kind
    else:
        assert keys[0] == "method"
        assert obj["method"] == request.METHOD
        assert keys in (["method"], ["method", "params"])


@PROPERTY
@given(st.one_of(st.builds(P.ContinueSessionV1, texts, continue_params),
                 st.builds(P.ContinueToSessionV1, texts, nat, st.none() | nat),
                 st.builds(P.CloseSessionV1, texts)))
def test_v1_wrappers_round_trip_in_the_nested_layout_too(request: P.Request) -> None:
    flat = P.encode_request(request)
    saved = protocol_types.V1_LAYOUT
    protocol_types.V1_LAYOUT = "nested"
    try:
        nested = P.encode_request(request)
    finally:
        protocol_types.V1_LAYOUT = saved
    assert P.decode_request(nested) == request
    assert P.decode_request(flat) == request
    if not isinstance(request, P.CloseSessionV1):
        assert set(json.loads(nested)["params"]) == {"sessionId", "request"}


def test_flat_is_the_default_v1_layout() -> None:
    assert protocol_types.V1_LAYOUT == "flat"
    text = P.encode_request(P.ContinueSessionV1("s", P.ContinueParams(5)))
    assert text == '{"method":"continueSessionV1","params":{"sessionId":"s","advanceCount":5}}'


# ----------------------------------------------------------------------------- responses


@PROPERTY
@given(control_responses, seq_ids)
def test_control_response_round_trip(response: Any, seq_id: Optional[int]) -> None:
    assert P.decode_response(P.encode_response(response, seq_id)) == (seq_id, response)


@PROPERTY
@given(pubsub_responses, seq_ids)
def test_pubsub_response_round_trip(response: Any, seq_id: Optional[int]) -> None:
    # PubSub frames are never sequenced: the seq id is not written and decodes as None.
    text = P.encode_response(response, seq_id)
    assert text == P.encode_response(response)
    assert "seqId" not in json.loads(text)
    assert P.decode_response(text) == (None, response)
    if isinstance(response, P.Transaction):
        decoded: Any = P.decode_response(text)[1]
        assert decoded.signature_hint == response.signature_hint  # compare=False field


@PROPERTY
@given(wire_errors(), seq_ids)
def test_error_wire_forms_decode_to_their_normal_form(pair: Tuple[Any, P.ServerError],
                                                      seq_id: Optional[int]) -> None:
    raw, expected = pair
    frame: Dict[str, Any] = {"method": "error", "params": raw}
    if seq_id is not None:
        frame = {"seqId": seq_id, **frame}
    assert P.decode_response(compact(frame)) == (seq_id, expected)
    # the normal form re-encodes to the very params it came from
    assert json.loads(P.encode_response(expected))["params"] == raw


@PROPERTY
@given(variant_names, st.dictionaries(st.from_regex(r"\A[a-z][a-z0-9_]{0,10}\Z"), json_values,
                                      max_size=3), seq_ids)
def test_error_built_without_raw_gains_raw_on_decode(kind: str, fields: Dict[str, Any],
                                                     seq_id: Optional[int]) -> None:
    error = P.ServerError(kind, fields)
    seq, decoded_error = P.decode_response(P.encode_response(error, seq_id))
    decoded: Any = decoded_error
    assert seq == seq_id
    assert (decoded.kind, decoded.fields) == (error.kind, error.fields)
    assert decoded.raw == ({kind: fields} if fields else kind)
    assert decoded == dataclasses.replace(error, raw=decoded.raw)
    assert decoded.fatal == error.fatal


@PROPERTY
@given(variant_names, st.dictionaries(st.sampled_from(["startSlot", "sessionId", "Error",
                                                       "endSlot", "index"]),
                                      json_values, min_size=1, max_size=3))
def test_error_field_names_are_snake_cased(kind: str, fields: Dict[str, Any]) -> None:
    upper = P.ServerError(kind[0].upper() + kind[1:], fields)
    decoded: Any = P.decode_response(P.encode_response(upper))[1]
    assert decoded.kind == kind
    assert decoded.fields == {snake_case(k): v for k, v in fields.items()}


@PROPERTY
@given(st.sampled_from(["sessionEventV2", "sessionEventV1"]), texts, opt_int,
       variant_names, st.dictionaries(st.sampled_from(["error", "slot"]), json_values,
                                      max_size=2))
def test_wrapped_error_gains_raw_too(method: str, session_id: str, seq: Optional[int],
                                     kind: str, fields: Dict[str, Any]) -> None:
    error = P.ServerError(kind, fields)
    wrapper = (P.SessionEventV2(session_id, seq, error) if method == "sessionEventV2"
               else P.SessionEventV1(session_id, error))
    decoded: Any = P.decode_response(P.encode_response(wrapper))[1]
    assert decoded.event == dataclasses.replace(error, raw=decoded.event.raw)


def test_known_methods_are_known_and_pubsub_is_separate() -> None:
    for method in KNOWN_METHODS:
        try:
            response = P.decode_response(compact({"method": method}))[1]
        except P.ProtocolError:
            continue  # known, but needs params
        assert not isinstance(response, P.UnknownResponse), method
    note = P.decode_response(compact({"jsonrpc": "2.0", "method": "slotNotification",
                                      "params": {"subscription": 1, "result": {"slot": 5}}}))
    assert note == (None, P.SlotUpdate("slotNotification", 1, {"slot": 5}))
    assert isinstance(note[1], P.Notification) and note[1].slot == 5


def test_sessions_created_v2_with_and_without_ranges() -> None:
    ranged = P.SessionsCreatedV2("p", ["a", "b"], [None, "t"], [1, 11], [10, 20])
    bare = P.SessionsCreatedV2("p", ["a", "b"], [None, None])
    assert P.decode_response(P.encode_response(ranged, 3)) == (3, ranged)
    assert P.decode_response(P.encode_response(bare)) == (None, bare)
    assert "start_slots" not in json.loads(P.encode_response(bare))["params"]


# ----------------------------------------------------------------------------- fuzzing


def only_protocol_errors(decode: Any, frame: Any) -> None:
    """``decode(frame)`` succeeds or raises ProtocolError, and nothing else."""
    try:
        decode(frame)
    except P.ProtocolError as exc:
        assert len(str(exc)) < 300


#: Field names the decoders look for, in both casings, so the fuzz reaches deep paths.
FIELD_VOCAB = sorted({
    "session_id", "sessionId", "rpc_endpoint", "rpcEndpoint", "task_id", "taskId",
    "control_session_id", "controlSessionId", "session_ids", "sessionIds", "task_ids",
    "taskIds", "start_slots", "startSlots", "end_slots", "endSlots", "slot", "batch_index",
    "batchIndex", "matched", "transactions", "status", "summary", "agent_stats", "agentStats",
    "seq_id", "seqId", "event", "subscription", "result", "context", "account", "signature",
    "pre", "post", "meta", "blockTime", "version", "transaction", "code", "message",
    "last_sequence", "lastSequence", "last_sequences", "lastSequences", "request",
    "advanceCount", "modifyAccountStates", "data", "encoding", "lamports", "owner", "space",
    "executable", *CREATE_WIRE_NAMES, *SUMMARY_WIRE, "SessionNotFound", "noMoreBlocks"})
plausible = st.recursive(
    json_scalars | st.dictionaries(st.sampled_from(FIELD_VOCAB), json_scalars, max_size=6),
    lambda inner: (st.lists(inner, max_size=3)
                   | st.dictionaries(st.sampled_from(FIELD_VOCAB), inner, max_size=6)),
    max_leaves=16)
control_shaped = st.fixed_dictionaries(
    {"method": st.sampled_from(sorted(KNOWN_METHODS))},
    optional={"params": plausible, "seqId": st.none() | ints | json_values})
event_shaped = st.fixed_dictionaries(
    {"method": st.sampled_from(["sessionEventV2", "sessionEventV1"]),
     "params": st.fixed_dictionaries({}, optional={"session_id": texts | json_values,
                                                   "seq_id": opt_int | json_values,
                                                   "event": control_shaped | plausible})})
pubsub_shaped = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0")},
    optional={"method": st.sampled_from(sorted(PUBSUB_METHODS | {"slotNotification"})),
              "id": opt_int | json_values, "result": plausible, "error": plausible,
              "params": st.fixed_dictionaries({}, optional={"subscription": ints | json_values,
                                                            "result": plausible})
              | plausible})
request_shaped = st.fixed_dictionaries(
    {"method": st.sampled_from(REQUEST_METHODS)},
    optional={"params": plausible | create_params().map(lambda c: c.wire()),
              "jsonrpc": st.none() | json_values, "id": json_values})
subscribe_shaped = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0"), "method": texts},
    optional={"id": ints | json_values, "params": st.lists(plausible, max_size=3) | plausible})
SHAPES = {"json": json_values, "control": control_shaped, "event": event_shaped,
          "pubsub": pubsub_shaped, "request": request_shaped, "subscribe": subscribe_shaped}


@PROPERTY
@given(st.text() | st.binary())
def test_arbitrary_text_only_raises_protocol_error(frame: Any) -> None:
    only_protocol_errors(P.decode_response, frame)
    only_protocol_errors(P.decode_request, frame)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_arbitrary_json_only_raises_protocol_error(shape: str) -> None:
    @PROPERTY
    @given(SHAPES[shape])
    def check(value: Any) -> None:
        text = json.dumps(value)
        for frame in (text, text.encode("utf-8")):
            only_protocol_errors(P.decode_response, frame)
            only_protocol_errors(P.decode_request, frame)

    check()


def test_pathologically_deep_json_is_a_protocol_error() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(P.ProtocolError):
        P.decode_response(deep)
    with pytest.raises(P.ProtocolError):
        P.decode_request('{"method":"continue","params":' + deep + "}")


def nested_events(depth: int) -> str:
    """``depth`` sessionEventV2 wrappers around a readyForContinue, built as text (deeper
    than ``json.dumps`` itself can encode)."""
    head = '{"method":"sessionEventV2","params":{"session_id":"s","seq_id":1,"event":'
    return head * depth + '{"method":"readyForContinue"}' + "}}" * depth


def test_nested_session_events_never_overflow() -> None:
    # sweep the depth: json.loads nests 2 levels per event, the decoder ~3 frames per event,
    # so some depths parse as JSON but overflow the decoder (exact window depends on the stack)
    limit = sys.getrecursionlimit()
    for depth in range(10, limit, 10):
        only_protocol_errors(P.decode_response, nested_events(depth))


def test_unsupported_frame_types_are_protocol_errors() -> None:
    # Frame is str | bytes | bytearray; anything else is a ProtocolError, never a TypeError
    unsupported: List[Any] = [memoryview(b'{"method":"success"}'), None, 42, ["x"],
                              {"method": "success"}]
    for frame in unsupported:
        for decode in (P.decode_response, P.decode_request):
            with pytest.raises(P.ProtocolError):
                decode(frame)


RANGE_KEYS = ["bundleStartSlot", "bundleStartSlotUtc", "maxBundleEndSlot",
              "maxBundleEndSlotUtc", "maxBundleSize", "kind", "scope", "snapshotSlot", "other"]
ranges_shaped = st.lists(st.dictionaries(st.sampled_from(RANGE_KEYS), json_scalars | plausible,
                                         max_size=6), max_size=3) | json_values


@PROPERTY
@given(st.text() | ranges_shaped.map(json.dumps))
def test_available_ranges_only_raise_protocol_error(body: str) -> None:
    only_protocol_errors(P.decode_available_ranges, body)


# --- mutated golden frames

S2C = [row["frame"] for row in frames("control.jsonl", "s2c") + frames("dataplane.jsonl", "s2c")]
C2S = [row["frame"] for row in frames("control.jsonl", "c2s") + frames("dataplane.jsonl", "c2s")]

Path = Tuple[Any, ...]


def paths(value: Any, prefix: Path = ()) -> List[Path]:
    """Every path to a value nested in ``value`` (dict keys and list indexes), root excluded."""
    out: List[Path] = []
    items = (value.items() if isinstance(value, dict)
             else enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        out.append(prefix + (key,))
        out.extend(paths(item, prefix + (key,)))
    return out


def mutate(frame: Any, path: Path, new: Any, drop: bool) -> Any:
    """A deep copy of ``frame`` with the value at ``path`` dropped or replaced by ``new``."""
    frame = json.loads(json.dumps(frame))
    parent = frame
    for key in path[:-1]:
        parent = parent[key]
    if drop:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return frame


@st.composite
def mutated(draw: Any, pool: List[Any]) -> str:
    frame = draw(st.sampled_from(pool))
    how = draw(st.sampled_from(["drop", "replace", "truncate"]))
    if how == "truncate":
        text = compact(frame)
        return text[:draw(st.integers(0, len(text)))]
    path = draw(st.sampled_from(paths(frame)))
    new: Any = None if how == "drop" else draw(json_values)
    return compact(mutate(frame, path, new, drop=how == "drop"))


def test_mutation_helpers() -> None:
    frame: Dict[str, Any] = {"method": "paused", "params": {"slot": 1, "batchIndex": [2, 3]}}
    assert ("params", "batchIndex", 1) in paths(frame)
    assert mutate(frame, ("params", "slot"), None, drop=True) == {
        "method": "paused", "params": {"batchIndex": [2, 3]}}
    assert mutate(frame, ("params", "batchIndex", 0), "x", drop=False)["params"] == {
        "slot": 1, "batchIndex": ["x", 3]}
    assert frame["params"]["slot"] == 1  # the original is untouched


@PROPERTY
@given(mutated(S2C))
def test_mutated_server_frames_only_raise_protocol_error(frame: str) -> None:
    only_protocol_errors(P.decode_response, frame)


@PROPERTY
@given(mutated(C2S))
def test_mutated_client_frames_only_raise_protocol_error(frame: str) -> None:
    only_protocol_errors(P.decode_request, frame)


@pytest.mark.parametrize("index", range(len(S2C)))
def test_every_single_key_drop_of_every_server_frame(index: int) -> None:
    """Exhaustive: each golden s2c frame with each one of its keys or items removed."""
    frame = S2C[index]
    for path in paths(frame):
        only_protocol_errors(P.decode_response, compact(mutate(frame, path, None, drop=True)))
        replacements: List[Any] = [None, "x", -1, 1.5, True, [], {}]
        for new in replacements:
            only_protocol_errors(P.decode_response,
                                 compact(mutate(frame, path, new, drop=False)))


# ----------------------------------------------------------------------------- found by fuzzing


@pytest.mark.parametrize("count", ["0", "false"])
def test_continue_with_advance_count_zero_is_rejected(count: str) -> None:
    with pytest.raises(P.ProtocolError):
        P.decode_request('{"method":"continue","params":{"advanceCount":' + count + "}}")


def test_refusal_with_null_message() -> None:
    frame = '{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":null}}'
    assert P.decode_response(frame) == (None, P.SubscriptionRefused(1, -32602, ""))
