"""Security properties, each against a live local simulator:

* wss/https verify certificates (and host names) by default; ``ca_bundle`` trusts a private CA
  for the control channel, JSON-RPC and PubSub alike;
* the API key goes only on the control upgrade and to ``/available-ranges`` (checked on the
  server's request record), and never into a log line, a repr or an exception;
* an ``rpc_endpoint`` on another host than the control URL is refused unless
  ``allow_foreign_rpc_host=True``.
"""
from __future__ import annotations

import logging
import socket
import ssl
import time
import traceback
from typing import Any, Iterator, List, Tuple

import pytest
import responses
import trustme

import simsync
from simsync.localsim import Fault, LocalSimulator
from simsync.rpc import SessionRpc
from tests.support import FAST, START, Records, drive, slots, wait_for

pytestmark = pytest.mark.timeout(120)

SYSTEM = "11111111111111111111111111111111"
END = START + 9
SECRET = "sk-live-7c1e0a2b9f3d4e5a6b7c8d9e0f1a2b3c"


# --------------------------------------------------------------------------- helpers

class Tls:
    """A private CA, a server context whose certificate it signed, and the CA's PEM path."""

    def __init__(self, tmp: Any, *names: str) -> None:
        self.ca = trustme.CA()
        self.server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*names).configure_cert(self.server)
        self.pem = str(tmp / f"ca-{'-'.join(names)}.pem")
        self.ca.cert_pem.write_to_path(self.pem)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return Tls(tmp_path_factory.mktemp("tls"), "127.0.0.1", "localhost")


@pytest.fixture
def tls_sim(tls: Tls) -> Iterator[LocalSimulator]:
    with LocalSimulator(bundle_size=100, bundles=2, ssl_context=tls.server) as server:
        yield server


@pytest.fixture
def records() -> Iterator[Records]:
    """Every log record of every logger, DEBUG and up, for the duration of a test."""
    handler = Records()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def drive_with_rpc(session: simsync.Session, on_pause: Any = None) -> List[Any]:
    """``drive`` that runs ``on_pause(session)`` at the first pause."""
    done: List[bool] = []

    def hook(event: Any) -> None:
        if on_pause is not None and not done and isinstance(event, simsync.ReadyForContinue):
            done.append(True)
            on_pause(session)
    return drive(session, on_event=hook)


def chain_text(exc: BaseException) -> str:
    """Everything an exception can show: str, repr, args and the traceback of the whole
    chain, including suppressed contexts (``raise ... from None``)."""
    parts: List[str] = []
    seen: set[int] = set()
    current: Any = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current), repr(current.args)]
        parts += traceback.format_exception(type(current), current, current.__traceback__)
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


def system_signatures(server: LocalSimulator, session_id: str) -> List[str]:
    return [t.signature for t in server.executed(session_id) if SYSTEM in t.program_ids]


# ------------------------------------------------------------------------------- TLS

def test_wss_with_the_default_config_refuses_an_untrusted_certificate(
        tls_sim: LocalSimulator) -> None:
    with pytest.raises(simsync.SessionCreateError, match="certificate verification failed"):
        simsync.Client(tls_sim.url, config=FAST).start_session(start_slot=START, end_slot=END)
    assert tls_sim.session_ids() == []
    assert tls_sim.requests_seen() == []            # not one HTTP request got through


def test_a_ca_bundle_of_another_ca_is_refused(tls_sim: LocalSimulator, tmp_path: Any) -> None:
    other = Tls(tmp_path, "127.0.0.1")
    config = FAST.replace(ca_bundle=other.pem)
    with pytest.raises(simsync.SessionCreateError, match="certificate verification failed"):
        simsync.Client(tls_sim.url, config=config).start_session(start_slot=START,
                                                                 end_slot=END)


