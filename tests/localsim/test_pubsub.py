"""Per-session PubSub: subscribe, notifications, replayFromSlot, end of stream, refusals."""
from __future__ import annotations

import base64

import pytest
from solders.transaction import VersionedTransaction

from simsync.localsim import MEMO_PROGRAM_ID, SYSTEM_PROGRAM_ID, TOKEN_PROGRAM_ID, LocalSimulator
from simsync.localsim.testing import START

pytestmark = pytest.mark.timeout(30)
END = START + 8


def _results(msgs, method):
    return [m["params"]["result"] for m in msgs if m.get("method") == method]


def test_transactions_and_diffs_until_subscription_complete(sim: LocalSimulator,
                                                           clients) -> None:
    c = clients["control"](sim)
    sid = c.create(end=END)
    p = clients["pubsub"](sim, sid)
    tx_ack = p.subscribe("transactionSubscribe", {"programIds": [SYSTEM_PROGRAM_ID]},
                         {"commitment": "confirmed"})
    diff_ack = p.subscribe("accountDiffSubscribe", {"programIds": [TOKEN_PROGRAM_ID]}, {})
    assert tx_ack["id"] == 1 and isinstance(tx_ack["result"], int)
    assert diff_ack["result"] != tx_ack["result"]
    while c.step(advanceCount=4)[-1]["method"] != "completed":
        pass
    msgs = p.until_complete(tx_ack["result"])
    msgs += p.until_complete(diff_ack["result"]) if not any(
        m.get("method") == "subscriptionComplete" and
        m["params"]["subscription"] == diff_ack["result"] for m in msgs) else []
    txs = _results(msgs, "transactionNotification")
    expected = [e.signature for e in sim.executed(sid) if SYSTEM_PROGRAM_ID in e.program_ids]
    assert [_first_signature(t) for t in txs] == expected
    assert all("signature" not in t for t in txs)  # standard Solana form: no top-level field
    first = txs[0]
    assert set(first) >= {"slot", "transaction", "meta", "blockTime", "version"}
    assert first["transaction"][1] == "base64"  # the default encoding
    assert set(first["meta"]) >= {"err", "fee", "preBalances", "postBalances", "logMessages"}
    diffs = _results(msgs, "accountDiffNotification")
    token_sigs = {e.signature for e in sim.executed(sid) if TOKEN_PROGRAM_ID in e.program_ids}
    assert diffs and {d["signature"] for d in diffs} == token_sigs
    assert all(set(d) >= {"context", "account", "signature", "pre", "post"} for d in diffs)
    # every notification came before the end of stream
    last_note = max(i for i, m in enumerate(msgs) if m.get("method", "").endswith("Notification"))
    first_end = min(i for i, m in enumerate(msgs) if m.get("method") == "subscriptionComplete")
    assert last_note < first_end


