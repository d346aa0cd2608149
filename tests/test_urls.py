"""The URL rules of PROTOCOL.md §1: control URL, HTTP base, rpc_endpoint, PubSub URL."""
from __future__ import annotations

from typing import Any, Optional, Tuple
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simsync.urls import control_url, http_base, pubsub_url, rpc_url, same_host

pytestmark = pytest.mark.timeout(120)

PROPERTY = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

# ----------------------------------------------------------------------------- control_url


@pytest.mark.parametrize(("given_url", "expected"), [
    ("sim.example.com", "wss://sim.example.com/backtest"),
    ("sim.example.com/", "wss://sim.example.com/backtest"),
    ("sim.example.com/backtest", "wss://sim.example.com/backtest"),
    ("  sim.example.com  ", "wss://sim.example.com/backtest"),
    ("localhost:8080", "wss://localhost:8080/backtest"),
    ("127.0.0.1:9000", "wss://127.0.0.1:9000/backtest"),
    ("[::1]:9000", "wss://[::1]:9000/backtest"),
    ("wss://sim.example.com", "wss://sim.example.com/backtest"),
    ("wss://sim.example.com/", "wss://sim.example.com/backtest"),
    ("wss://sim.example.com/backtest", "wss://sim.example.com/backtest"),
    ("wss://sim.example.com/backtest/", "wss://sim.example.com/backtest"),
    ("ws://localhost:8900", "ws://localhost:8900/backtest"),
    ("ws://localhost:8900/backtest", "ws://localhost:8900/backtest"),
    ("WSS://sim.example.com", "wss://sim.example.com/backtest"),
    ("wss://sim.example.com/sim", "wss://sim.example.com/sim/backtest"),
    ("wss://sim.example.com/sim/backtest", "wss://sim.example.com/sim/backtest"),
    ("wss://sim.example.com/backtestx", "wss://sim.example.com/backtestx/backtest"),
    ("wss://sim.example.com?region=eu", "wss://sim.example.com/backtest?region=eu"),
    ("wss://sim.example.com/backtest#frag", "wss://sim.example.com/backtest"),
])
def test_control_url(given_url: str, expected: str) -> None:
    assert control_url(given_url) == expected


def test_explicit_scheme_is_kept() -> None:
    assert control_url("ws://h").startswith("ws://")
    assert control_url("wss://h").startswith("wss://")
    assert control_url("h").startswith("wss://")  # a bare host means TLS


@pytest.mark.parametrize(("bad", "words"), [
    ("", "empty"),
    ("   ", "empty"),
    ("http://sim.example.com", "ws:// or wss://"),
    ("https://sim.example.com/backtest", "ws:// or wss://"),
    ("ftp://sim.example.com", "ws:// or wss://"),
    ("wss://", "no host"),
    ("ws://", "no host"),
    ("wss:///backtest", "no host"),
    ("wss://:8080/backtest", "no host"),
])
def test_bad_control_urls(bad: str, words: str) -> None:
    with pytest.raises(ValueError) as info:
        control_url(bad)
    assert words in str(info.value)


def test_http_scheme_error_names_the_scheme() -> None:
    with pytest.raises(ValueError, match="'http'"):
        control_url("http://sim.example.com")


# --- idempotence over generated hosts, ports and paths

label = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\Z")
hostnames = st.one_of(
    st.lists(label, min_size=1, max_size=4).map(".".join),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    st.sampled_from(["[::1]", "[2001:db8::7]", "localhost"]),
)
ports = st.none() | st.integers(1, 65535)
segment = st.from_regex(r"\A[A-Za-z0-9._~-]{1,8}\Z").filter(lambda s: s not in (".", ".."))
paths = st.one_of(
    st.just(""), st.just("/"), st.just("/backtest"), st.just("/backtest/"),
    st.lists(segment, min_size=1, max_size=3).map(lambda s: "/" + "/".join(s)),
    st.tuples(st.lists(segment, min_size=1, max_size=2), st.booleans()).map(
        lambda t: "/" + "/".join(t[0]) + "/backtest" + ("/" if t[1] else "")),
)
queries = st.none() | st.from_regex(r"\A[a-z]{1,5}=[a-z0-9]{0,5}\Z")
schemes = st.sampled_from([None, "ws", "wss", "WSS"])


def build(scheme: Optional[str], host: str, port: Optional[int], path: str,
          query: Optional[str]) -> str:
    url = host if port is None else f"{host}:{port}"
    if scheme is not None:
        url = f"{scheme}://{url}"
    url += path
    if query is not None:
        url += "?" + query
    return url


urls = st.tuples(schemes, hostnames, ports, paths, queries)


@PROPERTY
@given(urls)
def test_normalising_twice_changes_nothing(parts: Tuple[Any, ...]) -> None:
    scheme, host, port, path, query = parts
    once = control_url(build(*parts))
    assert control_url(once) == once
    split = urlsplit(once)
    assert split.scheme == (scheme or "wss").lower()
    assert split.netloc == (host if port is None else f"{host}:{port}")
    assert split.path.endswith("/backtest")
    assert split.path.startswith(path.rstrip("/") if path.rstrip("/") else "/backtest")
    assert split.query == (query or "")
    assert http_base(once) == http_base(build(*parts))


