"""The standalone entry (``python -m simsync.localsim``) and stopping under load."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

from simsync.localsim import LocalSimulator
from simsync.localsim.testing import START, http_get

pytestmark = pytest.mark.timeout(60)


def test_module_entry_serves_until_ctrl_c() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "simsync.localsim", "--port", "0",
                             "--api-key", "hush-hush"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"ws://127\.0\.0\.1:(\d+)/backtest", line)
        assert match, line
        assert "hush-hush" not in line
        port = int(match.group(1))
        assert http_get(f"http://127.0.0.1:{port}/health").text == "ok"
        assert http_get(f"http://127.0.0.1:{port}/available-ranges").status_code == 401
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        assert "Traceback" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_stop_with_live_connections_and_a_running_step(clients) -> None:
    sim = LocalSimulator(slot_delay=0.05).start()
    try:
        c = clients["control"](sim)
        sid = c.create(end=START + 500, disconnectTimeoutSecs=60)
        p = clients["pubsub"](sim, sid)
        p.subscribe("transactionSubscribe", {})
        c.send("continue", {"advanceCount": 400})
        c.recv()
    finally:
        began = time.monotonic()
        sim.stop()
    assert time.monotonic() - began < 2.0
    assert sim.session_ids() == []
