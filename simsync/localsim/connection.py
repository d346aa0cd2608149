"""One server-side WebSocket (control or PubSub): ordered output, keepalive answers, faults.

Everything runs on the simulator's event-loop thread. Producers call `Connection.send` (never
blocks: it enqueues); one writer task per connection sends the queue in order and applies the
fault plan after each frame. The handler's read loop calls `Connection.receive`, which answers
pings itself (the WebSocket is created with ``autoping=False``) unless the connection is stalled.

Fault actions, as executed here:

* ``drop``: wait until everything written so far left the process, then close the TCP
  socket without a WebSocket close frame: ``how="fin"`` an orderly FIN, ``how="rst"`` with
  ``SO_LINGER`` 0 so the kernel sends RST and the peer's next read fails with ECONNRESET.
* ``close``: a WebSocket close frame with ``close_code``/``close_reason``.
* ``stall``: stop sending anything (later frames are discarded) and stop answering pings; the
  read loop keeps draining the socket only to notice when the peer closes it.
* ``stop_reading``: ``transport.pause_reading()``: the kernel's receive buffer fills and the
  peer's sends block; output goes on.
* ``malformed`` / ``unknown_method`` / ``invalid_utf8`` / ``oversize``: inject one frame (not
  counted as a protocol frame).
* ``delay``: sleep ``delay_secs`` before every later frame of the connection.
* ``binary`` / ``fragment``: every later protocol frame goes out as a binary frame, or as a text
  message in frames of ``size`` bytes (first frame + continuation frames).
* ``duplicate``: every later notification (`send` with ``notification=True``) is sent twice.
* ``heartbeat``: a task pings every ``interval_secs`` and drops (FIN) the connection when a ping
  is not answered within ``timeout_secs``.
* ``slow_reply``: the writer sleeps ``delay_secs`` at the trigger (everything after waits).

Frames the WebSocket library will not produce (invalid UTF-8 text, fragments) are built with
websocket-client's `ABNF` (unmasked, as a server sends them) and written to the transport by
the single writer task, so they never interleave with another frame.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Union

from aiohttp import WSMessage, WSMsgType, web
from websocket import ABNF

from simsync.localsim.faults import DEFAULT_MALFORMED, UNKNOWN_METHOD_FRAME, Fault, FaultPlan
from simsync.localsim.wire import encode

log = logging.getLogger(__name__)
_ids = itertools.count(1)
FLUSH_TIMEOUT = 2.0
#: at most this many characters of queued frames go out in one write (`Connection._send_run`)
RUN_BYTES = 256 * 1024
INVALID_UTF8 = b'{"method":"\xff\xfe"}'


@dataclass(frozen=True)
class _Point:
    """A named fault point, placed in the output order."""

    name: str


@dataclass(frozen=True)
class _Close:
    """Close the WebSocket (with a close frame) once everything before it was sent."""


@dataclass(frozen=True)
class _Call:
    """Run a callback once everything before it was sent (or dropped)."""

    fn: Callable[[], None]


@dataclass(frozen=True)
class _Note:
    """A notification frame (``duplicate`` repeats these)."""

    text: str


_Item = Union[str, _Note, _Point, _Close, _Call]


def rst_close(transport: Any) -> None:
    """Close ``transport`` with RST: ``SO_LINGER`` on with a zero timeout, then abort."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError as exc:
            log.debug("SO_LINGER failed: %s", exc)
    if transport is not None:
        transport.abort()