def test_the_host_name_is_verified_too(tmp_path: Any) -> None:
    only_localhost = Tls(tmp_path, "localhost")          # valid chain, wrong name
    with LocalSimulator(bundle_size=100, bundles=2,
                        ssl_context=only_localhost.server) as server:
        config = FAST.replace(ca_bundle=only_localhost.pem)
        with pytest.raises(simsync.SessionCreateError, match="certificate verification"
                           ) as info:
            simsync.Client(server.url, config=config).start_session(start_slot=START,
                                                                    end_slot=END)
        assert "127.0.0.1" in str(info.value)            # the mismatch is named


def test_https_rpc_and_available_ranges_verify_by_default(tls_sim: LocalSimulator) -> None:
    with pytest.raises(simsync.RpcError, match="SSLError"):
        simsync.Client(tls_sim.url, config=FAST).available_ranges()
    rpc = SessionRpc(tls_sim.http_url + "/backtest/none", FAST)
    try:
        with pytest.raises(simsync.RpcError, match="SSLError"):
            rpc.get_slot()
    finally:
        rpc.close()
    assert tls_sim.requests_seen() == []


def test_wss_with_ca_bundle_works_end_to_end(tls_sim: LocalSimulator, tls: Tls) -> None:
    config = FAST.replace(ca_bundle=tls.pem)
    the_client = simsync.Client(tls_sim.url, config=config)
    assert the_client.available_ranges()
    with the_client.start_session(start_slot=START, end_slot=END,
                                  disconnect_timeout_secs=60) as session:
        assert session.rpc.url.startswith("https://127.0.0.1:")
        session.subscribe_transactions([SYSTEM])
        session.subscribe_account_diffs([SYSTEM])
        events = drive_with_rpc(session, lambda s: s.rpc.get_slot())
        session_id = session.info.session_id
    assert slots(events) == tls_sim.produced_slots(START, END)
    delivered = [e.signature for e in events if isinstance(e, simsync.Transaction)]
    assert delivered and delivered == system_signatures(tls_sim, session_id)
    assert any(isinstance(e, simsync.AccountDiff) for e in events)
    channels = {r.channel for r in tls_sim.requests_seen()}
    assert {"control", "pubsub", "rpc", "ranges"} <= channels   # all of them over TLS


# --------------------------------------------------------------------------- the API key

def run_everything_with_the_key(server: LocalSimulator, key: str = SECRET,
                                ) -> Tuple[simsync.Client, simsync.Session, List[Any]]:
    """A session that touches every surface: ranges, create, two subscriptions, RPC reads
    and an RPC error, control and PubSub drops with their reconnects, completion."""
    server.faults.add(Fault("drop", after_frames=9))
    server.faults.add(Fault("drop", channel="pubsub", after_frames=4, times=2))
    the_client = simsync.Client(server.url, api_key=key, config=FAST)
    assert the_client.available_ranges()

    def at_pause(session: simsync.Session) -> None:
        session.rpc.get_slot()
        with pytest.raises(simsync.RpcError):
            session.rpc.call("noSuchMethod", [])

    with the_client.start_session(start_slot=START, end_slot=END,
                                  disconnect_timeout_secs=60) as session:
        session.subscribe_transactions([SYSTEM])
        session.subscribe_account_diffs([SYSTEM])
        events = drive_with_rpc(session, at_pause)
    assert server.faults.fired == 3, "the reconnects this check relies on did not happen"
    return the_client, session, events


def run_a_parallel_batch_with_the_key(server: LocalSimulator) -> None:
    """Sub-sessions have their own endpoints: subscriptions and RPC on each, a PubSub drop."""
    server.faults.clear()
    drop = server.faults.add(Fault("drop", channel="pubsub", after_frames=3))
    batch = simsync.Client(server.url, api_key=SECRET, config=FAST).start_parallel(
        start_slot=START, end_slot=START + 150, disconnect_timeout_secs=60)
    with batch:
        for sub in batch.sub_sessions:
            sub.subscribe_transactions([SYSTEM])
        rpc_done = set()
        for sub, event in batch.events(timeout=30):
            if isinstance(event, simsync.ReadyForContinue):
                if sub.info.session_id not in rpc_done:
                    rpc_done.add(sub.info.session_id)
                    sub.rpc.get_slot()
                sub.send_continue(timeout=30)
    assert drop.fired == 1


