"""Unit tests of simsync.rpc.SessionRpc against a mocked HTTP layer (``responses``)."""
from __future__ import annotations

import base64
import json
import threading
from typing import Any, Callable, Iterator, Optional

import pytest
import requests
import responses
import trustme
from solders.account import Account
from solders.address_lookup_table_account import AddressLookupTable
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.rpc.responses import RpcBlockhash, RpcKeyedAccount, RpcSimulateTransactionResult
from solders.signature import Signature
from solders.transaction_status import EncodedConfirmedTransactionWithStatusMeta, TransactionStatus

from simsync.config import ClientConfig
from simsync.errors import RpcError
from simsync.netpolicy import tls_context
from simsync.rpc import SessionRpc, to_base64

pytestmark = pytest.mark.timeout(30)

URL = "http://sim.test:8900/backtest/sess-1"
PK = "7KUqYd7U6WubnPaAm4PzA2PK1NEPw1NQkMFyX8zkrm5e"
PK2 = "11111111111111111111111111111111"
SIG = ("CcRFKaMVPFYhxsVCeavrFPubhefrbbqUe1Gnk1DBG5XojF8xgtZXhf4dqRHrH4TXXS9JvNmusSHL6acsEy219aY")
TX_BYTES = b"\x01" + b"\x07" * 64 + b"\x80rest-of-a-transaction"
TX_B64 = base64.b64encode(TX_BYTES).decode()
DOC_TX = ("AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB"
          "AAEDArczbMia1tLmq7zz4DinMNN0pJ1JtLdqIJPUw3YrGCzYAMHBsgN27lcgB6H2WQvFgyZuJYHa46puOQo9"
          "yQ8CVQbd9uHXZaGT2cvhRs7reawctIXtX1s3kTqM9YV+/wCp20C7Wj2aiuk5TReAXo+VTVg8QTHjs0UjNMMK"
          "CvpzZ+ABAgEBARU=")   # a transaction from the Solana RPC docs


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def rpc() -> Iterator[SessionRpc]:
    with SessionRpc(URL, ClientConfig(rpc_timeout=7.5)) as client:
        yield client


def body_of(call: Any) -> Any:
    raw = call.request.body
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def answer(mock: responses.RequestsMock, result: Any = None,
           reply: Optional[Callable[[dict[str, Any]], Any]] = None) -> None:
    """Answer every POST with a JSON-RPC reply echoing the request id."""
    def callback(request: Any) -> Any:
        req = json.loads(request.body)
        payload = reply(req) if reply else {"jsonrpc": "2.0", "id": req["id"], "result": result}
        return 200, {"Content-Type": "application/json"}, json.dumps(payload)
    mock.add_callback(responses.POST, URL, callback=callback)


# -- the generic call ---------------------------------------------------------------------------

def test_call_returns_result_and_sends_a_jsonrpc_request(mock: responses.RequestsMock,
                                                         rpc: SessionRpc) -> None:
    answer(mock, result={"anything": [1, 2]})
    assert rpc.call("getHealth", ["x", {"y": 1}]) == {"anything": [1, 2]}
    assert rpc.call("getHealth") == {"anything": [1, 2]}
    first, second = body_of(mock.calls[0]), body_of(mock.calls[1])
    assert first["jsonrpc"] == "2.0"
    assert first["method"] == "getHealth"
    assert first["params"] == ["x", {"y": 1}]
    assert second["params"] == []
    assert isinstance(first["id"], int) and second["id"] > first["id"]
    assert mock.calls[0].request.method == "POST"
    assert mock.calls[0].request.headers["Content-Type"] == "application/json"


def test_null_result_is_returned_as_none(mock: responses.RequestsMock, rpc: SessionRpc) -> None:
    answer(mock, result=None)
    assert rpc.call("getTransaction", [SIG]) is None
    assert rpc.get_transaction(SIG) is None