class Connection:
    """Server side of one accepted WebSocket. Event-loop thread only.

    ``number`` is the connection's 1-based position among its channel's connections (the
    fault plan's ``on_connection``)."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, channel: str,
                 plan: FaultPlan, on_fault: Callable[[Fault], None],
                 number: Optional[int] = None) -> None:
        self.id = next(_ids)
        self.number = number
        self.ws = ws
        self.channel = channel
        self._transport = request.transport
        self._plan = plan
        self._on_fault = on_fault
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._writer: Optional[asyncio.Task[None]] = None
        self._heartbeat: Optional[asyncio.Task[None]] = None
        self.frames_sent = 0
        self.stalled = False
        self.dead = False
        self.binary = False
        self.fragment_size = 0
        self.duplicate = False
        self.not_reading = False
        self._ping_outstanding = False
        self._zstd: Any = None          # a streaming zstd compressor once asked for
        self._delay = 0.0
        self._pending_open: List[Fault] = []
        self._held: Optional[_Item] = None     # taken from the queue by a run, not written

    # -- life ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer and fire the faults that trigger on open."""
        self._writer = asyncio.ensure_future(self._write_loop())
        for fault in self._plan.take_on_open(self.channel, self.id, self.number or 0):
            self._queue.put_nowait(_Point(f"fault:{id(fault)}"))
            self._pending_open.append(fault)

    async def finish(self) -> None:
        """Stop the writer and make sure the socket is gone (handler exit path)."""
        self.dead = True
        tasks = [t for t in (self._writer, self._heartbeat) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()

    def abort(self) -> None:
        """Drop the TCP connection now, without a close frame (takeover, shutdown)."""
        self.dead = True
        if self._transport is not None:
            self._transport.abort()

    # -- output ----------------------------------------------------------------------------
    def send(self, obj: Any, notification: bool = False) -> None:
        """Queue one protocol frame (a JSON-able object); ``notification`` marks a PubSub
        notification (the ``duplicate`` fault repeats those)."""
        if not self.dead:
            text = encode(obj)
            self._queue.put_nowait(_Note(text) if notification else text)

    def point(self, name: str) -> None:
        """Queue a named fault point: faults ``at=name`` fire when the writer reaches it."""
        if not self.dead:
            self._queue.put_nowait(_Point(name))

    def call_after_pending(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` (on the loop) once everything queued so far was written or dropped."""
        if self.dead:
            fn()
        else:
            self._queue.put_nowait(_Call(fn))

    def close_after_pending(self) -> None:
        """Close the WebSocket cleanly after everything queued so far was sent."""
        if not self.dead:
            self._queue.put_nowait(_Close())

    async def _write_loop(self) -> None:
        try:
            await self._write_items()
        except asyncio.CancelledError:
            raise
        except Exception:  # never silent: log, and end the connection
            log.exception("connection %s: writer failed", self.id)
            self.abort()

    async def _write_items(self) -> None:
        while True:
            item, self._held = self._held, None
            if item is None:
                item = await self._queue.get()
            if isinstance(item, (str, _Note)) and self._plain():
                await self._send_run(item)
                continue
            if isinstance(item, _Point):
                await self._fire_all(self._point_faults(item.name))
            elif isinstance(item, _Call):
                item.fn()
            elif isinstance(item, _Close):
                if not self.dead and not self.stalled:
                    await self.ws.close()
                self.dead = True
            elif not self.dead and not self.stalled:
                if isinstance(item, _Note):
                    await self._send_frame(item.text, self.duplicate)
                else:
                    await self._send_frame(item, False)

    def _plain(self) -> bool:
        """Whether frames go out as plain text frames with no per-frame fault to check:
        then a run of queued frames is written at once (`_send_run`)."""
        return not (self.dead or self.stalled or self.binary or self.fragment_size
                    or self.duplicate or self._delay or self._zstd is not None
                    or self._plan.frame_faults(self.channel))

    async def _send_run(self, first: Union[str, _Note]) -> None:
        """Write ``first`` and the protocol frames queued right behind it (up to
        `RUN_BYTES`) in one transport write: one system call and one wake-up of the peer
        instead of one per frame. Each is its own text frame, unmasked (RFC 6455 §5.1),
        built by websocket-client's `ABNF`; the order of the queue is kept."""
        texts = [first if isinstance(first, str) else first.text]
        size = len(texts[0])
        queue = self._queue
        while size < RUN_BYTES and not queue.empty():
            nxt = queue.get_nowait()
            if type(nxt) is str:
                texts.append(nxt)
            elif type(nxt) is _Note:
                texts.append(nxt.text)
            else:
                self._held = nxt        # the writer's next item, before the queue's
                break
            size += len(texts[-1])
        try:
            self._raw_many([ABNF(1, 0, 0, 0, ABNF.OPCODE_TEXT, 0, t.encode("utf-8")).format()
                            for t in texts])
        except (ConnectionError, RuntimeError) as exc:
            log.debug("connection %s: send failed: %s", self.id, exc)
            self.dead = True
            return
        self.frames_sent += len(texts)
        await self._drain()

    def _point_faults(self, name: str) -> List[Fault]:
        if name.startswith("fault:"):
            return [f for f in self._pending_open if f"fault:{id(f)}" == name]
        return self._plan.take_at(self.channel, self.id, name, self.number)

    async def _send_frame(self, text: str, twice: bool) -> None:
        if self._delay:
            await asyncio.sleep(self._delay)
        for _ in range(2 if twice else 1):
            try:
                await self._write(text)
            except (ConnectionError, RuntimeError) as exc:
                log.debug("connection %s: send failed: %s", self.id, exc)
                self.dead = True
                return
        self.frames_sent += 1
        await self._fire_all(self._plan.take_after_frames(self.channel, self.id,
                                                          self.frames_sent, self.number))

    def compress_from_now(self) -> None:
        """Send every later frame as a binary frame of one streaming zstd context (the
        PubSub ``"compression": "zstd"`` config), each flushed to a block boundary so a
        client decompresses it at once. Needs ``zstandard``."""
        import zstandard

        self._zstd = zstandard.ZstdCompressor().compressobj()

    async def _write(self, text: str) -> None:
        if self._zstd is not None:
            import zstandard

            data = self._zstd.compress(text.encode("utf-8"))
            await self.ws.send_bytes(data + self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
        elif self.binary:
            await self.ws.send_bytes(text.encode("utf-8"))
        elif self.fragment_size:
            data = text.encode("utf-8")
            size = self.fragment_size
            pieces = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
            for i, piece in enumerate(pieces):
                opcode = ABNF.OPCODE_TEXT if i == 0 else ABNF.OPCODE_CONT
                self._raw(ABNF(1 if i == len(pieces) - 1 else 0, 0, 0, 0, opcode, 0, piece))
            await self._drain()
        else:
            await self.ws.send_str(text)

    def _raw_many(self, frames: List[bytes]) -> None:
        if self._transport is None or self._transport.is_closing():
            raise ConnectionResetError("transport closed")
        self._transport.write(b"".join(frames))

    def _raw(self, frame: ABNF) -> None:
        if self._transport is None or self._transport.is_closing():
            raise ConnectionResetError("transport closed")
        self._transport.write(frame.format())

    async def _drain(self) -> None:
        transport = self._transport
        while (transport is not None and not transport.is_closing()
               and transport.get_write_buffer_size() > 1 << 20):
            await asyncio.sleep(0.005)

    async def _fire_all(self, faults: List[Fault]) -> None:
        for fault in faults:
            if self.dead:
                return
            self._on_fault(fault)
            # tests/soak.py reads these args (id, channel, action): keep their order.
            log.info("connection %s (%s): fault %s fires after %d frames (connection #%s of "
                     "the channel)", self.id, self.channel, fault.action, self.frames_sent,
                     self.number)
            try:
                await self._fire(fault)
            except (ConnectionError, RuntimeError):
                self.dead = True

    async def _fire(self, fault: Fault) -> None:
        action = fault.action
        if action == "drop":
            await self._flush()
            if fault.how == "rst":
                self.dead = True
                rst_close(self._transport)
            else:
                self.abort()
        elif action == "close":
            await self._flush()
            self.dead = True
            await self.ws.close(code=fault.close_code, message=fault.close_reason.encode())
        elif action == "stall":
            self.stalled = True
        elif action == "stop_reading":
            self.not_reading = True
            if self._transport is not None:
                self._transport.pause_reading()
        elif action == "delay":
            self._delay = fault.delay_secs
        elif action == "slow_reply":
            await asyncio.sleep(fault.delay_secs)
        elif action == "binary":
            self.binary = True
        elif action == "fragment":
            self.fragment_size = fault.size
        elif action == "duplicate":
            self.duplicate = True
        elif action == "heartbeat":
            self._heartbeat = asyncio.ensure_future(self._beat(fault))
        elif action == "invalid_utf8":
            self._raw(ABNF(1, 0, 0, 0, ABNF.OPCODE_TEXT, 0, INVALID_UTF8))
        elif action == "oversize":
            head = '{"method":"padding","params":"'
            filler = "x" * max(0, fault.size - len(head) - 2)
            await self.ws.send_str(head + filler + '"}')
        else:
            text = UNKNOWN_METHOD_FRAME if action == "unknown_method" else (
                DEFAULT_MALFORMED if fault.payload is None else fault.payload)
            if self._zstd is not None and action == "malformed":
                await self.ws.send_bytes(text.encode("utf-8"))   # a corrupt zstd stream
            else:
                await self.ws.send_str(text)

    async def _beat(self, fault: Fault) -> None:
        """Server heartbeat: ping every ``interval_secs``; drop after ``timeout_secs`` without
        the pong."""
        loop = asyncio.get_running_loop()
        while not self.dead:
            await asyncio.sleep(fault.interval_secs)
            if self.dead or self.stalled:
                return
            self._ping_outstanding = True
            sent = loop.time()
            try:
                await self.ws.ping(b"simsync-localsim")
            except (ConnectionError, RuntimeError):
                self.dead = True
                return
            while self._ping_outstanding and not self.dead:
                if loop.time() - sent > fault.timeout_secs:
                    log.info("connection %s: no pong within %ss, dropping", self.id,
                             fault.timeout_secs)
                    self._plan.record(fault, self.channel, self.number, "heartbeat timeout")
                    self.abort()
                    return
                await asyncio.sleep(min(0.02, fault.timeout_secs / 10))

    async def _flush(self) -> None:
        """Wait (bounded) until the transport handed every written byte to the kernel."""
        transport = self._transport
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLUSH_TIMEOUT
        while (transport is not None and not transport.is_closing()
               and transport.get_write_buffer_size() > 0 and loop.time() < deadline):
            await asyncio.sleep(0.002)

    # -- input -----------------------------------------------------------------------------
    async def receive(self) -> Optional[WSMessage]:
        """The next data message; None when the connection is over. Answers pings itself."""
        while True:
            msg = await self.ws.receive()
            if msg.type == WSMsgType.PING:
                if not self.stalled and not self.dead:
                    await self._pong(msg.data)
                continue
            if msg.type in (WSMsgType.PONG,):
                self._ping_outstanding = False
                continue
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                            WSMsgType.ERROR):
                return None
            if self.stalled:
                continue
            return msg

    async def _pong(self, data: bytes) -> None:
        try:
            await self.ws.pong(data)
        except (ConnectionError, RuntimeError):
            self.dead = True