def test_the_key_goes_only_to_the_control_upgrade_and_available_ranges() -> None:
    with LocalSimulator(api_key=SECRET, bundle_size=100, bundles=2) as server:
        run_everything_with_the_key(server)
        run_a_parallel_batch_with_the_key(server)
        seen = server.requests_seen()
    by_channel = {c: [r for r in seen if r.channel == c]
                  for c in ("control", "pubsub", "rpc", "ranges")}
    assert len(by_channel["control"]) >= 3          # create, re-attach, parallel create
    assert len(by_channel["pubsub"]) >= 7           # 2 + 2 subscriptions + 3 reconnects
    assert len(by_channel["rpc"]) >= 4 and len(by_channel["ranges"]) == 1
    assert all(r.api_key_present for r in by_channel["control"] + by_channel["ranges"])
    leaked = [r for r in by_channel["pubsub"] + by_channel["rpc"] if r.api_key_present]
    assert not leaked, f"the API key went to per-session endpoints: {leaked}"
    assert all("x-api-key" not in (n.lower() for n in r.header_names)
               for r in by_channel["pubsub"] + by_channel["rpc"])


def test_the_key_is_never_logged_at_debug(records: Records) -> None:
    with LocalSimulator(api_key=SECRET, bundle_size=100, bundles=2) as server:
        run_everything_with_the_key(server)
    messages = [r.getMessage() for r in records.records]
    assert any("RECONNECTING" in m for m in messages), "no reconnect was logged"
    assert any(r.name.startswith("simsync.rpc") for r in records.records)
    assert any(r.levelno == logging.DEBUG and r.name.startswith("simsync")
               for r in records.records)
    assert SECRET not in records.text()
    assert not [r for r in records.records if SECRET in repr(r.__dict__)]


def test_the_key_is_in_no_repr() -> None:
    with LocalSimulator(api_key=SECRET, bundle_size=100, bundles=2) as server:
        the_client, session, events = run_everything_with_the_key(server)
        batch = simsync.Client(server.url, api_key=SECRET, config=FAST).start_parallel(
            start_slot=START, end_slot=START + 150, disconnect_timeout_secs=60)
        with batch:
            shown = [repr(batch), repr(batch.sub_sessions), repr(batch.status)]
    config = FAST.replace(extra_headers={"Authorization": f"Bearer {SECRET}"})
    shown += [repr(the_client), str(the_client), repr(session), str(session),
              repr(session.info), repr(session.status), repr(session.rpc), repr(config),
              str(config), repr(simsync.Client(server.url, api_key=SECRET, config=config))]
    shown += [repr(e) for e in events]
    assert all(SECRET not in text for text in shown)
    assert "<set>" in repr(the_client)              # it says a key is there, not which


@pytest.mark.parametrize("failure", ["wrong key", "refused subscription", "failed create",
                                     "rpc error", "budget spent"])
def test_the_key_is_in_no_exception(failure: str, records: Records) -> None:
    key = "wrong-" + SECRET if failure == "wrong key" else SECRET
    with LocalSimulator(api_key=SECRET, bundle_size=100, bundles=2) as server:
        the_client = simsync.Client(server.url, api_key=key,
                                    config=FAST.replace(reconnect_budget=0.5))
        with pytest.raises(simsync.SimsyncError) as info:
            if failure in ("wrong key", "failed create"):
                start = START if failure == "wrong key" else START - 1000
                the_client.start_session(start_slot=start, end_slot=start + 5)
            else:
                with the_client.start_session(start_slot=START, end_slot=END,
                                              disconnect_timeout_secs=60) as session:
                    if failure == "refused subscription":
                        session.subscribe_transactions(["not-a-base58-key!"])
                    elif failure == "rpc error":
                        session.rpc.call("noSuchMethod", [])
                    else:
                        while not isinstance(session.next_event(10), simsync.ReadyForContinue):
                            pass
                        server.faults.refuse_connects(10**6)
                        server.faults.add(Fault("drop", at="after_continue_received"))
                        session.send_continue()
                        drive(session)
    expected = {"wrong key": simsync.SessionCreateError,
                "refused subscription": simsync.SubscriptionFailed,
                "failed create": simsync.SessionCreateError,
                "rpc error": simsync.RpcError, "budget spent": simsync.ControlFailed}
    assert isinstance(info.value, expected[failure])
    text = chain_text(info.value)
    assert key not in text and SECRET not in text
    assert key not in records.text()


