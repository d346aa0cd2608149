"""``Transaction.signature`` and ``dedup_key`` from the transaction in each of Solana's
encodings (``json``, ``jsonParsed``, ``base58``, ``base64``), without the non-standard top-level
``signature`` field: the right signature, and two distinct transactions never share a key."""
from __future__ import annotations

import base64
import json
from typing import Any, List

import base58
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from simsync.localsim import MEMO_PROGRAM_ID
from simsync.localsim.chain import TX_ENCODINGS, encode_transaction
from simsync.protocol import Transaction, decode_response

PROPERTY = settings(max_examples=100, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
MEMO = Pubkey.from_string(MEMO_PROGRAM_ID)


def _transaction(seed: int, signers: int, memo: bytes) -> VersionedTransaction:
    keys = [Keypair.from_seed(bytes([(seed + i) % 256]) * 32) for i in range(signers)]
    ix = Instruction(MEMO, memo, [])
    message = Message.new_with_blockhash([ix], keys[0].pubkey(), Hash.default())
    return VersionedTransaction(message, keys[:max(1, message.header.num_required_signatures)])


def _notification(tx: VersionedTransaction, encoding: str) -> Transaction:
    frame = {"jsonrpc": "2.0", "method": "transactionNotification", "params": {
        "subscription": 3, "result": {"slot": 9, "transaction": encode_transaction(
            bytes(tx), encoding), "meta": {"err": None}, "blockTime": 1, "version": "legacy"}}}
    decoded = decode_response(json.dumps(frame))[1]
    assert isinstance(decoded, Transaction)
    return decoded


transactions = st.builds(_transaction, st.integers(0, 255), st.integers(1, 3),
                         st.binary(min_size=0, max_size=200))


@PROPERTY
@given(transactions, st.sampled_from(TX_ENCODINGS))
def test_signature_is_the_first_signature_in_every_encoding(tx: VersionedTransaction,
                                                            encoding: str) -> None:
    event = _notification(tx, encoding)
    assert event.signature == str(tx.signatures[0])
    assert event.signature_bytes == bytes(tx.signatures[0])
    assert event.signature_hint is None  # no top-level field was sent


@PROPERTY
@given(st.lists(transactions, min_size=2, max_size=6), st.sampled_from(TX_ENCODINGS))
def test_dedup_key_never_merges_distinct_transactions(txs: List[VersionedTransaction],
                                                      encoding: str) -> None:
    events = [_notification(tx, encoding) for tx in txs]
    distinct = {bytes(tx.signatures[0]) for tx in txs}
    assert len({e.dedup_key for e in events}) == len(distinct)
    again = [_notification(tx, encoding) for tx in txs]  # a replay: the same keys
    assert [e.dedup_key for e in again] == [e.dedup_key for e in events]


def test_a_signature_count_above_127_is_read_as_compact_u16() -> None:
    sig = bytes(range(64))
    raw = bytes([0x80, 0x01]) + sig + bytes(64 * 127) + b"\x01"  # count 128
    for text, enc in ((base64.b64encode(raw).decode(), "base64"),
                      (base58.b58encode(raw).decode(), "base58")):
        event = Transaction(1, 1, [text, enc])
        assert event.signature_bytes == sig
        assert event.signature == base58.b58encode(sig).decode()


def test_unsigned_or_undecodable_transactions_do_not_merge() -> None:
    events: List[Any] = [Transaction(1, 1, ["!!!", "base64"]), Transaction(1, 1, ["??", "base58"]),
                         Transaction(1, 1, {"message": {}}), Transaction(1, 1, None)]
    assert all(e.signature == "" for e in events)
    assert len({e.dedup_key for e in events}) == len(events)
    hinted = Transaction(1, 1, {"message": {}}, signature_hint="abc")
    assert hinted.signature == "abc"  # the legacy field is the last resort only
