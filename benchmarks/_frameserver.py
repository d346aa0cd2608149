"""A pre-built-frames WebSocket server for the throughput benchmarks, and the baseline client.

Not a benchmark itself: ``control_throughput.py`` and ``dataplane_throughput.py`` import it.

The server runs in its own process (``multiprocessing`` spawn), so it never shares the GIL with
the client being measured. At start-up it builds the whole stream once: every frame is encoded
by wsproto's ``FrameProtocol`` (no hand-rolled framing) and the encoded frames are joined into
one ``bytes``; serving a stream is then one ``socket.sendall``. Connections (one thread each in
the server process) are told apart by path:

* ``/backtest`` — just enough of PROTOCOL.md for ``Client.start_session``:
  ``createBacktestSession`` → ``sessionCreated`` + ``readyForContinue`` (``endSlot - startSlot``
  = how many frames of the stream this session gets); the first ``continue`` starts the
  stream (control kind: the stream goes out right here, then ``completed``; data kind: the
  stream goes out on the session's PubSub connection, then ``completed`` here);
  ``closeBacktestSession`` → ``success``.
* ``/backtest/<session_id>`` — PubSub: ``transactionSubscribe`` → ack; on the session's
  ``continue`` the stream, then ``subscriptionComplete``.
* ``/raw`` — the baseline and the raw drain: the first text frame from the client (``go`` or
  ``go K``: the first K frames) starts the same stream plus its end frame.
"""
from __future__ import annotations

import base64
import json
import multiprocessing
import queue
import socket
import statistics
import struct
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import psutil
import websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import FrameProtocol

CONTROL = "control"
DATA = "data"
DATA_ZSTD = "data+zstd"     # the data stream as binary frames of one streaming zstd context
SUBSCRIPTION = 5
FIRST_SLOT = 400_000_000
TX_PER_SLOT = 20
STATUSES = ("executingBlockTransactions", "executedBlockTransactions")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


# ----------------------------------------------------------------------------- frames


def control_frames(count: int) -> List[str]:
    """``count`` small sequenced control frames as a real step streams them: per slot,
    ``status executingBlockTransactions``, ``status executedBlockTransactions``,
    ``slotNotification``. seqIds start at 2 (1 is the first ``readyForContinue``)."""
    out: List[str] = []
    slot = FIRST_SLOT
    for i in range(count):
        seq = i + 2
        kind = i % 3
        if kind < 2:
            out.append(_dumps({"seqId": seq, "method": "status",
                               "params": {"status": STATUSES[kind]}}))
        else:
            slot += 1
            out.append(_dumps({"seqId": seq, "method": "slotNotification", "params": slot}))
    return out


def control_end(count: int) -> str:
    return _dumps({"seqId": count + 2, "method": "completed", "params": {"summary": None}})


def transaction_frames(count: int) -> List[str]:
    """``count`` realistic ~4.4 KB ``transactionNotification`` frames (the payload of
    ``benchmarks/decode.py``), each with its own first signature, ``TX_PER_SLOT`` per slot
    (so simsync's replay filter, which keys on slot + signature, lets every one through)."""
    from decode import transaction_frame  # benchmarks/ is on sys.path (script directory)

    template = json.loads(transaction_frame())
    raw = base64.b64decode(template["params"]["result"]["transaction"][0])
    template["params"]["result"]["slot"] = "@SLOT@"
    template["params"]["result"]["transaction"][0] = "@TX@"
    text = _dumps(template)
    head, rest = text.split('"@SLOT@"')
    middle, tail = rest.split("@TX@")
    out: List[str] = []
    for i in range(count):
        signature = struct.pack(">Q", i + 1) + raw[9:65]     # byte 0: signature count
        tx = base64.b64encode(raw[:1] + signature + raw[65:]).decode("ascii")
        out.append(f"{head}{FIRST_SLOT + i // TX_PER_SLOT}{middle}{tx}{tail}")
    return out


def subscription_end() -> str:
    return _dumps({"jsonrpc": "2.0", "method": "subscriptionComplete",
                   "params": {"subscription": SUBSCRIPTION}})


def encode_each(texts: List[str]) -> List[bytes]:
    """Server→client text frames (unmasked, no extension), each encoded by wsproto."""
    proto = FrameProtocol(client=False, extensions=[])
    return [bytes(proto.send_data(text, fin=True)) for text in texts]