def test_extra_headers_go_on_the_control_upgrade_only() -> None:
    config = FAST.replace(extra_headers={"X-Org": "org-1"})
    with LocalSimulator(bundle_size=100, bundles=2) as server:
        with simsync.Client(server.url, config=config).start_session(
                start_slot=START, end_slot=END) as session:
            session.subscribe_transactions([SYSTEM])
            drive_with_rpc(session, lambda s: s.rpc.get_slot())
        seen = server.requests_seen()
    control = [r for r in seen if r.channel == "control"]
    data_plane = [r for r in seen if r.channel in ("rpc", "pubsub")]
    assert control and data_plane
    assert all("X-Org" in r.header_names for r in control)
    assert not any("X-Org" in r.header_names for r in data_plane)


# ---------------------------------------------------------------------- foreign rpc host

@pytest.fixture
def foreign_sim() -> Iterator[LocalSimulator]:
    """Control at ws://127.0.0.1:PORT, rpc_endpoint at http://localhost:PORT/backtest/ID."""
    with LocalSimulator(bundle_size=100, bundles=2, rpc_endpoint_host="localhost") as server:
        yield server


def test_an_rpc_endpoint_on_another_host_is_refused(foreign_sim: LocalSimulator) -> None:
    with pytest.raises(simsync.SessionCreateError, match="another host") as info:
        simsync.Client(foreign_sim.url, config=FAST).start_session(start_slot=START,
                                                                   end_slot=END)
    assert f"localhost:{foreign_sim.port}" in str(info.value)
    hosts = {r.host for r in foreign_sim.requests_seen()}
    assert hosts == {f"127.0.0.1:{foreign_sim.port}"}     # nothing went to the other host
    wait_for(lambda: foreign_sim.session_ids() == [], what="the refused session to be closed")


def test_a_foreign_rpc_host_works_when_allowed(foreign_sim: LocalSimulator) -> None:
    config = FAST.replace(allow_foreign_rpc_host=True)
    with simsync.Client(foreign_sim.url, config=config).start_session(
            start_slot=START, end_slot=END, disconnect_timeout_secs=60) as session:
        assert session.rpc.url.startswith(f"http://localhost:{foreign_sim.port}/")
        session.subscribe_transactions([SYSTEM])
        events = drive_with_rpc(session, lambda s: s.rpc.get_slot())
        session_id = session.info.session_id
    assert slots(events) == foreign_sim.produced_slots(START, END)
    delivered = [e.signature for e in events if isinstance(e, simsync.Transaction)]
    assert delivered == system_signatures(foreign_sim, session_id)
    data_plane = [r for r in foreign_sim.requests_seen() if r.channel in ("rpc", "pubsub")]
    assert {r.channel for r in data_plane} == {"rpc", "pubsub"}
    assert all(r.host == f"localhost:{foreign_sim.port}" for r in data_plane)


def test_a_parallel_batch_refuses_a_foreign_rpc_host(foreign_sim: LocalSimulator) -> None:
    batch = None
    try:
        with pytest.raises(simsync.SessionCreateError, match="another host"):
            batch = simsync.Client(foreign_sim.url, config=FAST).start_parallel(
                start_slot=START, end_slot=START + 150, disconnect_timeout_secs=60)
    finally:
        if batch is not None:
            batch.close()


# ------------------------------------------------- one trust store on every channel (#23.1)