def test_replay_from_slot(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    sid = c.create(end=END)
    c.step(advanceCount=5)
    from_slot = sim.produced_slots(START, END)[2]
    p = clients["pubsub"](sim, sid)
    ack = p.subscribe("transactionSubscribe", {"programIds": []},
                      {"replayFromSlot": from_slot})
    expected = [e.signature for e in sim.executed(sid) if e.slot >= from_slot]
    got = [_first_signature(p.recv()["params"]["result"]) for _ in expected]
    assert got == expected
    assert ack["result"] >= 1
    c.step()
    live = p.recv()["params"]["result"]
    assert live["slot"] == sim.produced_slots(START, END)[5]


def test_subscribe_after_end_gets_complete_at_once(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    sid = c.create(end=START)
    c.step()
    p = clients["pubsub"](sim, sid)
    ack = p.subscribe("transactionSubscribe", {"programIds": [SYSTEM_PROGRAM_ID]}, {})
    assert p.recv() == {"jsonrpc": "2.0", "method": "subscriptionComplete",
                        "params": {"subscription": ack["result"]}}
    c.send("closeBacktestSession")
    assert c.recv() == {"method": "success"}
    p2 = clients["pubsub"](sim, sid)  # after the session is gone, still an end of stream
    ack2 = p2.subscribe("accountDiffSubscribe", {"programIds": [SYSTEM_PROGRAM_ID]})
    assert p2.recv()["method"] == "subscriptionComplete"
    assert ack2["result"] >= 1


def test_close_ends_every_subscription(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    sid = c.create(end=END)
    p = clients["pubsub"](sim, sid)
    ack = p.subscribe("slotSubscribe")
    c.step()
    note = p.recv()
    assert note["method"] == "slotNotification"
    assert note["params"]["result"]["slot"] == START
    c.send("closeBacktestSession")
    assert p.until_complete(ack["result"])


def test_refusals_and_errors(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    sid = c.create(end=END)
    p = clients["pubsub"](sim, sid)
    bad = p.subscribe("transactionSubscribe", {"programIds": ["not base58!"]}, {})
    assert bad["error"]["code"] == -32602 and "result" not in bad
    assert p.subscribe("frobnicateSubscribe", {})["error"]["code"] == -32601
    p.ws.send("{nope")
    assert p.recv()["error"]["code"] == -32700
    ok = p.subscribe("transactionSubscribe", {"accountKeys": [sim.wallets[0]]}, {})
    assert isinstance(ok["result"], int)
    unknown = clients["pubsub"](sim, "backtest_missing")
    assert unknown.subscribe("slotSubscribe")["error"]["code"] == -32002


def test_account_logs_program_signature_subscriptions(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    sid = c.create(end=END)
    p = clients["pubsub"](sim, sid)
    wallet = sim.wallets[2]
    subs = {
        "account": p.subscribe("accountSubscribe", wallet, {"encoding": "base64"})["result"],
        "logs": p.subscribe("logsSubscribe", {"mentions": [MEMO_PROGRAM_ID]})["result"],
        "program": p.subscribe("programSubscribe", TOKEN_PROGRAM_ID)["result"],
    }
    while c.step(advanceCount=4)[-1]["method"] != "completed":
        pass
    msgs = []
    for sub in subs.values():
        if not any(m.get("method") == "subscriptionComplete" and
                   m["params"]["subscription"] == sub for m in msgs):
            msgs += p.until_complete(sub)
    executed = sim.executed(sid)
    memo = [e.signature for e in executed if MEMO_PROGRAM_ID in e.program_ids]
    assert [r["value"]["signature"] for r in _results(msgs, "logsNotification")] == memo
    assert _results(msgs, "programNotification")
    account_notes = _results(msgs, "accountNotification")
    assert account_notes and all(n["value"]["owner"] == SYSTEM_PROGRAM_ID for n in account_notes)


def test_unsubscribe(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    sid = c.create(end=END)
    p = clients["pubsub"](sim, sid)
    sub = p.subscribe("slotSubscribe")["result"]
    other = p.subscribe("transactionSubscribe", {})["result"]
    assert p.subscribe("slotUnsubscribe", sub)["result"] is True
    assert p.subscribe("slotUnsubscribe", sub)["result"] is False
    c.send("closeBacktestSession")
    msgs = p.until_complete(other)
    assert not any(m.get("method") == "slotNotification" for m in msgs)


def _first_signature(result) -> str:
    """The first signature of a base64 ``transactionNotification`` result, via solders."""
    data, encoding = result["transaction"]
    assert encoding == "base64"
    return str(VersionedTransaction.from_bytes(base64.b64decode(data)).signatures[0])


def test_json_parsed_notifications_parse_instructions(sim: LocalSimulator, clients) -> None:
    """``transactionSubscribe`` with ``encoding: jsonParsed`` gives what getTransaction gives
    with it (Agave's parsed System instructions), not the raw ``json`` form."""
    c = clients["control"](sim)
    sid = c.create(end=START + 3)
    p = clients["pubsub"](sim, sid)
    ack = p.subscribe("transactionSubscribe", {"programIds": [SYSTEM_PROGRAM_ID]},
                      {"encoding": "jsonParsed"})
    while c.step(advanceCount=4)[-1]["method"] != "completed":
        pass
    txs = _results(p.until_complete(ack["result"]), "transactionNotification")
    assert txs
    instructions = [ix for t in txs for ix in t["transaction"]["message"]["instructions"]]
    system = [ix for ix in instructions if ix.get("programId") == SYSTEM_PROGRAM_ID]
    assert system and all(ix["program"] == "system" and "type" in ix["parsed"]
                          for ix in system), system[:2]
    keys = txs[0]["transaction"]["message"]["accountKeys"]
    assert all(set(k) >= {"pubkey", "signer", "writable"} for k in keys)