def encode_zstd(texts: List[str]) -> List[bytes]:
    """Server→client binary frames: each text compressed by ONE streaming zstd context and
    flushed to a block boundary (what a PubSub connection with ``compression: zstd`` gets)."""
    import zstandard

    context = zstandard.ZstdCompressor().compressobj()
    proto = FrameProtocol(client=False, extensions=[])
    return [bytes(proto.send_data(context.compress(text.encode("utf-8"))
                                  + context.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK), fin=True))
            for text in texts]


def encode_frames(texts: List[str]) -> bytes:
    """``encode_each``, joined into one buffer."""
    return b"".join(encode_each(texts))


# ----------------------------------------------------------------------------- server process


class _Server:
    """Server-process state: the pre-built stream and each session's start/finish signals."""

    def __init__(self, kind: str, count: int) -> None:
        self.kind = kind
        self.count = count
        texts = control_frames(count) if kind == CONTROL else transaction_frames(count)
        encoded = encode_zstd(texts) if kind == DATA_ZSTD else encode_each(texts)
        self.offsets = [0]
        for frame in encoded:
            self.offsets.append(self.offsets[-1] + len(frame))
        self.stream = b"".join(encoded)
        self.frame_bytes = sum(len(t) for t in texts)
        self._lock = threading.Lock()
        self._sessions: Dict[str, Tuple[int, threading.Event, threading.Event]] = {}
        self._ids = 0

    def part(self, count: int) -> memoryview:
        """The encoded first ``count`` frames."""
        return memoryview(self.stream)[: self.offsets[count]]

    def end(self, count: int) -> str:
        """The end frame of a ``count``-frame stream (``/raw`` and the stream's channel)."""
        return control_end(count) if self.kind == CONTROL else subscription_end()

    def completed(self, count: int) -> str:
        """The ``completed`` frame on control after a ``count``-frame stream."""
        return control_end(count) if self.kind == CONTROL else _dumps(
            {"method": "completed", "params": {"summary": None}})

    def clamp(self, count: Any) -> int:
        return count if isinstance(count, int) and 0 < count <= self.count else self.count

    def new_session(self, count: int) -> str:
        with self._lock:
            self._ids += 1
            session_id = f"bench-{self._ids}"
            self._sessions[session_id] = (count, threading.Event(), threading.Event())
        return session_id

    def session(self, session_id: str) -> Tuple[int, threading.Event, threading.Event]:
        with self._lock:
            return self._sessions[session_id]


