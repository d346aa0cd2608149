"""``ClientConfig``: PROTOCOL.md §11 defaults, validation, replace, pickling, repr."""
from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any, Dict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simsync.config import SERVER_DETACH_CEILING_SECS, ClientConfig

pytestmark = pytest.mark.timeout(120)

PROPERTY = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

#: Fields that must be strictly positive durations.
POSITIVE = ("connect_timeout", "handshake_timeout", "parallel_create_frame_timeout",
            "ping_interval", "dead_after", "backoff_initial", "backoff_max", "drain_timeout",
            "rpc_timeout", "slow_consumer_timeout", "close_timeout",
            "initial_connect_budget")
#: Fields that may be zero but not negative.
NON_NEGATIVE = ("reconnect_budget", "stable_after")
#: Every numeric field (a bool must not pass for one).
NUMERIC = POSITIVE + NON_NEGATIVE + ("max_buffered_events", "coordinator_quick_attempts")




def make(**changes: Any) -> ClientConfig:
    """``ClientConfig(**changes)`` with the values typed loosely (tests pass bad ones)."""
    return ClientConfig(**changes)


# ----------------------------------------------------------------------------- defaults


def test_defaults_are_the_reference_clients() -> None:
    config = ClientConfig()
    assert config.connect_timeout == 30
    assert config.handshake_timeout == 30
    assert config.parallel_create_frame_timeout == 900
    assert config.ping_interval == 15
    assert config.dead_after == 45
    assert 0 < config.reconnect_budget < SERVER_DETACH_CEILING_SECS == 900
    assert config.drain_timeout == 60
    assert config.backoff_initial <= config.backoff_max
    assert config.extra_headers == {}
    assert config.allow_foreign_rpc_host is False
    assert config.ca_bundle is None
    assert config.initial_connect_budget == 5      # a dead first connect fails fast (#27.4)


def test_defaults_are_not_shared_between_instances() -> None:
    a, b = ClientConfig(), ClientConfig()
    assert a == b
    assert a.extra_headers is not b.extra_headers


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("name", POSITIVE)
@pytest.mark.parametrize("value", [0, 0.0, -1, -0.5])
def test_non_positive_durations_are_rejected(name: str, value: float) -> None:
    changes: Dict[str, Any] = {name: value}
    if name == "backoff_max":
        changes["backoff_initial"] = 0.0001 if value > 0 else 0.25
    with pytest.raises(ValueError, match=name):
        make(**changes)


@pytest.mark.parametrize("name", NON_NEGATIVE)
def test_non_negative_fields(name: str) -> None:
    assert getattr(make(**{name: 0}), name) == 0
    with pytest.raises(ValueError, match=name):
        make(**{name: -1})


@pytest.mark.parametrize("dead_after", [15, 14.9, 1])
def test_dead_after_must_exceed_ping_interval(dead_after: float) -> None:
    with pytest.raises(ValueError, match="dead_after must exceed ping_interval"):
        ClientConfig(ping_interval=15, dead_after=dead_after)
    assert ClientConfig(ping_interval=15, dead_after=15.01).dead_after == 15.01


def test_backoff_max_below_initial_is_rejected() -> None:
    with pytest.raises(ValueError, match="backoff_max must be >= backoff_initial"):
        ClientConfig(backoff_initial=2, backoff_max=1)
    assert ClientConfig(backoff_initial=2, backoff_max=2).backoff_max == 2


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("value", [True, False])
def test_a_bool_is_not_a_number(name: str, value: bool) -> None:
    with pytest.raises(ValueError, match=f"{name} must be a number"):
        make(**{name: value})


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("value", ["30", None, [1], {}])
def test_non_numbers_are_rejected(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"{name} must be a number"):
        make(**{name: value})


@pytest.mark.parametrize("value", [0, -1])
def test_max_buffered_events_at_least_one(value: int) -> None:
    with pytest.raises(ValueError, match="max_buffered_events must be >= 1"):
        ClientConfig(max_buffered_events=value)
    assert ClientConfig(max_buffered_events=1).max_buffered_events == 1


