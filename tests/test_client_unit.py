"""``Client`` as a pure HTTP client (``/available-ranges``) and its argument checks."""
from __future__ import annotations

import pytest
import responses

import simsync
from tests.fixtures import GOLDEN

pytestmark = pytest.mark.timeout(20)
KEY = "key-for-ranges-123"


@responses.activate
def test_available_ranges_decodes_old_and_new_fields_and_sends_the_key() -> None:
    body = (GOLDEN / "available-ranges.json").read_text()
    responses.get("https://sim.example.com/available-ranges", body=body)
    ranges = simsync.Client("sim.example.com", api_key=KEY).available_ranges()
    assert [r.bundle_start_slot for r in ranges] == [400000000, 400050000, 400100000]
    assert ranges[0].max_bundle_size == 50000 and ranges[0].kind == "blocks"
    assert ranges[2].max_bundle_end_slot is None and ranges[2].snapshot_slot == 400099000
    assert responses.calls[0].request.headers["X-API-Key"] == KEY


@responses.activate
def test_available_ranges_http_error_has_status_not_key() -> None:
    responses.get("https://sim.example.com/available-ranges", status=401, body="no")
    with pytest.raises(simsync.RpcError) as info:
        simsync.Client("sim.example.com", api_key=KEY).available_ranges()
    assert info.value.http_status == 401
    assert KEY not in str(info.value)


@responses.activate
def test_available_ranges_bad_body_is_a_protocol_error() -> None:
    responses.get("https://sim.example.com/available-ranges", body='[{"kind": "x"}]')
    with pytest.raises(simsync.ProtocolError, match="bundleStartSlot"):
        simsync.Client("sim.example.com").available_ranges()


def test_client_repr_hides_the_key() -> None:
    the_client = simsync.Client("sim.example.com", api_key=KEY)
    assert KEY not in repr(the_client) and "<set>" in repr(the_client)


def test_start_session_argument_errors() -> None:
    the_client = simsync.Client("ws://127.0.0.1:9/backtest")
    with pytest.raises(ValueError, match="after end_slot"):
        the_client.start_session(start_slot=10, end_slot=5)
    with pytest.raises(TypeError, match="no_such_field"):
        the_client.start_session(start_slot=1, end_slot=2, no_such_field=1)  # type: ignore
    with pytest.raises(ValueError, match="start_parallel"):
        the_client.start_session(start_slot=1, end_slot=2, parallel=True)
