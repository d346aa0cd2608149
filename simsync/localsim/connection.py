"""One server-side WebSocket (control or PubSub): ordered output, keepalive answers, faults.

Everything runs on the simulator's event-loop thread. Producers call `Connection.send` (never
blocks: it enqueues); one writer task per connection sends the queue in order and applies the
fault plan after each frame. The handler's read loop calls `Connection.receive`, which answers
pings itself (the WebSocket is created with ``autoping=False``) unless the connection is stalled.

Fault actions, as executed here:

* ``drop``: wait until everything written so far left the process, then abort the TCP
  transport (no WebSocket close frame).
* ``stall``: stop sending anything (later frames are discarded) and stop answering pings; the
  read loop keeps draining the socket only to notice when the peer closes it.
* ``malformed`` / ``unknown_method``: send the payload frame (not counted as a protocol frame).
* ``delay``: sleep ``delay_secs`` before every later frame of the connection.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Union

from aiohttp import WSMessage, WSMsgType, web

from simsync.localsim.faults import DEFAULT_MALFORMED, UNKNOWN_METHOD_FRAME, Fault, FaultPlan
from simsync.localsim.wire import encode

log = logging.getLogger(__name__)
_ids = itertools.count(1)
FLUSH_TIMEOUT = 2.0


@dataclass(frozen=True)
class _Point:
    """A named fault point, placed in the output order."""

    name: str


@dataclass(frozen=True)
class _Close:
    """Close the WebSocket (with a close frame) once everything before it was sent."""


_Item = Union[str, _Point, _Close]


class Connection:
    """Server side of one accepted WebSocket. Event-loop thread only."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, channel: str,
                 plan: FaultPlan, on_fault: Callable[[Fault], None]) -> None:
        self.id = next(_ids)
        self.ws = ws
        self.channel = channel
        self._transport = request.transport
        self._plan = plan
        self._on_fault = on_fault
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._writer: Optional[asyncio.Task[None]] = None
        self.frames_sent = 0
        self.stalled = False
        self.dead = False
        self._delay = 0.0
        self._pending_open: List[Fault] = []

    # -- life ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer and fire the faults that trigger on open."""
        self._writer = asyncio.ensure_future(self._write_loop())
        for fault in self._plan.take_on_open(self.channel, self.id):
            self._queue.put_nowait(_Point(f"fault:{id(fault)}"))
            self._pending_open.append(fault)

    async def finish(self) -> None:
        """Stop the writer and make sure the socket is gone (handler exit path)."""
        self.dead = True
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()

    def abort(self) -> None:
        """Drop the TCP connection now, without a close frame (takeover, shutdown)."""
        self.dead = True
        if self._transport is not None:
            self._transport.abort()

    # -- output ----------------------------------------------------------------------------
    def send(self, obj: Any) -> None:
        """Queue one protocol frame (a JSON-able object)."""
        if not self.dead:
            self._queue.put_nowait(encode(obj))

    def point(self, name: str) -> None:
        """Queue a named fault point: faults ``at=name`` fire when the writer reaches it."""
        if not self.dead:
            self._queue.put_nowait(_Point(name))

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
            item = await self._queue.get()
            if isinstance(item, _Point):
                await self._fire_all(self._point_faults(item.name))
            elif isinstance(item, _Close):
                if not self.dead and not self.stalled:
                    await self.ws.close()
                self.dead = True
            elif not self.dead and not self.stalled:
                await self._send_frame(item)

    def _point_faults(self, name: str) -> List[Fault]:
        if name.startswith("fault:"):
            return [f for f in self._pending_open if f"fault:{id(f)}" == name]
        return self._plan.take_at(self.channel, self.id, name)

    async def _send_frame(self, text: str) -> None:
        if self._delay:
            await asyncio.sleep(self._delay)
        try:
            await self.ws.send_str(text)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("connection %s: send failed: %s", self.id, exc)
            self.dead = True
            return
        self.frames_sent += 1
        await self._fire_all(self._plan.take_after_frames(self.channel, self.id,
                                                          self.frames_sent))

    async def _fire_all(self, faults: List[Fault]) -> None:
        for fault in faults:
            if self.dead:
                return
            self._on_fault(fault)
            log.info("connection %s (%s): fault %s fires after %d frames", self.id,
                     self.channel, fault.action, self.frames_sent)
            await self._fire(fault)

    async def _fire(self, fault: Fault) -> None:
        if fault.action == "drop":
            await self._flush()
            self.abort()
        elif fault.action == "stall":
            self.stalled = True
        elif fault.action == "delay":
            self._delay = fault.delay_secs
        else:
            text = UNKNOWN_METHOD_FRAME if fault.action == "unknown_method" else (
                DEFAULT_MALFORMED if fault.payload is None else fault.payload)
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                self.dead = True

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