def test_coordinator_quick_attempts_not_negative() -> None:
    with pytest.raises(ValueError, match="coordinator_quick_attempts"):
        ClientConfig(coordinator_quick_attempts=-1)
    assert ClientConfig(coordinator_quick_attempts=0).coordinator_quick_attempts == 0


def test_small_test_values_are_fine() -> None:
    config = ClientConfig(connect_timeout=0.5, handshake_timeout=0.5, ping_interval=0.05,
                          dead_after=0.2, reconnect_budget=2, backoff_initial=0.01,
                          backoff_max=0.05, drain_timeout=0.5, close_timeout=0.5)
    assert config.dead_after == 0.2


def test_nan_is_rejected() -> None:
    for name in POSITIVE + NON_NEGATIVE:
        with pytest.raises(ValueError, match=name):
            make(**{name: float("nan")})


def test_int_fields_reject_fractions() -> None:
    for name in ("max_buffered_events", "coordinator_quick_attempts"):
        with pytest.raises(ValueError, match=name):
            make(**{name: 2.5})


# ----------------------------------------------------------------------------- replace, pickle


def test_replace_validates_again() -> None:
    config = ClientConfig()
    with pytest.raises(ValueError, match="dead_after"):
        config.replace(ping_interval=50)
    with pytest.raises(ValueError, match="connect_timeout"):
        config.replace(connect_timeout=0)
    with pytest.raises(ValueError, match="must be a number"):
        config.replace(rpc_timeout=True)
    changed = config.replace(ping_interval=50, dead_after=150)
    assert (changed.ping_interval, changed.dead_after) == (50, 150)
    assert (config.ping_interval, config.dead_after) == (15, 45)  # the original is untouched
    assert changed != config
    assert config.replace() == config


def test_replace_rejects_unknown_fields() -> None:
    with pytest.raises(TypeError):
        ClientConfig().replace(no_such_field=1)


def test_frozen() -> None:
    config = ClientConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.connect_timeout = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del config.ping_interval
    assert config.connect_timeout == 30


valid_configs = st.builds(
    lambda connect, ping, extra_dead, initial, extra_backoff, buffered, headers, ca: ClientConfig(
        connect_timeout=connect, ping_interval=ping, dead_after=ping + extra_dead,
        backoff_initial=initial, backoff_max=initial + extra_backoff,
        max_buffered_events=buffered, extra_headers=headers, ca_bundle=ca),
    st.floats(0.001, 1e6), st.floats(0.001, 1e3), st.floats(0.001, 1e3),
    st.floats(0.001, 10), st.floats(0, 100), st.integers(1, 10**6),
    st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=3),
    st.none() | st.text(max_size=20))


@PROPERTY
@given(valid_configs)
def test_pickle_and_copy_round_trip(config: ClientConfig) -> None:
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert pickle.loads(pickle.dumps(config, protocol)) == config
    assert copy.deepcopy(config) == config
    assert config.replace() == config


def test_pickle_default() -> None:
    config = ClientConfig(extra_headers={"X-Trace": "1"})
    clone = pickle.loads(pickle.dumps(config))
    assert clone == config and clone is not config
    assert clone.extra_headers == {"X-Trace": "1"}


# ----------------------------------------------------------------------------- repr


def test_repr_hides_extra_header_values() -> None:
    secret = "sk-live-0123456789abcdef"
    config = ClientConfig(extra_headers={"Authorization": f"Bearer {secret}",
                                         "X-Other": secret})
    for text in (repr(config), str(config), f"{config}", f"{config!r}"):
        assert secret not in text
        assert "hidden" in text
    assert "connect_timeout=30.0" in repr(config)


@PROPERTY
@given(st.dictionaries(st.text(min_size=1, max_size=10),
                       st.from_regex(r"\A[A-Za-z0-9]{12,24}\Z"), min_size=1, max_size=3))
def test_repr_never_shows_a_header_value(headers: Dict[str, str]) -> None:
    text = repr(ClientConfig(extra_headers=headers))
    for value in headers.values():
        assert value not in text