class _Peer:
    """One accepted connection in the server process (its own thread)."""

    def __init__(self, server: _Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.ws = WSConnection(ConnectionType.SERVER)
        self.path = ""
        self.session_id: Optional[str] = None
        self.streamed = False

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def run(self) -> None:
        parts: List[str] = []
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return
                self.ws.receive_data(data)
                for event in self.ws.events():
                    if isinstance(event, Request):
                        self.path = event.target
                        self.sock.sendall(self.ws.send(AcceptConnection()))
                    elif isinstance(event, TextMessage):
                        parts.append(event.data)
                        if event.message_finished:
                            self.on_text("".join(parts))
                            parts.clear()
                    elif isinstance(event, Ping):
                        self.sock.sendall(self.ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        self.sock.sendall(self.ws.send(event.response()))
                        return
        except OSError:
            return
        finally:
            self.sock.close()

    def on_text(self, text: str) -> None:
        server = self.server
        if self.path == "/raw":
            if not self.streamed:
                self.streamed = True
                words = text.split()
                count = server.clamp(int(words[1]) if len(words) > 1 else None)
                self.sock.sendall(server.part(count))
                self.send_text(server.end(count))
            return
        message = json.loads(text)
        method = message.get("method")
        if self.path == "/backtest":
            self.on_control(method, message.get("params"))
        elif method == "transactionSubscribe":
            self.session_id = self.path.rsplit("/", 1)[-1]
            self.send_text(_dumps({"jsonrpc": "2.0", "id": message["id"],
                                   "result": SUBSCRIPTION}))
            threading.Thread(target=self.stream_notifications, daemon=True).start()

    def on_control(self, method: Any, params: Any) -> None:
        server = self.server
        if method == "createBacktestSession":
            count = server.clamp(params["endSlot"] - params["startSlot"])
            self.session_id = server.new_session(count)
            self.send_text(_dumps({"method": "sessionCreated", "params": {
                "session_id": self.session_id, "rpc_endpoint": f"/backtest/{self.session_id}",
                "task_id": None}}))
            self.send_text(_dumps({"seqId": 1, "method": "readyForContinue"}))
        elif method == "continue" and not self.streamed and self.session_id is not None:
            self.streamed = True
            count, start, finished = server.session(self.session_id)
            if server.kind == CONTROL:
                self.sock.sendall(server.part(count))
            else:
                start.set()
                finished.wait()
            self.send_text(server.completed(count))
        elif method == "closeBacktestSession":
            self.send_text(_dumps({"method": "success"}))

    def stream_notifications(self) -> None:
        assert self.session_id is not None
        count, start, finished = self.server.session(self.session_id)
        start.wait()
        try:
            self.sock.sendall(self.server.part(count))
            self.send_text(self.server.end(count))
        except OSError:
            pass
        finally:
            finished.set()


def _serve(kind: str, count: int, ready: Any) -> None:
    """Server process entry point: build the stream, listen, report, serve forever."""
    server = _Server(kind, count)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    ready.put((listener.getsockname()[1], len(server.stream), server.frame_bytes,
               len(encode_frames([server.end(count)]))))
    while True:
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_Peer(server, sock).run, daemon=True).start()


class FrameServer:
    """The server process, as a context manager. ``url`` is its control URL."""

    def __init__(self, kind: str, count: int) -> None:
        self.kind = kind
        self.count = count
        context = multiprocessing.get_context("spawn")
        self._ready = context.Queue()
        self._process = context.Process(target=_serve, args=(kind, count, self._ready),
                                        daemon=True, name=f"frameserver-{kind}")
        self.port = 0
        self.stream_bytes = 0     # encoded stream (frame headers included), end frame excluded
        self.frame_bytes = 0      # JSON text of the stream's frames
        self.end_bytes = 0

    def __enter__(self) -> FrameServer:
        self._process.start()
        while True:
            try:
                reply = self._ready.get(timeout=0.5)
                break
            except queue.Empty:
                if not self._process.is_alive():
                    raise RuntimeError("the frame server process died while starting "
                                       f"(exit code {self._process.exitcode})") from None
        self.port, self.stream_bytes, self.frame_bytes, self.end_bytes = reply
        return self

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.join(5)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/backtest"

    @property
    def raw_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/raw"


# ----------------------------------------------------------------------------- client side


def _connect(url: str) -> websocket.WebSocket:
    """The baseline's socket: websocket-client with the options simsync's transport uses."""
    return websocket.create_connection(url, skip_utf8_validation=True,
                                       enable_multithread=True, timeout=30)


def baseline_run(server: FrameServer, end_method: str, count: Optional[int] = None
                 ) -> Tuple[float, int]:
    """The baseline: a reader thread doing websocket-client ``recv`` → ``json.loads`` →
    ``queue.Queue``, this thread consuming until the frame whose method is ``end_method``.
    Streams the first ``count`` frames (default all). Returns (seconds from the request to
    the end frame consumed, messages consumed before it). On a ``DATA_ZSTD`` server the
    reader decompresses binary frames with one streaming context first."""
    ws = _connect(server.raw_url)
    ws.settimeout(None)
    messages: queue.Queue[Any] = queue.Queue()
    inflate: Any = None
    if server.kind == DATA_ZSTD:
        import zstandard

        inflate = zstandard.ZstdDecompressor().decompressobj()

    def reader() -> None:
        try:
            while True:
                text = ws.recv()
                if not text:
                    return
                if inflate is not None and isinstance(text, bytes):
                    text = inflate.decompress(text)
                messages.put(json.loads(text))
        except (OSError, websocket.WebSocketException):
            return

    thread = threading.Thread(target=reader, daemon=True, name="baseline-reader")
    thread.start()
    got = 0
    started = time.perf_counter()
    ws.send("go" if count is None else f"go {count}")
    while True:
        message = messages.get()
        got += 1
        if message.get("method") == end_method:
            break
    elapsed = time.perf_counter() - started
    ws.close()
    thread.join(5)
    return elapsed, got - 1


def raw_drain(server: FrameServer) -> float:
    """Seconds for a plain socket reader to drain the whole stream (no decoding at all):
    what the server can emit, independent of any WebSocket client library."""
    ws = _connect(server.raw_url)
    sock = ws.sock
    assert sock is not None
    want = server.stream_bytes + server.end_bytes
    buffer = bytearray(1 << 20)
    got = 0
    started = time.perf_counter()
    ws.send("go")
    while got < want:
        n = sock.recv_into(buffer)
        if n == 0:
            raise ConnectionError("the server closed early")
        got += n
    elapsed = time.perf_counter() - started
    ws.close()
    return elapsed


def best_and_median(values: List[float]) -> Tuple[float, float]:
    ordered = sorted(values)
    return ordered[0], statistics.median(ordered)


def pair_ratios(baseline: List[float], measured: List[float]) -> List[float]:
    """Per repeat, baseline seconds / measured seconds of the two adjacent runs (robust to
    a machine whose speed drifts during the benchmark)."""
    return [b / m for b, m in zip(baseline, measured)]


class Run:
    """One timed run: ``seconds`` from the request that starts the stream to the end in the
    consumer's hands; the client process's CPU time and voluntary context switches over the
    whole run (set-up included), per event."""

    def __init__(self, seconds: float, cpu: float, switches: int, events: int) -> None:
        self.seconds = seconds
        self.cpu_us = cpu / events * 1e6
        self.switches = switches / events


def measured(run: Callable[[], float], events: int) -> Run:
    """Call ``run`` (which returns its own seconds) and record CPU and context switches."""
    process = psutil.Process()
    cpu, switches = time.process_time(), process.num_ctx_switches().voluntary
    seconds = run()
    return Run(seconds, time.process_time() - cpu,
               process.num_ctx_switches().voluntary - switches, events)


def report(count: int, drain: float, drain_frames: int, stream_bytes: int,
           rows: List[Tuple[str, List[Run]]], unit: str, target: float) -> None:
    """The comparison table; ``rows`` = [(baseline label, runs), (simsync label, runs)];
    ``count`` events per run; the raw drain read ``drain_frames`` frames in ``drain`` s."""
    repeat = len(rows[0][1])
    print(f"runs: {repeat} of each, alternating baseline/simsync; {unit}/s = N / seconds from "
          "the request that starts the stream to the end consumed; best, median in brackets")
    print()
    header = (f"{'consumer':<50}{'seconds':>17}{unit + '/s':>21}{'CPU us/ev':>11}"
              f"{'ctx sw/ev':>10}")
    print(header)
    print("-" * len(header))
    print(f"{'raw socket drain (no WebSocket parsing, no JSON)':<50}{drain:>8.3f}{'':>9}"
          f"{drain_frames / drain:>12,.0f}{'':>9}{'':>11}{'':>10}")
    for label, runs in rows:
        best, median = best_and_median([r.seconds for r in runs])
        cpu = statistics.median(r.cpu_us for r in runs)
        switches = statistics.median(r.switches for r in runs)
        print(f"{label:<50}{best:>8.3f} [{median:>6.3f}]{count / best:>12,.0f} "
              f"[{count / median:>6,.0f}]{cpu:>11.1f}{switches:>10.2f}")
    print()
    base = [r.seconds for r in rows[0][1]]
    mine = [r.seconds for r in rows[1][1]]
    ratio = min(base) / min(mine)
    pairs = pair_ratios(base, mine)
    headroom = (drain_frames / drain) / (count / min(base))
    print(f"server headroom: the raw drain is {headroom:.0f}x faster than the baseline "
          f"consumer ({stream_bytes / drain / 1e6:,.0f} MB/s)")
    print(f"simsync / baseline: {ratio:.2f} (best vs best); per adjacent pair: median "
          f"{statistics.median(pairs):.2f}, range {min(pairs):.2f}-{max(pairs):.2f}")
    median_pair = statistics.median(pairs)
    print(f"target >= {target} (median pair): {'met' if median_pair >= target else 'MISSED'}; "
          f"best vs best {'meets' if ratio >= target else 'misses'} it")
    print("CPU us/ev, ctx sw/ev: medians of the client process's CPU seconds and voluntary "
          "context switches (psutil) per event")