@PROPERTY
@given(urls)
def test_http_base_keeps_scheme_host_and_port_only(parts: Tuple[Any, ...]) -> None:
    scheme, host, port, _path, _query = parts
    expected_scheme = "http" if (scheme or "wss").lower() == "ws" else "https"
    expected = f"{expected_scheme}://{host}" + ("" if port is None else f":{port}")
    assert http_base(build(*parts)) == expected


# ----------------------------------------------------------------------------- http base


@pytest.mark.parametrize(("control", "expected"), [
    ("wss://sim.example.com/backtest", "https://sim.example.com"),
    ("ws://localhost:8900/backtest", "http://localhost:8900"),
    ("wss://sim.example.com:8443/sim/backtest?x=1", "https://sim.example.com:8443"),
    ("sim.example.com", "https://sim.example.com"),
    ("[::1]:9000", "https://[::1]:9000"),
])
def test_http_base(control: str, expected: str) -> None:
    assert http_base(control) == expected


def test_http_base_drops_userinfo() -> None:
    assert http_base("wss://user:pw@h:1/backtest") == "https://h:1"
    assert rpc_url("wss://key@h/backtest", "/backtest/s1") == "https://h/backtest/s1"


def test_http_base_rejects_what_control_url_rejects() -> None:
    for bad in ("", "http://h", "wss://"):
        with pytest.raises(ValueError):
            http_base(bad)


# ----------------------------------------------------------------------------- rpc_endpoint


@pytest.mark.parametrize(("control", "endpoint", "expected"), [
    ("wss://sim.example.com/backtest", "/backtest/s1", "https://sim.example.com/backtest/s1"),
    ("wss://sim.example.com/backtest", "backtest/s1", "https://sim.example.com/backtest/s1"),
    ("ws://localhost:8900/backtest", "/backtest/s1", "http://localhost:8900/backtest/s1"),
    ("wss://sim.example.com/sim/backtest", "/backtest/s1",
     "https://sim.example.com/backtest/s1"),
    ("sim.example.com", "/backtest/s1", "https://sim.example.com/backtest/s1"),
    # absolute endpoints are used as given (even on another host or scheme)
    ("wss://sim.example.com/backtest", "https://other.example.com/backtest/s1",
     "https://other.example.com/backtest/s1"),
    ("wss://sim.example.com/backtest", "http://10.0.0.5:8080/backtest/s1",
     "http://10.0.0.5:8080/backtest/s1"),
])
def test_rpc_url(control: str, endpoint: str, expected: str) -> None:
    assert rpc_url(control, endpoint) == expected


def test_rpc_url_absolute_with_uppercase_scheme() -> None:
    resolved = rpc_url("wss://h/backtest", "HTTPS://other/backtest/x")
    assert urlsplit(resolved).hostname == "other"
    assert urlsplit(resolved).path == "/backtest/x"


@PROPERTY
@given(urls, st.lists(segment, min_size=1, max_size=3))
def test_rpc_path_is_joined_to_the_http_base(parts: Tuple[Any, ...], segments: Any) -> None:
    path = "/" + "/".join(segments)
    control = build(*parts)
    assert rpc_url(control, path) == http_base(control) + path
    assert rpc_url(control, path.lstrip("/")) == http_base(control) + path


# ----------------------------------------------------------------------------- pubsub


@pytest.mark.parametrize(("rpc", "expected"), [
    ("https://sim.example.com/backtest/s1", "wss://sim.example.com/backtest/s1"),
    ("http://localhost:8900/backtest/s1", "ws://localhost:8900/backtest/s1"),
    ("https://sim.example.com:8443/backtest/s1?x=1", "wss://sim.example.com:8443/backtest/s1?x=1"),
    ("HTTPS://sim.example.com/backtest/s1", "wss://sim.example.com/backtest/s1"),
])
def test_pubsub_url(rpc: str, expected: str) -> None:
    assert pubsub_url(rpc) == expected


@pytest.mark.parametrize("bad", ["wss://h/backtest/s1", "ws://h/x", "ftp://h/x", "",
                                 "/backtest/s1"])
def test_pubsub_url_needs_an_http_url(bad: str) -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        pubsub_url(bad)


@PROPERTY
@given(urls, st.lists(segment, min_size=1, max_size=3))
def test_pubsub_of_rpc_mirrors_the_control_scheme(parts: Tuple[Any, ...], segments: Any) -> None:
    control = control_url(build(*parts))
    pubsub = pubsub_url(rpc_url(control, "/" + "/".join(segments)))
    assert urlsplit(pubsub).scheme == urlsplit(control).scheme
    assert urlsplit(pubsub).netloc == urlsplit(control).netloc
    assert urlsplit(pubsub).path == "/" + "/".join(segments)


# ----------------------------------------------------------------------------- same_host


def test_same_host() -> None:
    assert same_host("wss://Sim.Example.com/backtest", "https://sim.example.com:8443/x")
    assert not same_host("wss://a.example.com/backtest", "https://b.example.com/x")


def test_rpc_endpoint_problems() -> None:
    from simsync.urls import rpc_endpoint_problem

    assert rpc_endpoint_problem("wss://h/backtest", "https://h/backtest/x") is None
    assert rpc_endpoint_problem("ws://h:1/backtest", "http://h:1/backtest/x") is None
    assert "another host" in (rpc_endpoint_problem("wss://h/backtest",
                                                   "https://evil/backtest/x") or "")
    assert "plain-http" in (rpc_endpoint_problem("wss://h/backtest",
                                                 "http://h/backtest/x") or "")
