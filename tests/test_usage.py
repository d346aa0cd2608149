"""Issue 17 item 6: ``Client.usage`` / ``UsageReport`` (``GET /usage``), the local
simulator's ``/usage``, ``simsync usage`` and ``simsync run --extra-compute-units``.

Pure HTTP-client units use ``responses``; everything else runs against the local simulator
(or, for the create frame of ``run``, a small recording server on loopback)."""
from __future__ import annotations

import asyncio
import datetime
import json
import logging
import pickle
import socket
import threading
from typing import Any, Dict, Iterator, List, Optional

import pytest
import requests
import responses
from aiohttp import web

import simsync
from simsync.localsim import LocalSimulator
from simsync.localsim.testing import Control
from simsync.rpc import close_http
from simsync.usage import decode_usage, iso_utc, usage_url
from tests.support import FAST, START, Records, client, drive, wait_for
from tests.test_cli import closed_port, run_args, simsync_cmd

pytestmark = pytest.mark.timeout(60)

KEY = "usage-test-key-4d9e2b7a1c"
UTC = datetime.timezone.utc


@pytest.fixture
def keyed() -> Iterator[LocalSimulator]:
    with LocalSimulator(api_key=KEY, bundle_size=100, bundles=2) as server:
        yield server


@pytest.fixture
def sim() -> Iterator[LocalSimulator]:
    with LocalSimulator(bundle_size=100, bundles=2) as server:
        yield server


# ----------------------------------------------------------------------------- decoding (pure)


def test_decode_snake_case() -> None:
    report = decode_usage(json.dumps({
        "since": "2026-11-30T00:00:00Z", "until": None, "sessions_started": 3,
        "sessions_completed": 2, "sessions_failed": 1, "executed_slot_count": 250,
        "session_duration": 71.5, "billing_tier": "pro"}))
    assert report == simsync.UsageReport(3, 2, 1, 250, 71.5, "2026-11-30T00:00:00Z", None,
                                         {"billing_tier": "pro"})


def test_decode_camel_case_and_integer_duration() -> None:
    report = decode_usage(b'{"sessionsStarted": 1, "sessionsCompleted": 0, "sessionsFailed": 1,'
                          b' "executedSlotCount": 7, "sessionDuration": 12}')
    assert (report.sessions_started, report.sessions_failed, report.executed_slot_count) == \
        (1, 1, 7)
    assert report.session_duration == 12.0 and isinstance(report.session_duration, float)


def test_decode_prefers_snake_case_when_both_are_sent() -> None:
    for body in ('{"sessions_started": 4, "sessionsStarted": 9}',
                 '{"sessionsStarted": 9, "sessions_started": 4}'):
        assert decode_usage(body).sessions_started == 4


def test_absent_and_null_counters_are_none() -> None:
    report = decode_usage('{"sessions_started": null}')
    assert report == simsync.UsageReport()


@pytest.mark.parametrize("body", [
    "not json", "[1, 2]", '{"sessions_started": "3"}', '{"sessions_failed": -1}',
    '{"executed_slot_count": 2.5}', '{"session_duration": "long"}', '{"since": 5}',
    '{"sessions_started": true}',
])
def test_malformed_bodies_raise_protocol_error(body: str) -> None:
    with pytest.raises(simsync.ProtocolError, match="/usage"):
        decode_usage(body)


def test_report_pickles_and_round_trips_its_wire_form() -> None:
    report = simsync.UsageReport(1, 1, 0, 10, 2.5, None, None, {"x": 1})
    assert pickle.loads(pickle.dumps(report)) == report
    assert decode_usage(json.dumps(report.wire())) == report


# ----------------------------------------------------------------------------- the window (pure)


def test_bounds_become_iso_8601_utc() -> None:
    assert iso_utc(datetime.datetime(2026, 11, 30, 20, 0), "since") == "2026-11-30T20:00:00Z"
    berlin = datetime.timezone(datetime.timedelta(hours=1))
    assert iso_utc(datetime.datetime(2026, 11, 30, 21, 0, 0, 500, tzinfo=berlin), "since") == \
        "2026-11-30T20:00:00.000500Z"
    assert iso_utc("2026-11-30T21:00:00+01:00", "until") == "2026-11-30T20:00:00Z"
    with pytest.raises(ValueError, match="since"):
        iso_utc("yesterday", "since")
    with pytest.raises(TypeError, match="until"):
        iso_utc(1700000000, "until")  # type: ignore[arg-type]


def test_usage_url_carries_the_window_as_query_parameters() -> None:
    assert usage_url("wss://sim.example.com/backtest") == "https://sim.example.com/usage"
    url = usage_url("ws://127.0.0.1:9/backtest", "2026-11-01", "2026-12-01T00:00:00Z")
    assert url == ("http://127.0.0.1:9/usage?since=2026-11-01T00%3A00%3A00Z"
                   "&until=2026-12-01T00%3A00%3A00Z")
    with pytest.raises(ValueError, match="after"):
        usage_url("ws://h/backtest", "2026-12-02", "2026-12-01")