def test_request_uses_rpc_timeout_and_ca_bundle(mock: responses.RequestsMock, tmp_path: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets these override a Session-level verify; the configured bundle must still win.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "env-ca.pem"))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(tmp_path / "env-ca.pem"))
    answer(mock, result=1)
    bundle = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    config = ClientConfig(rpc_timeout=3.25, ca_bundle=str(bundle))
    with SessionRpc(URL, config) as client:
        client.get_slot()
    kwargs = mock.calls[0].request.req_kwargs  # type: ignore[attr-defined]
    assert kwargs["timeout"] == 3.25
    # the bundle is in the network policy's SSLContext (issue 23 item 1), never requests' own
    assert kwargs["verify"] is True
    assert tls_context(config).get_ca_certs() and len(tls_context(config).get_ca_certs()) == 1


def test_no_api_key_header_is_ever_sent(mock: responses.RequestsMock) -> None:
    answer(mock, reply=lambda req: {"jsonrpc": "2.0", "id": req["id"],
                                    "result": SIG if req["method"] == "sendTransaction" else 5})
    config = ClientConfig(extra_headers={"X-API-Key": "sekrit-key"})
    with SessionRpc(URL, config) as client:
        client.get_balance(PK)
        client.call("getSlot")
        client.send_transaction(TX_BYTES)
    assert len(mock.calls) == 3
    for call in mock.calls:
        headers = {k.lower(): v for k, v in call.request.headers.items()}
        assert "x-api-key" not in headers
        assert "sekrit-key" not in json.dumps(headers)
        assert b"sekrit-key" not in (call.request.body or b"")


# -- helpers: params sent and results unwrapped -------------------------------------------------

def shown(value: Any) -> Any:
    """A typed result compared by its fields where solders' types have no ``==`` that fits
    (a transaction record, a lookup table); anything else as is."""
    if isinstance(value, EncodedConfirmedTransactionWithStatusMeta):
        wire = base64.b64encode(bytes(value.transaction.transaction)).decode()
        return f"slot={value.slot} tx={wire}"
    if isinstance(value, AddressLookupTable):
        return f"table {[str(a) for a in value.addresses]}"
    return value


def ctx(value: Any) -> dict[str, Any]:
    return {"context": {"slot": 42}, "value": value}


ACCOUNT = {"lamports": 5, "owner": PK2, "data": ["", "base64"], "executable": False,
           "rentEpoch": 0, "space": 0}
TYPED = Account(lamports=5, data=b"", owner=Pubkey.from_string(PK2))
TABLE = {"key": PK, "state": {"deactivationSlot": 2**64 - 1, "lastExtendedSlot": 3,
                              "lastExtendedSlotStartIndex": 0, "authority": None,
                              "addresses": [PK2]}}

