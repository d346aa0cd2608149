"""Issue 24 item 12 / issue 27 item 1: the simulator's memory does not grow with the slots a
session executes, nor with the sessions that ended; the chain's log still answers."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from simsync.localsim import LocalSimulator
from simsync.localsim.testing import START, Rpc, wait_for

#: One fresh process: a simulator and a wire client in it, one session of 4,000 slots. It prints
#: the RSS (MiB) after 1,000 slots and after 4,000 (warm-up done: caches, imports, the LiteSVM).
_PROBE = textwrap.dedent("""
    import json
    from simsync.localsim import LocalSimulator
    from simsync.localsim.testing import Control, START

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2 ** 20

    with LocalSimulator(bundle_size=4000, bundles=1) as sim:
        control = Control(sim.url)
        control.create(START, START + 3999)
        marks = []
        for _ in range(2):
            control.step(advanceCount=1000 if not marks else 3000)
            marks.append(rss())
        control.close()
    print(json.dumps(marks))
""")


#: One fresh process, the server traced (tracemalloc; the wire client's own allocations
#: filtered out): one sequenced session (a detach window, so the control replay log is kept)
#: stepped 100 blocks at a time. It prints the traced bytes after 1,000 slots and after 4,000.
_TRACED = textwrap.dedent("""
    import gc, json, tracemalloc
    tracemalloc.start(8)
    from simsync.localsim import LocalSimulator
    from simsync.localsim.testing import Control, START

    def traced():
        gc.collect()
        snap = tracemalloc.take_snapshot().filter_traces([
            tracemalloc.Filter(False, "*/simsync/localsim/testing.py", all_frames=True),
            tracemalloc.Filter(False, "*/websocket/*", all_frames=True),
            tracemalloc.Filter(False, tracemalloc.__file__)])
        return sum(stat.size for stat in snap.statistics("filename"))

    with LocalSimulator(bundle_size=4000, bundles=1) as sim:
        control = Control(sim.url)
        control.create(START, START + 3999, disconnectTimeoutSecs=60)
        marks = []
        for target in (1000, 4000):
            while sim.call(lambda: next(iter(sim.registry.sessions.values())).current_slot)\
                    < START + target - 1:
                frames = control.step(advanceCount=100)
                control.frames.clear()
                if frames[-1]["method"] == "completed":
                    break
            marks.append(traced())  # the server is idle at the pause
        control.close()
    print(json.dumps(marks))
""")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_servers_retained_objects_do_not_grow_with_the_slots() -> None:
    """What the server keeps (traced Python allocations, not RSS noise) over 3,000 more slots
    of one session: bounded windows only (the PubSub replay window, the status cache, the
    block caches, the control log since the previous step), no per-slot structure. Before
    (the registry's list of ExecutedTx, the control log of every frame, one solders
    allocation kept per System transfer, plans with their own key tuples): ~2.3 KiB a slot."""
    proc = subprocess.run([sys.executable, "-c", _TRACED], capture_output=True, text=True,
                          timeout=580, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    after_1k, after_4k = json.loads(proc.stdout.splitlines()[-1])
    growth_per_slot = (after_4k - after_1k) / 3000
    assert growth_per_slot < 700, (after_1k, after_4k, growth_per_slot)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_long_session_does_not_grow_with_its_slots() -> None:
    """Before: ~28 KiB a slot (every TxRecord with its diffs' JSON kept): +80 MiB here."""
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          timeout=280, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    after_1k, after_4k = json.loads(proc.stdout.splitlines()[-1])
    growth_kib_per_slot = (after_4k - after_1k) * 1024 / 3000
    assert growth_kib_per_slot < 5, (after_1k, after_4k)


def test_an_ended_session_frees_its_chain(sim: LocalSimulator, clients) -> None:
    control = clients["control"](sim)
    session_id = control.create(START, START + 2)
    session = sim.call(lambda: sim.registry.sessions[session_id])
    assert sim.call(lambda: session.chain.transaction_count()) == 0
    control.step(advanceCount=1)
    assert sim.call(lambda: session.chain.transaction_count()) > 0
    control.send("closeBacktestSession")
    control.until("success")

    def closed() -> bool:
        return session_id not in sim.registry.sessions and session.chain.log.closed
    wait_for(lambda: sim.call(closed), 10.0, "the session's chain to be closed")
    with pytest.raises(RuntimeError, match="closed"):
        sim.call(lambda: session.chain.svm)


def test_the_log_answers_by_signature_block_and_address(sim: LocalSimulator, clients) -> None:
    control = clients["control"](sim)
    session_id = control.create(START, START + 5)
    control.step(advanceCount=3)
    session = sim.call(lambda: sim.registry.sessions[session_id])
    chain = session.chain
    executed = sim.executed(session_id)
    assert sim.call(chain.transaction_count) == len(executed) > 0
    first = executed[0]
    record = sim.call(lambda: chain.record(first.signature))
    assert record is not None and record.signature == first.signature
    assert record.slot == first.slot
    assert sim.call(lambda: chain.record("1" * 88)) is None
    in_block = sim.call(lambda: chain.block_records(first.slot))
    assert [r.signature for r in in_block] == [
        e.signature for e in executed if e.slot == first.slot]
    payer = record.account_keys[0]
    mine = [e.signature for e in executed
            if payer in sim.call(lambda e=e: chain.record(e.signature)).account_keys]
    newest_first = [r.signature for r in sim.call(
        lambda: chain.signatures_for(payer, None, None, 1000))]
    assert newest_first == mine[::-1]
    if len(mine) >= 3:
        window = sim.call(lambda: chain.signatures_for(payer, mine[-1], mine[0], 1000))
        assert [r.signature for r in window] == mine[1:-1][::-1]
    assert len(sim.call(lambda: chain.signatures_for(payer, None, None, 1))) == 1
    rpc = Rpc(sim.http_url, session_id)
    try:
        got = rpc.result("getTransaction", first.signature,
                         {"encoding": "json", "maxSupportedTransactionVersion": 0})
        assert got["slot"] == first.slot
    finally:
        rpc.close()
