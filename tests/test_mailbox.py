"""The mailbox between reader threads and the user: order, limits, failures, wake-ups."""
from __future__ import annotations

import threading

import pytest

from simsync.errors import EventTimeout, SessionClosed, SlowConsumerError
from simsync.mailbox import Mailbox

pytestmark = pytest.mark.timeout(20)


def test_events_come_out_in_order_across_batches() -> None:
    box = Mailbox(data_limit=100, slow_consumer_timeout=1)
    for i in range(10):
        box.put(i)
    first = [box.get(1) for _ in range(5)]
    for i in range(10, 15):
        box.put_data(i, lambda: False)
    assert first + [box.get(1) for _ in range(10)] == list(range(15))


def test_data_beyond_the_limit_waits_then_fails_slow_consumer() -> None:
    box = Mailbox(data_limit=3, slow_consumer_timeout=0.3)
    for i in range(3):
        box.put_data(i, lambda: False)
    assert box.buffered_data == 3
    with pytest.raises(SlowConsumerError, match="3 events behind"):
        box.put_data(3, lambda: False)
    assert box.buffered_data == 3
    with pytest.raises(SlowConsumerError):
        box.get(1)


def test_a_waiting_producer_resumes_when_the_consumer_reads() -> None:
    box = Mailbox(data_limit=2, slow_consumer_timeout=30)
    box.put_data(0, lambda: False)
    box.put_data(1, lambda: False)
    producer = threading.Thread(target=box.put_data, args=(2, lambda: False))
    producer.start()
    assert [box.get(5), box.get(5), box.get(5)] == [0, 1, 2]
    producer.join(5)
    assert not producer.is_alive()


def test_control_events_are_never_held_back() -> None:
    box = Mailbox(data_limit=1, slow_consumer_timeout=0.1)
    box.put_data("data", lambda: False)
    for i in range(50):
        box.put(i)
    assert box.buffered == 51


def test_timeout_close_and_failure() -> None:
    box = Mailbox(data_limit=10, slow_consumer_timeout=1)
    with pytest.raises(EventTimeout):
        box.get(0.05)
    box.close("bye")
    with pytest.raises(SessionClosed, match="bye"):
        box.get(None)
    failed = Mailbox(data_limit=10, slow_consumer_timeout=1)
    failed.put("queued")
    failed.fail(RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        failed.get(1)


def test_close_wakes_a_blocked_consumer() -> None:
    box = Mailbox(data_limit=10, slow_consumer_timeout=1)
    errors: list = []
    consumer = threading.Thread(target=lambda: errors.append(pytest.raises(
        SessionClosed, box.get, None)))
    consumer.start()
    box.close("closed")
    consumer.join(5)
    assert not consumer.is_alive() and errors
