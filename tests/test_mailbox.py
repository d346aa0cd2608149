"""The mailbox between reader threads and the user: order, limits, failures, wake-ups."""
from __future__ import annotations

import signal
import threading
import time

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
    assert [box.get(1) for _ in range(3)] == [0, 1, 2]     # what came before, in order
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


def test_a_failure_arrives_after_every_event_before_it_then_session_closed() -> None:
    box = Mailbox(data_limit=10, slow_consumer_timeout=1)
    box.put("control")
    box.put_data("data", lambda: False)
    box.fail(RuntimeError("boom"))
    box.put("late")                       # after the end: never delivered
    box.fail(RuntimeError("second"))      # the first end wins
    assert [box.get(1), box.get(1)] == ["control", "data"]
    with pytest.raises(RuntimeError, match="boom"):
        box.get(1)
    for _ in range(2):
        with pytest.raises(SessionClosed, match="boom"):
            box.get(1)


def test_a_timeout_holds_while_another_thread_waits() -> None:
    box = Mailbox(data_limit=10, slow_consumer_timeout=1)
    waiter = threading.Thread(target=lambda: pytest.raises(SessionClosed, box.get, None))
    waiter.start()
    started = time.monotonic()
    with pytest.raises(EventTimeout):
        box.get(0.3)
    assert time.monotonic() - started < 3
    box.close("done")
    waiter.join(5)
    assert not waiter.is_alive()


def test_put_and_close_are_safe_from_a_signal_handler_on_the_consuming_thread() -> None:
    """The handler runs on the thread that is inside ``get``: nothing may deadlock."""
    box = Mailbox(data_limit=10, slow_consumer_timeout=1)
    previous = signal.signal(signal.SIGALRM, lambda *_: (box.put("from handler"),
                                                          box.close("closed by handler")))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        assert box.get(5) == "from handler"
        with pytest.raises(SessionClosed, match="closed by handler"):
            box.get(5)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_close_wakes_a_blocked_consumer() -> None:
    box = Mailbox(data_limit=10, slow_consumer_timeout=1)
    errors: list = []
    consumer = threading.Thread(target=lambda: errors.append(pytest.raises(
        SessionClosed, box.get, None)))
    consumer.start()
    box.close("closed")
    consumer.join(5)
    assert not consumer.is_alive() and errors