# ----------------------------------------------------------------------------- HTTP client (pure)


@responses.activate
def test_client_sends_the_key_header_and_the_window() -> None:
    responses.get("https://sim.example.com/usage",
                  json={"sessions_started": 2, "session_duration": 3.5})
    report = simsync.Client("sim.example.com", api_key=KEY).usage(
        since=datetime.datetime(2026, 11, 1, tzinfo=UTC))
    assert report.sessions_started == 2 and report.session_duration == 3.5
    (call,) = responses.calls
    assert call.request.headers["X-API-Key"] == KEY
    assert call.request.params == {"since": "2026-11-01T00:00:00Z"}
    assert KEY not in (call.request.url or "")


@responses.activate
def test_http_errors_name_the_url_and_never_the_key() -> None:
    responses.get("https://sim.example.com/usage", status=503, body=f"echo {KEY}")
    with pytest.raises(simsync.RpcError) as info:
        simsync.Client("sim.example.com", api_key=KEY).usage()
    assert info.value.http_status == 503
    assert "https://sim.example.com/usage" in str(info.value)
    assert KEY not in str(info.value) and KEY not in repr(info.value)


def test_a_refused_connection_is_an_rpc_error_naming_the_url() -> None:
    port = closed_port()
    with pytest.raises(simsync.RpcError) as info:
        simsync.Client(f"ws://127.0.0.1:{port}", api_key=KEY, config=FAST).usage()
    assert f"http://127.0.0.1:{port}/usage" in str(info.value)
    assert KEY not in str(info.value)


# ----------------------------------------------------------------------------- end to end


def test_usage_counts_started_completed_failed_slots_and_time(keyed: LocalSimulator) -> None:
    sim_client = client(keyed, api_key=KEY)
    before = sim_client.usage()
    assert (before.sessions_started, before.sessions_completed, before.sessions_failed,
            before.executed_slot_count, before.session_duration) == (0, 0, 0, 0, 0.0)
    end = START + 9
    with sim_client.start_session(start_slot=START, end_slot=end) as session:
        drive(session)                                           # completed
    with sim_client.start_session(start_slot=START, end_slot=end) as session:
        while not isinstance(session.next_event(10), simsync.ReadyForContinue):
            pass                                                 # closed by the client
    lost = Control(keyed.url, api_key=KEY)                       # the client goes away
    try:
        lost.create(START, end)
        lost.step()
    finally:
        lost.close()
    report = wait_for(lambda: _failed(sim_client), what="the lost session counted as failed")
    assert report.sessions_started == 3
    assert report.sessions_completed == 1
    assert report.sessions_failed == 1
    assert report.executed_slot_count == len(keyed.produced_slots(START, end)) + 0 + 1
    assert report.session_duration is not None and report.session_duration > 0
    assert report.since is None and report.until is None


def _failed(sim_client: simsync.Client) -> Optional[simsync.UsageReport]:
    report = sim_client.usage()
    return report if report.sessions_failed == 1 else None


def test_usage_window_counts_sessions_by_creation_time(keyed: LocalSimulator) -> None:
    sim_client = client(keyed, api_key=KEY)
    with sim_client.start_session(start_slot=START, end_slot=START + 3) as session:
        drive(session)
    mark = datetime.datetime.now(UTC)
    with sim_client.start_session(start_slot=START, end_slot=START + 3) as session:
        drive(session)
    assert sim_client.usage().sessions_started == 2
    assert sim_client.usage(since=mark).sessions_started == 1
    assert sim_client.usage(until=mark).sessions_started == 1
    assert sim_client.usage(since=mark, until=mark).sessions_started == 0
    after = sim_client.usage(since=datetime.datetime.now(UTC) + datetime.timedelta(hours=1))
    assert (after.sessions_started, after.executed_slot_count) == (0, 0)
    echoed = sim_client.usage(since=mark.isoformat())
    assert echoed.since == iso_utc(mark, "since")


def test_usage_needs_the_key_and_never_shows_it(keyed: LocalSimulator) -> None:
    records = Records()
    logging.getLogger().addHandler(records)
    try:
        with pytest.raises(simsync.RpcError) as info:
            client(keyed, api_key=KEY + "-wrong").usage()
        with pytest.raises(simsync.RpcError) as missing:
            client(keyed).usage()
        client(keyed, api_key=KEY).usage()
    finally:
        logging.getLogger().removeHandler(records)
    assert info.value.http_status == 401 and missing.value.http_status == 401
    assert f"{keyed.http_url}/usage" in str(info.value)
    texts = [str(info.value), repr(info.value), str(missing.value),
             repr(client(keyed, api_key=KEY))] + [r.getMessage() for r in records.records]
    assert not [t for t in texts if KEY in t]
    seen = [r for r in keyed.requests_seen() if r.path == "/usage"]
    assert [r.api_key_present for r in seen] == [True, False, True]