HELPERS: list[tuple[str, Callable[[SessionRpc], Any], str, list[Any], Any, Any]] = [
    ("get_slot", lambda r: r.get_slot(), "getSlot", [], 42, 42),
    ("get_balance", lambda r: r.get_balance(PK), "getBalance", [PK], ctx(1000), 1000),
    ("get_account_info", lambda r: r.get_account_info(PK), "getAccountInfo",
     [PK, {"encoding": "base64"}], ctx(ACCOUNT), TYPED),
    ("get_account_info_missing", lambda r: r.get_account_info(PK, encoding="jsonParsed"),
     "getAccountInfo", [PK, {"encoding": "jsonParsed"}], ctx(None), None),
    ("get_multiple_accounts", lambda r: r.get_multiple_accounts([PK, PK2]),
     "getMultipleAccounts", [[PK, PK2], {"encoding": "base64"}], ctx([ACCOUNT, None]),
     [TYPED, None]),
    ("get_program_accounts", lambda r: r.get_program_accounts(PK2), "getProgramAccounts",
     [PK2, {"encoding": "base64"}], [{"pubkey": PK, "account": ACCOUNT}],
     [RpcKeyedAccount(Pubkey.from_string(PK), TYPED)]),
    ("get_program_accounts_filters",
     lambda r: r.get_program_accounts(PK2, filters=[{"dataSize": 165}]), "getProgramAccounts",
     [PK2, {"encoding": "base64", "filters": [{"dataSize": 165}]}],
     ctx([{"pubkey": PK, "account": ACCOUNT}]), [RpcKeyedAccount(Pubkey.from_string(PK), TYPED)]),
    ("get_latest_blockhash", lambda r: r.get_latest_blockhash(), "getLatestBlockhash", [],
     ctx({"blockhash": PK2, "lastValidBlockHeight": 9}), RpcBlockhash(Hash.default(), 9)),
    ("get_fee_for_message", lambda r: r.get_fee_for_message(TX_BYTES), "getFeeForMessage",
     [TX_B64], ctx(5000), 5000),
    ("get_fee_for_message_null", lambda r: r.get_fee_for_message(TX_B64), "getFeeForMessage",
     [TX_B64], ctx(None), None),
    ("get_signature_statuses", lambda r: r.get_signature_statuses([SIG]),
     "getSignatureStatuses", [[SIG]], ctx([{"slot": 3, "confirmations": None, "err": None,
                                         "status": {"Ok": None}}]),
     [TransactionStatus(3)]),
    ("get_signature_statuses_history",
     lambda r: r.get_signature_statuses([SIG, SIG], search_transaction_history=True),
     "getSignatureStatuses", [[SIG, SIG], {"searchTransactionHistory": True}], ctx([None, None]),
     [None, None]),
    ("get_transaction", lambda r: r.get_transaction(SIG, "base64", commitment="confirmed"),
     "getTransaction", [SIG, {"encoding": "base64", "maxSupportedTransactionVersion": 0,
                              "commitment": "confirmed"}],
     {"slot": 3, "transaction": [DOC_TX, "base64"], "meta": None, "blockTime": None},
     "slot=3 tx=" + DOC_TX),
    ("simulate_transaction",
     lambda r: r.simulate_transaction(TX_BYTES, sigVerify=False, replace_recent_blockhash=True),
     "simulateTransaction",
     [TX_B64, {"encoding": "base64", "sigVerify": False, "replaceRecentBlockhash": True}],
     ctx({"err": None, "logs": ["ok"]}), RpcSimulateTransactionResult(logs=["ok"])),
    ("send_transaction", lambda r: r.send_transaction(TX_BYTES), "sendTransaction",
     [TX_B64, {"encoding": "base64", "skipPreflight": False}], SIG, Signature.from_string(SIG)),
    ("get_address_lookup_table", lambda r: r.get_address_lookup_table(PK),
     "getAddressLookupTable", [PK], ctx(TABLE), "table ['11111111111111111111111111111111']"),
    ("get_address_lookup_table_missing", lambda r: r.get_address_lookup_table(PK),
     "getAddressLookupTable", [PK], ctx(None), None),
    ("modify_accounts", lambda r: r.modify_accounts({PK: {"lamports": 1}}), "modifyAccounts",
     [{PK: {"lamports": 1}}], None, None),
]


@pytest.mark.parametrize(("helper", "method", "params", "result", "expected"),
                         [h[1:] for h in HELPERS], ids=[h[0] for h in HELPERS])
def test_helper_sends_standard_params_and_unwraps(mock: responses.RequestsMock, rpc: SessionRpc,
                                                  helper: Callable[[SessionRpc], Any],
                                                  method: str, params: list[Any], result: Any,
                                                  expected: Any) -> None:
    answer(mock, result=result)
    assert shown(helper(rpc)) == expected
    assert len(mock.calls) == 1
    sent = body_of(mock.calls[0])
    assert sent["method"] == method
    assert sent["params"] == params


def test_a_transaction_solders_cannot_read_is_an_rpc_error(mock: responses.RequestsMock,
                                                           rpc: SessionRpc) -> None:
    answer(mock, result={"slot": 3, "transaction": [TX_B64, "base64"], "meta": None,
                         "blockTime": None})       # not a deserializable transaction
    with pytest.raises(RpcError, match="getTransaction: unexpected result"):
        rpc.get_transaction(SIG, "base64")


@pytest.mark.parametrize("value", [{"key": PK}, {"state": {"addresses": [PK]}}, [1], "x"])
def test_a_lookup_table_of_another_shape_is_an_rpc_error(mock: responses.RequestsMock,
                                                         rpc: SessionRpc, value: Any) -> None:
    answer(mock, result=ctx(value))
    with pytest.raises(RpcError, match="getAddressLookupTable: unexpected result"):
        rpc.get_address_lookup_table(PK)


