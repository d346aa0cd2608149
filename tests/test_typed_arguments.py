"""Typed arguments (issue 27 item 8): ``start_session``/``start_parallel``/``attach_session``
take explicit keywords that mypy checks; argument errors are ``SimsyncError``s that are also
``ValueError``/``TypeError``; ``Client`` is a context manager with ``close()``."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import simsync

URL = "ws://127.0.0.1:9/backtest"   # never connected: every error here comes first

BAD = textwrap.dedent("""
    import simsync
    client = simsync.Client("ws://127.0.0.1:9/backtest")
    client.start_session(start_slot=1, end_slott=5)
    client.start_session(start_slot="400000000", end_slot=400000005)
    client.start_parallel(start_slot=1, end_slot=5, disconect_timeout_secs=60)
    client.attach_session(12345)
    with simsync.Client("ws://127.0.0.1:9/backtest") as other:
        reveal_type(other)
""")


@pytest.mark.timeout(300)
def test_mypy_strict_flags_a_misspelt_field_and_a_str_slot(tmp_path: Path) -> None:
    snippet = tmp_path / "bot.py"
    snippet.write_text(BAD, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "--cache-dir", os.devnull, str(snippet)],
                          capture_output=True, text=True, timeout=280, cwd=tmp_path,
                          stdin=subprocess.DEVNULL)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert 'bot.py:4: error: Unexpected keyword argument "end_slott"' in out, out
    assert ('bot.py:5: error: Argument "start_slot" to "start_session" of "Client" has '
            'incompatible type "str"') in out, out
    assert 'bot.py:6: error: Unexpected keyword argument "disconect_timeout_secs"' in out, out
    assert 'bot.py:7: error: Argument 1 to "attach_session" of "Client" has incompatible' in out
    assert 'bot.py:9: note: Revealed type is "simsync.client.Client"' in out, out


@pytest.mark.parametrize(("fields", "kind", "words"), [
    ({"start_slot": 10, "end_slot": 5}, ValueError, "after end_slot"),
    ({"start_slot": "400000000", "end_slot": 400000005}, ValueError, "start_slot"),
    ({"start_slot": 1, "end_slot": 5, "disconnect_timeout_secs": 901}, ValueError, "900"),
    ({"start_slot": 1, "end_slot": 5, "slot_count": 5}, TypeError, "both"),
    ({"end_slot": 5}, TypeError, "start_slot is required"),
    ({"start_slot": 1, "end_slot": 5, "parallel": True}, ValueError, "start_parallel"),
])
def test_session_argument_errors_are_simsync_errors(fields: dict, kind: type,
                                                    words: str) -> None:
    client = simsync.Client(URL)
    with pytest.raises(simsync.InvalidArgumentError, match=words) as info:
        client.start_session(**fields)
    assert isinstance(info.value, simsync.SimsyncError) and isinstance(info.value, kind)
    if kind is TypeError:
        assert isinstance(info.value, simsync.InvalidArgumentTypeError)
    if "parallel" not in fields:
        with pytest.raises(kind) as parallel:
            client.start_parallel(**fields)
        assert isinstance(parallel.value, simsync.SimsyncError)


def test_attach_argument_errors_are_simsync_errors() -> None:
    client = simsync.Client(URL)
    with pytest.raises(simsync.InvalidArgumentTypeError) as info:
        client.attach_session(12345)  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError)
    with pytest.raises(simsync.InvalidArgumentTypeError, match="SessionCursor"):
        client.attach_session("abc", cursor="a cursor")  # type: ignore[arg-type]
    params = simsync.CreateSessionParams(start_slot=1, end_slot=5)
    with pytest.raises(simsync.InvalidArgumentTypeError, match="not both"):
        client.start_session(params, end_slot=6)


def test_client_is_a_context_manager_that_refuses_sessions_once_closed() -> None:
    with simsync.Client(URL) as client:
        assert isinstance(client, simsync.Client)
    assert "closed" in repr(client)
    with pytest.raises(simsync.SessionClosed, match="Client is closed"):
        client.start_session(start_slot=1, end_slot=5)
    with pytest.raises(simsync.SessionClosed):
        client.start_parallel(start_slot=1, end_slot=5)
    with pytest.raises(simsync.SessionClosed):
        client.attach_session("abc")
    client.close()   # idempotent