def test_a_ca_in_the_system_store_is_trusted_by_every_channel(
        tls_sim: LocalSimulator, tls: Tls, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Any) -> None:
    """The CA only in ``SSL_CERT_FILE`` (the system's store), no ``ca_bundle``: control,
    PubSub, JSON-RPC, /available-ranges and /usage all trust it; requests' own bundle
    (certifi, or ``REQUESTS_CA_BUNDLE`` pointing at another CA) plays no part."""
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    monkeypatch.setenv("SSL_CERT_FILE", tls.pem)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
    the_client = simsync.Client(tls_sim.url, config=FAST)
    assert the_client.available_ranges()
    assert the_client.usage() is not None
    with the_client.start_session(start_slot=START, end_slot=END,
                                  disconnect_timeout_secs=60) as session:
        session.subscribe_transactions([SYSTEM])
        events = drive_with_rpc(session, lambda s: s.rpc.get_slot())
    assert slots(events) == tls_sim.produced_slots(START, END)
    channels = {r.channel for r in tls_sim.requests_seen()}
    assert {"control", "pubsub", "rpc", "ranges"} <= channels


@pytest.mark.parametrize("channel", ["rpc", "ranges", "usage"])
def test_a_ca_bundle_replaces_the_system_store_on_http_channels_too(
        tls_sim: LocalSimulator, tls: Tls, monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
        channel: str) -> None:
    """``ca_bundle`` of another CA: refused at once on HTTP as on WebSocket, even with the
    server's CA in the system store (``ca_bundle`` is the only trust when set)."""
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    monkeypatch.setenv("SSL_CERT_FILE", tls.pem)
    config = FAST.replace(ca_bundle=str(other))
    began = time.monotonic()
    with pytest.raises(simsync.RpcError, match="SSLError|certificate"):
        if channel == "rpc":
            with SessionRpc(tls_sim.http_url + "/backtest/none", config) as rpc:
                rpc.get_slot()
        elif channel == "ranges":
            simsync.Client(tls_sim.url, config=config).available_ranges()
        else:
            simsync.Client(tls_sim.url, config=config).usage()
    assert time.monotonic() - began < 2.0


# ------------------------------------------------- a provider's key in a JSON-RPC URL

PROVIDER_KEY = "k7Gq2xV9pL4mN8sR1tY6wZ3bC5dF0hJ"


def provider_url(port: int) -> str:
    """An endpoint shaped like the providers': a key in the path and one in the query."""
    return f"http://127.0.0.1:{port}/v2/{PROVIDER_KEY}?api-key={SECRET}"


def assert_no_key(text: str) -> None:
    assert PROVIDER_KEY not in text and SECRET not in text, text
    assert PROVIDER_KEY[:12] not in text and SECRET[:12] not in text, text


def test_a_provider_key_in_the_url_stays_out_of_the_repr_and_a_connection_error() -> None:
    with socket.socket() as probe:      # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    records = Records()
    logging.getLogger().addHandler(records)
    try:
        with simsync.SolanaRpc(provider_url(port), timeout=5) as rpc:
            assert_no_key(repr(rpc))
            with pytest.raises(simsync.RpcConnectionError) as caught:
                rpc.get_slot()
    finally:
        logging.getLogger().removeHandler(records)
    assert_no_key(str(caught.value))
    assert_no_key("".join(traceback.format_exception(caught.value)))
    assert f"127.0.0.1:{port}/v2/" in str(caught.value)    # still says where it went
    assert_no_key("\n".join(r.getMessage() for r in records.records))


def test_a_provider_key_echoed_in_an_http_error_body_is_scrubbed() -> None:
    url = provider_url(8899)
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, url, status=401,
                 body=f"invalid api key {SECRET} for /v2/{PROVIDER_KEY}")
        with simsync.SolanaRpc(url, timeout=5) as rpc, \
                pytest.raises(simsync.RpcError) as caught:
            rpc.get_slot()
    assert caught.value.http_status == 401
    assert "invalid api key" in str(caught.value)
    assert_no_key(str(caught.value))