def test_helper_rejects_a_result_of_the_wrong_shape(mock: responses.RequestsMock,
                                                    rpc: SessionRpc) -> None:
    answer(mock, result={"context": {"slot": 1}, "value": "lots"})
    with pytest.raises(RpcError, match="getBalance: unexpected result"):
        rpc.get_balance(PK)


def test_pubkeys_accept_str_and_solders_objects(mock: responses.RequestsMock,
                                                rpc: SessionRpc) -> None:
    from solders.pubkey import Pubkey
    from solders.signature import Signature

    answer(mock, reply=lambda req: {"jsonrpc": "2.0", "id": req["id"], "result": ctx(
        [None] if req["method"] == "getSignatureStatuses" else 0)})
    key = Pubkey.from_string(PK)
    rpc.get_balance(key)
    rpc.get_signature_statuses([Signature.from_string(SIG)])
    assert body_of(mock.calls[0])["params"] == [PK]
    assert body_of(mock.calls[1])["params"] == [[SIG]]


def test_bad_pubkeys_are_refused_before_sending(mock: responses.RequestsMock,
                                                rpc: SessionRpc) -> None:
    with pytest.raises(TypeError):
        rpc.get_balance(bytes(32))
    with pytest.raises(ValueError, match="not base58"):
        rpc.get_balance({"not": "a key"})
    with pytest.raises(TypeError):
        rpc.get_multiple_accounts(PK)  # a lone string, not a list
    assert len(mock.calls) == 0


def test_modify_accounts_converts_values_and_keys(mock: responses.RequestsMock,
                                                  rpc: SessionRpc) -> None:
    from solders.account import Account
    from solders.pubkey import Pubkey

    class Data:
        def to_dict(self) -> dict[str, Any]:
            return {"lamports": 7, "owner": PK2}

    plain = {"data": {"data": "AQI=", "encoding": "base64"}, "executable": False,
             "lamports": 9, "owner": PK2, "space": 2}
    answer(mock, result="ok")
    third = str(Pubkey.new_unique())
    assert rpc.modify_accounts({
        PK: plain,
        Pubkey.from_string(PK2): Data(),
        third: Account(lamports=3, data=b"\x01\x02\x03", owner=Pubkey.from_string(PK2),
                       executable=True),
    }) == "ok"
    (payload,) = body_of(mock.calls[0])["params"]
    assert payload[PK] == plain
    assert payload[PK2] == {"lamports": 7, "owner": PK2}
    assert payload[third] == {"data": {"data": "AQID", "encoding": "base64"},
                              "executable": True, "lamports": 3, "owner": PK2, "space": 3}
    with pytest.raises(TypeError):
        rpc.modify_accounts({PK: 12})


# -- transaction conversion ---------------------------------------------------------------------

class WireForm:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def __bytes__(self) -> bytes:
        return self.raw


@pytest.mark.parametrize("tx", [TX_BYTES, bytearray(TX_BYTES), memoryview(TX_BYTES), TX_B64,
                                f"  {TX_B64}\n", WireForm(TX_BYTES)],
                         ids=["bytes", "bytearray", "memoryview", "b64", "b64-padded", "__bytes__"])
def test_send_transaction_accepts_every_form(mock: responses.RequestsMock, rpc: SessionRpc,
                                             tx: Any) -> None:
    answer(mock, result=SIG)
    assert str(rpc.send_transaction(tx)) == SIG
    assert body_of(mock.calls[0])["params"][0] == TX_B64


def test_solders_versioned_transaction_and_message_v0() -> None:
    from solders.hash import Hash
    from solders.keypair import Keypair
    from solders.message import Message, MessageV0, to_bytes_versioned
    from solders.pubkey import Pubkey
    from solders.system_program import TransferParams, transfer
    from solders.transaction import Transaction, VersionedTransaction

    payer = Keypair()
    ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=Pubkey.new_unique(),
                                 lamports=5))
    msg = MessageV0.try_compile(payer.pubkey(), [ix], [], Hash.default())
    vtx = VersionedTransaction(msg, [payer])
    assert base64.b64decode(to_base64(vtx)) == bytes(vtx)
    assert VersionedTransaction.from_bytes(base64.b64decode(to_base64(vtx))) == vtx
    assert base64.b64decode(to_base64(msg)) == to_bytes_versioned(msg)
    legacy = Message([ix], payer.pubkey())
    assert base64.b64decode(to_base64(legacy)) == bytes(legacy)
    ltx = Transaction([payer], legacy, Hash.default())
    assert base64.b64decode(to_base64(ltx)) == bytes(ltx)