def test_usage_without_a_key_on_an_open_simulator(sim: LocalSimulator) -> None:
    assert client(sim).usage().sessions_started == 0


def test_simulator_answers_400_to_a_bad_window(keyed: LocalSimulator) -> None:
    http = requests.Session()
    http.headers["X-API-Key"] = KEY
    try:
        bad = http.get(f"{keyed.http_url}/usage", params={"since": "soon"}, timeout=10)
        reversed_window = http.get(f"{keyed.http_url}/usage", timeout=10,
                                   params={"since": "2026-12-02", "until": "2026-12-01"})
        plain = http.get(f"{keyed.http_url}/usage", timeout=10).json()
    finally:
        close_http(http)
    assert (bad.status_code, reversed_window.status_code) == (400, 400)
    assert set(plain) == {"since", "until", "sessions_started", "sessions_completed",
                          "sessions_failed", "executed_slot_count", "session_duration"}


# ----------------------------------------------------------------------------- the command


def test_simsync_usage_prints_the_report(keyed: LocalSimulator) -> None:
    with client(keyed, api_key=KEY).start_session(start_slot=START, end_slot=START + 4) as s:
        drive(s)
    text = simsync_cmd("usage", "--url", keyed.url, "--api-key", KEY)
    assert text.returncode == 0, text.stderr
    lines = dict(line.rsplit(None, 1) for line in text.stdout.splitlines()
                 if line.startswith(("sessions", "executed")))
    assert lines == {"sessions started": "1", "sessions completed": "1",
                     "sessions failed": "0",
                     "executed slots": str(len(keyed.produced_slots(START, START + 4)))}
    as_json = simsync_cmd("usage", "--url", keyed.url, "--json", "--since", "2020-01-01",
                          env={"SIMULATOR_API_KEY": KEY})
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert body["sessions_started"] == 1 and body["since"] == "2020-01-01T00:00:00Z"
    assert KEY not in text.stdout + text.stderr + as_json.stdout + as_json.stderr


def test_simsync_usage_with_a_wrong_key_exits_1_with_a_hint(keyed: LocalSimulator) -> None:
    result = simsync_cmd("usage", "--url", keyed.url, "--api-key", "nope-" + KEY)
    assert result.returncode == 1
    assert "401" in result.stderr and "--api-key" in result.stderr
    assert KEY not in result.stderr


@pytest.mark.parametrize("args", [
    ["usage", "--since", "tomorrow"],
    ["usage", "--since", "2026-12-02", "--until", "2026-12-01"],
    ["run", "--start-slot", "1", "--end-slot", "5", "--extra-compute-units", "-1"],
    ["run", "--start-slot", "1", "--end-slot", "5", "--extra-compute-units", "many"],
])
def test_bad_arguments_exit_2(args: List[str]) -> None:
    result = simsync_cmd(*args)
    assert result.returncode == 2, result
    assert "usage: simsync" in result.stderr


# ----------------------------------------------------------------------------- run extra CUs


class Recorder:
    """A control endpoint on loopback that records the first frame it receives and refuses
    the session (``invalidRequest``), so the command ends at once."""

    def __init__(self) -> None:
        self.frames: List[Dict[str, Any]] = []
        self.port = 0
        self._ready = threading.Event()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()),
                                        name="usage-test-recorder", daemon=True)

    async def _control(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        message = await ws.receive()
        self.frames.append(json.loads(message.data))
        await ws.send_str(json.dumps({"method": "error", "params": {
            "invalidRequest": {"error": "recorded by the test"}}}))
        await ws.close()
        return ws

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        app = web.Application()
        app.router.add_get("/backtest", self._control)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def __enter__(self) -> Recorder:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def test_run_sends_extra_compute_units_in_the_create_params() -> None:
    with Recorder() as recorder:
        result = simsync_cmd(*run_args(f"ws://127.0.0.1:{recorder.port}", START, START + 3,
                                       "--extra-compute-units", "50000"))
    assert result.returncode == 1 and "recorded by the test" in result.stderr
    (create,) = recorder.frames
    assert create["method"] == "createBacktestSession"
    assert create["params"]["extraComputeUnits"] == 50000
    with Recorder() as recorder:
        simsync_cmd(*run_args(f"ws://127.0.0.1:{recorder.port}", START, START + 3))
    assert "extraComputeUnits" not in recorder.frames[0]["params"]


def test_run_with_extra_compute_units_completes_on_the_simulator(sim: LocalSimulator) -> None:
    result = simsync_cmd(*run_args(sim.url, START, START + 4, "--extra-compute-units", "0",
                                   "--disconnect-timeout", "0"))
    assert result.returncode == 0, result.stderr
    assert client(sim).usage().sessions_completed == 1