@pytest.mark.parametrize(("bad", "exc"), [(12, TypeError), (None, TypeError), ([1, 2], TypeError),
                                          ("not base64!", ValueError), ("", ValueError),
                                          (b"", ValueError)])
def test_to_base64_refuses_what_is_not_a_wire_form(bad: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        to_base64(bad)


# -- failures -----------------------------------------------------------------------------------

def test_jsonrpc_error_object_raises_with_code_message_and_data(mock: responses.RequestsMock,
                                                                rpc: SessionRpc) -> None:
    answer(mock, reply=lambda req: {"jsonrpc": "2.0", "id": req["id"], "error": {
        "code": -32602, "message": "Invalid param: WrongSize", "data": {"logs": ["x"]}}})
    with pytest.raises(RpcError) as info:
        rpc.get_balance(PK)
    err = info.value
    assert err.code == -32602
    assert err.data == {"logs": ["x"]}
    assert err.http_status is None
    assert "Invalid param: WrongSize" in str(err)
    assert "getBalance" in str(err)


def test_jsonrpc_error_with_null_id_is_still_reported(mock: responses.RequestsMock,
                                                      rpc: SessionRpc) -> None:
    mock.add(responses.POST, URL, json={"jsonrpc": "2.0", "id": None,
                                        "error": {"code": -32700, "message": "Parse error"}})
    with pytest.raises(RpcError, match="Parse error") as info:
        rpc.get_slot()
    assert info.value.code == -32700


@pytest.mark.parametrize("status", [500, 503, 404])
def test_http_error_status_raises_with_status_and_a_short_excerpt(
        mock: responses.RequestsMock, rpc: SessionRpc, status: int) -> None:
    mock.add(responses.POST, URL, status=status, body="upstream exploded " + "z" * 5000)
    secret_param = "Fp7SecretParamVa1ueXXXXXXXXXXXXXXXXXXXXXXXX"
    with pytest.raises(RpcError) as info:
        rpc.get_balance(secret_param)
    err = info.value
    assert err.http_status == status
    assert err.code is None
    assert f"HTTP {status}" in str(err)
    assert "upstream exploded" in str(err)
    assert len(str(err)) < 400
    assert secret_param not in str(err)


def test_http_error_carrying_a_jsonrpc_error_keeps_both(mock: responses.RequestsMock,
                                                        rpc: SessionRpc) -> None:
    mock.add(responses.POST, URL, status=400, json={
        "jsonrpc": "2.0", "id": 1, "error": {"code": -32600, "message": "Invalid request"}})
    with pytest.raises(RpcError, match="Invalid request") as info:
        rpc.get_slot()
    assert info.value.http_status == 400
    assert info.value.code == -32600


@pytest.mark.parametrize("body", ["<html>gateway</html>", "", '{"jsonrpc": "2.0", "id": 1'])
def test_invalid_json_raises(mock: responses.RequestsMock, rpc: SessionRpc, body: str) -> None:
    mock.add(responses.POST, URL, status=200, body=body)
    with pytest.raises(RpcError, match="not JSON") as info:
        rpc.get_slot()
    assert info.value.http_status is None


def test_reply_that_is_not_an_object_raises(mock: responses.RequestsMock,
                                            rpc: SessionRpc) -> None:
    mock.add(responses.POST, URL, json=[{"jsonrpc": "2.0", "id": 1, "result": 1}])
    with pytest.raises(RpcError, match="not a JSON-RPC object"):
        rpc.get_slot()


def test_reply_without_result_or_error_raises(mock: responses.RequestsMock,
                                              rpc: SessionRpc) -> None:
    answer(mock, reply=lambda req: {"jsonrpc": "2.0", "id": req["id"]})
    with pytest.raises(RpcError, match="neither result nor error"):
        rpc.get_slot()


def test_reply_with_another_id_raises(mock: responses.RequestsMock, rpc: SessionRpc) -> None:
    answer(mock, reply=lambda req: {"jsonrpc": "2.0", "id": req["id"] + 100, "result": 1})
    with pytest.raises(RpcError, match="does not match"):
        rpc.get_slot()


def test_timeout_raises_chained(mock: responses.RequestsMock, rpc: SessionRpc) -> None:
    mock.add(responses.POST, URL, body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(RpcError) as info:
        rpc.send_transaction(TX_BYTES)
    err = info.value
    assert isinstance(err.__cause__, requests.exceptions.ReadTimeout)
    assert "rpc_timeout=7.5s" in str(err)
    assert "sendTransaction" in str(err)
    assert TX_B64 not in str(err)


def test_connection_error_raises_chained(mock: responses.RequestsMock, rpc: SessionRpc) -> None:
    mock.add(responses.POST, URL, body=requests.exceptions.ConnectionError("refused"))
    with pytest.raises(RpcError, match="connection failed") as info:
        rpc.get_slot()
    assert isinstance(info.value.__cause__, requests.exceptions.ConnectionError)
    assert info.value.http_status is None


# -- ended session, close, threads --------------------------------------------------------------

def test_ended_session_fails_fast_and_sends_nothing(mock: responses.RequestsMock) -> None:
    answer(mock, result=1)
    reason: list[Optional[str]] = [None]
    with SessionRpc(URL, ClientConfig(), ended=lambda: reason[0]) as client:
        assert client.get_slot() == 1
        reason[0] = "completed"
        for attempt in (client.get_slot, lambda: client.send_transaction(TX_BYTES),
                        lambda: client.call("getHealth")):
            with pytest.raises(RpcError, match=r"session has ended \(completed\)"):
                attempt()
    assert len(mock.calls) == 1


def test_session_ended_from_the_start_sends_nothing(mock: responses.RequestsMock) -> None:
    with SessionRpc(URL, ClientConfig(), ended=lambda: "closed by user") as client, \
            pytest.raises(RpcError, match="closed by user"):
        client.get_balance(PK)
    assert len(mock.calls) == 0


def test_failure_after_the_session_ended_meanwhile_says_so(mock: responses.RequestsMock) -> None:
    state: dict[str, Optional[str]] = {"reason": None}

    def callback(request: Any) -> Any:
        state["reason"] = "completed"
        return requests.exceptions.ConnectionError("connection reset")

    mock.add_callback(responses.POST, URL, callback=callback)
    with SessionRpc(URL, ClientConfig(), ended=lambda: state["reason"]) as client, \
            pytest.raises(RpcError, match=r"session has ended \(completed\)"):
        client.get_slot()
    assert len(mock.calls) == 1


def test_close_is_idempotent_and_later_calls_send_nothing(mock: responses.RequestsMock) -> None:
    answer(mock, result=1)
    client = SessionRpc(URL, ClientConfig())
    with client as entered:
        assert entered is client
        assert client.get_slot() == 1
    client.close()
    client.close()
    with pytest.raises(RpcError, match="closed"):
        client.get_slot()
    assert len(mock.calls) == 1


def test_repr_shows_the_url() -> None:
    client = SessionRpc(URL, ClientConfig(extra_headers={"X-API-Key": "sekrit-key"}))
    assert URL in repr(client)
    assert "sekrit" not in repr(client)
    client.close()
    assert "closed" in repr(client)


def test_constructor_refuses_a_non_http_url() -> None:
    with pytest.raises(ValueError):
        SessionRpc("wss://sim.test/backtest/x", ClientConfig())


def test_calls_from_many_threads_are_serialised_and_each_gets_its_answer(
        mock: responses.RequestsMock, rpc: SessionRpc) -> None:
    held: list[bool] = []

    def reply(req: dict[str, Any]) -> dict[str, Any]:
        held.append(rpc._lock.locked())
        return {"jsonrpc": "2.0", "id": req["id"], "result": req["params"][0]}

    answer(mock, reply=reply)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(20):
                assert rpc.call("echo", [f"{n}-{i}"]) == f"{n}-{i}"
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not errors
    assert len(held) == 120 and all(held)
    assert len({body_of(c)["id"] for c in mock.calls}) == 120
