"""One backtest session: position in the range, steps, and its sequenced output.

Event-loop thread only. A session executes its range with `Chain`, publishes data-plane events
to its `PubSubHub`, and emits control frames to a *sink* (the control connection that owns it,
or the parallel group that wraps them in ``sessionEventV2``). When sequenced (a detach window,
or any parallel sub-session) every emitted frame gets the next ``seq`` and is kept for replay;
while no sink is live (detached, or attached but not resumed) frames are only kept.

Position model: after start-up the session *stands at* ``startSlot`` (announced with
``slotNotification``) with nothing of that slot executed. ``continue`` executes the block it
stands at (remaining historical batches, then the user's transactions), moves to the next
produced slot and announces it; after ``advanceCount`` blocks it pauses with
``readyForContinue``. After the block of the last produced slot ``<= endSlot`` it sends
``completed``. ``continueTo(S, B)`` executes up to, not including, batch B of slot S (announcing
every slot it reaches) and pauses with ``paused``. RPC-submitted transactions execute at once, in
the slot the session stands at, at the current batch boundary.

Frames of a ``continue`` step, in order: ``status decodedTransactions`` (when it carries
transactions), ``status appliedAccountModifications`` (when it carries overrides), then per block
``status executingBlockTransactions``, ``status executedBlockTransactions``, for the first block
with user transactions ``status readyToExecuteUserTransactions`` and ``status
executedUserTransactions``, then ``slotNotification(next)`` (or ``completed``); at the end the next
``discoveryBatch`` when there is a new one, then ``readyForContinue``.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, FrozenSet, List, Optional, Tuple

from solders.transaction import VersionedTransaction

from simsync.localsim.accounts import AccountDataError, Override, parse_overrides
from simsync.localsim.chain import Chain, TxRecord
from simsync.localsim.discovery import Filter, matched_filters, parse_filters
from simsync.localsim.faults import FATAL_ERRORS, FaultPlan
from simsync.localsim.history import History, HistTx
from simsync.localsim.pubsub import PubSubHub, SlotEvent
from simsync.localsim.wire import (
    _ABSENT,
    Frame,
    JsonObj,
    RequestError,
    error_params,
    frame,
    int_field,
    invalid_request,
    pick,
    require_int,
)

log = logging.getLogger(__name__)
MAX_LOG = 100_000
#: frames the replay log always keeps, whatever the steps passed (`BacktestSession._trim_log`):
#: a crash-resume from a cursor some hundreds of slots back still replays
MIN_LOG = 2_000
Sink = Callable[["BacktestSession", Optional[int], Frame], None]


@dataclass
class CreateParams:
    """The create request (§5), camelCase on the wire, snake_case accepted."""

    start_slot: int
    end_slot: int
    signer_filter: FrozenSet[str] = frozenset()
    send_summary: bool = False
    disconnect_timeout_secs: int = 0
    discoveries: List[Filter] = field(default_factory=list)
    parallel: bool = False

    @classmethod
    def from_json(cls, params: Any) -> CreateParams:
        if not isinstance(params, dict):
            raise invalid_request("createBacktestSession: params must be an object")
        signers = pick(params, "signerFilter", "signer_filter", default=[])
        window = int_field(params, "disconnectTimeoutSecs", "disconnect_timeout_secs",
                           default=0, minimum=0) or 0
        return cls(start_slot=require_int(params, "startSlot", "start_slot"),
                   end_slot=require_int(params, "endSlot", "end_slot"),
                   signer_filter=frozenset(s for s in signers if isinstance(s, str))
                   if isinstance(signers, list) else frozenset(),
                   send_summary=bool(pick(params, "sendSummary", "send_summary", default=False)),
                   disconnect_timeout_secs=min(window, 900),
                   discoveries=parse_filters(pick(params, "discoveries", default=[])),
                   parallel=bool(pick(params, "parallel", default=False)))


@dataclass
class StepRequest:
    """A validated ``continue`` (``target`` None) or ``continueTo``."""

    advance_count: int = 1
    transactions: List[VersionedTransaction] = field(default_factory=list)
    overrides: List[Override] = field(default_factory=list)
    target: Optional[Tuple[int, Optional[int]]] = None


def parse_continue(params: Any) -> StepRequest:
    """Decode ``continue`` params; raise `RequestError` with the §9 variant on bad input."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise invalid_request("continue: params must be an object")
    count = int_field(params, "advanceCount", "advance_count", default=1, minimum=1) or 1
    raw_txs = pick(params, "transactions", default=[])
    if not isinstance(raw_txs, list):
        raise invalid_request("transactions must be a list of base64 strings")
    txs = [_decode_tx(i, item) for i, item in enumerate(raw_txs)]
    try:
        overrides = parse_overrides(pick(params, "modifyAccountStates", "modify_account_states"))
    except AccountDataError as exc:
        raise RequestError(error_params(exc.variant, **exc.fields)) from None
    return StepRequest(count, txs, overrides)


def parse_continue_to(params: Any) -> StepRequest:
    if not isinstance(params, dict):
        raise invalid_request("continueTo: params must be an object")
    slot = require_int(params, "slot")
    batch = int_field(params, "batchIndex", "batch_index", minimum=0)
    return StepRequest(target=(slot, batch))


def _decode_tx(index: int, item: Any) -> VersionedTransaction:
    if not isinstance(item, str):
        raise RequestError(error_params("invalidTransactionEncoding", index=index,
                                        error="a transaction must be a base64 string"))
    try:
        raw = base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(error_params("invalidTransactionEncoding", index=index,
                                        error=f"invalid base64: {exc}")) from None
    try:
        return VersionedTransaction.from_bytes(raw)
    except Exception as exc:  # solders raises its own error type
        raise RequestError(error_params("invalidTransactionFormat", index=index,
                                        error=str(exc))) from None


class BacktestSession:
    """A session's state machine. States: starting, idle, running, completed, closed, failed
    (a fatal error injected by the fault plan)."""

    def __init__(self, session_id: str, params: CreateParams, history: History, chain: Chain,
                 slots: List[int], *, sequenced: bool, slot_delay: float,
                 on_completed: Callable[[BacktestSession], None],
                 faults: Optional[FaultPlan] = None) -> None:
        self.id = session_id
        self.params = params
        self.history = history
        self.chain = chain
        self.faults = faults if faults is not None else FaultPlan()
        self.hub = PubSubHub(self.faults)
        #: How to run a callback after the control connection wrote what is queued (the
        #: group sets it; ``late_notifications`` releases held notifications with it).
        self.after_output: Callable[[Callable[[], None]], None] = lambda fn: fn()
        self.steps_requested = 0
        self._resumes = 0
        self._pause_seq: Optional[int] = None
        #: the pause the previous accepted step answered (its seq): replay frames up to it
        #: are dropped at the next step (the client stepped past it, so it had them)
        self._answered_pause: Optional[int] = None
        self._had_pause = False
        self.slots = slots
        self.sequenced = sequenced
        self.slot_delay = slot_delay
        self.state = "starting"
        self.idx = 0
        self.batches_done = 0
        self.pause_frame: Optional[Frame] = None
        self._on_completed = on_completed
        self._task: Optional[asyncio.Task[None]] = None
        self._seq = 0
        self._log: List[Tuple[int, Frame]] = []
        self._sink: Optional[Sink] = None
        self._live = False
        self._delivered = 0
        self._last_discovery: Optional[Tuple[int, int]] = None

    @property
    def rpc_endpoint(self) -> str:
        return f"/backtest/{self.id}"

    @property
    def current_slot(self) -> int:
        return self.slots[min(self.idx, len(self.slots) - 1)]

    @property
    def ended(self) -> bool:
        return self.state in ("completed", "closed")

    # -- output ----------------------------------------------------------------------------
    def emit(self, method: str, params: Any = _ABSENT) -> None:
        body = frame(method, params)
        seq: Optional[int] = None
        if self.sequenced:
            self._seq += 1
            seq = self._seq
            self._log.append((seq, body))
            if len(self._log) > MAX_LOG:
                del self._log[: len(self._log) - MAX_LOG]
        if self._sink is not None and self._live:
            self._deliver(seq, body)

    def emit_error(self, exc: RequestError) -> None:
        self.emit("error", exc.params)

    def _deliver(self, seq: Optional[int], body: Frame) -> None:
        assert self._sink is not None
        self._sink(self, seq, body)
        if seq is not None:
            self._delivered = seq

    def connect(self, sink: Sink) -> None:
        """The creating connection: output flows at once."""
        self._sink, self._live = sink, True

    def attach(self, sink: Sink, last_sequence: Optional[int]) -> List[Tuple[int, Frame]]:
        """Hold output for ``sink`` and return the frames to replay (seq > last_sequence)."""
        self._sink, self._live = sink, False
        self._delivered = self._seq
        self._had_pause = (last_sequence is not None and self._pause_seq is not None
                           and self._pause_seq <= last_sequence)
        return [(s, b) for s, b in self._log if last_sequence is None or s > last_sequence]

    def resume(self) -> None:
        """Send what was held since the attach, then re-announce the pause when idle (§13).

        The re-announce rule is the fault plan's ``reannounce`` mode: ``default`` only when
        the client already had the pause (its ``last_sequence`` covers the pause frame, so
        the replay does not carry it), ``always`` whenever idle, ``never``."""
        if self._sink is None or self._live:
            return
        held = [(s, b) for s, b in self._log if s > self._delivered]
        self._live = True
        for seq, body in held:
            self._deliver(seq, body)
        self._resumes += 1
        fault = self.faults.take_session("reannounce", (self.id, self._resumes),
                                         f"resume {self._resumes} of {self.id}")
        mode = "default" if fault is None else fault.mode
        if self.state == "idle" and self.pause_frame is not None and (
                mode == "always" or (mode == "default" and self._had_pause)):
            self._emit_pause(self.pause_frame)

    def _emit_pause(self, pause: Frame) -> None:
        self.emit(pause["method"], pause.get("params", _ABSENT))
        if self.sequenced:
            self._pause_seq = self._seq

    def detach(self, sink: Sink) -> bool:
        """Forget ``sink`` if it is the current one; True when it was."""
        if self._sink is not sink:
            return False
        self._sink, self._live = None, False
        return True

    @property
    def attached(self) -> bool:
        return self._sink is not None

    # -- life ------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.ensure_future(self._guard(self._startup))

    def close(self) -> None:
        """Stop whatever runs, end the data plane and free the chain (its LiteSVM and
        transaction log; idempotent)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self.state != "completed":
            self.state = "closed"
        self.chain.close()
        self.hub.complete()

    def step(self, parse: Callable[[], StepRequest]) -> None:
        """Parse, validate and start a step; a rejection goes out through the session (§9):
        ``noMoreBlocks`` or a step while not idle as an error, any other refusal as an error
        followed by the pause again. Event-loop thread."""
        try:
            self.request_step(parse())
        except RequestError as exc:
            if exc.params == "noMoreBlocks" or self.state != "idle":
                self.emit_error(exc)
            else:
                self.reject_step(exc)

    def request_step(self, step: StepRequest) -> None:
        """Start a ``continue``/``continueTo``; raise `RequestError` if it cannot start now."""
        if self.state == "completed":
            raise RequestError("noMoreBlocks")
        self.steps_requested += 1
        n = self.steps_requested
        fault = self.faults.take_session("reject_step", (self.id, n), f"step={n}",
                                         lambda f: f.step == n)
        if fault is not None:
            raise RequestError(fault.error_params(default="invalidTransactionFormat"))
        if self.state != "idle":
            raise invalid_request(f"a step is not allowed now (session is {self.state})")
        if step.target is not None:
            self._check_target(*step.target)
        if step.overrides:  # applied now, so a bad one rejects the step (the session goes on)
            try:
                self.chain.install(step.overrides)
            except AccountDataError as exc:
                raise RequestError(error_params(exc.variant, **exc.fields)) from None
        self._trim_log()
        self.state = "running"
        target = step.target
        if target is None:
            self._task = asyncio.ensure_future(self._guard(lambda: self._continue(step)))
        else:
            self._task = asyncio.ensure_future(self._guard(lambda: self._continue_to(*target)))

    def _trim_log(self) -> None:
        """Bound the replay log by what a reconnecting client can still ask for: a step is
        sent at a pause, so at this step the client holds every frame up to the pause the
        previous step answered, and its ``last_sequence`` is at least that pause's seq; those
        frames go (one step of slack for a client that stepped without reading its pause),
        but the last ``MIN_LOG`` frames always stay: a cursor persisted a few steps back (a
        crash-resume) still replays, and so does every frame of a short session."""
        if self._answered_pause is not None:
            cut = min(bisect.bisect_right(self._log, self._answered_pause,
                                          key=lambda entry: entry[0]),
                      len(self._log) - MIN_LOG)
            if cut > 0:
                del self._log[:cut]
        self._answered_pause = self._pause_seq

    def reject_step(self, exc: RequestError) -> None:
        """Answer a rejected step: the error, then the pause again when idle."""
        self.emit_error(exc)
        if self.state == "idle" and self.pause_frame is not None:
            self._emit_pause(self.pause_frame)

    async def _guard(self, run: Callable[[], Awaitable[None]]) -> None:
        """Run a step (created here, so a step cancelled before it began leaves no coroutine)."""
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not kill the server: report it as §9 internal
            log.exception("session %s: step failed", self.id)
            self.emit("error", {"internal": {"error": repr(exc)}})
            self.state = "idle" if self.state == "running" else self.state

    # -- steps -----------------------------------------------------------------------------
    async def _startup(self) -> None:
        for status in ("preparingBundle", "bundleReady", "startingRuntime"):
            self.emit("status", {"status": status})
            await asyncio.sleep(0)
        self.emit("status", {"status": "programAccountsLoaded"})
        self._arrive()
        self._pause(frame("readyForContinue"))

    async def _continue(self, step: StepRequest) -> None:
        if step.transactions:
            self.emit("status", {"status": "decodedTransactions"})
        if step.overrides:  # installed by request_step
            self.emit("status", {"status": "appliedAccountModifications"})
        for i in range(step.advance_count):
            self.emit("status", {"status": "executingBlockTransactions"})
            if self._block_faults():
                return
            await self._run_batches(len(self.history.plan(self.current_slot)))
            self.emit("status", {"status": "executedBlockTransactions"})
            if i == 0 and step.transactions:
                self._run_user(step.transactions)
            if self._finish_block():
                return
            if self.slot_delay:
                await asyncio.sleep(self.slot_delay)
        self._pause(frame("readyForContinue"))

    async def _continue_to(self, slot: int, batch: Optional[int]) -> None:
        while self.current_slot < slot:
            self.emit("status", {"status": "executingBlockTransactions"})
            if self._block_faults():
                return
            await self._run_batches(len(self.history.plan(self.current_slot)))
            self.emit("status", {"status": "executedBlockTransactions"})
            if self._finish_block():
                return
            if self.slot_delay:
                await asyncio.sleep(self.slot_delay)
        if (batch or 0) > self.batches_done:
            self.emit("status", {"status": "executingBlockTransactions"})
            await self._run_batches(batch or 0)
        self._pause(frame("paused", {"slot": slot, "batchIndex": batch}))

    def _block_faults(self) -> bool:
        """Session faults of the block about to execute; True when the session failed."""
        slot = self.current_slot
        late = self.faults.take_session("late_notifications", (self.id, slot), f"slot={slot}",
                                        lambda f: f.slot is None or f.slot == slot)
        if late is not None:
            self.hub.hold()
        fault = self.faults.take_session("error", (self.id, slot), f"slot={slot}",
                                         lambda f: f.slot is None or f.slot == slot)
        if fault is None:
            return False
        self.emit("error", fault.error_params(slot))
        if fault.error_variant not in FATAL_ERRORS:
            return False
        self.state = "failed"
        self.pause_frame = None
        self.chain.ended = True
        self.hub.release()
        return True

    def _check_target(self, slot: int, batch: Optional[int]) -> None:
        if slot > self.params.end_slot or not self.history.is_produced(slot):
            raise invalid_request(f"continueTo: slot {slot} has no block in this session")
        if (slot, batch or 0) < (self.current_slot, self.batches_done):
            raise invalid_request(f"continueTo: ({slot}, {batch}) is behind the session "
                                  f"({self.current_slot}, {self.batches_done})")
        if (batch or 0) > len(self.history.plan(slot)):
            raise invalid_request(f"continueTo: slot {slot} has only "
                                  f"{len(self.history.plan(slot))} batches")

    async def _run_batches(self, until: int) -> None:
        """Execute historical batches of the current slot up to, not including, ``until``."""
        block = self.history.block(self.current_slot)
        while self.batches_done < until:
            for htx in block[self.batches_done]:
                self._run_historical(htx, self.batches_done)
            self.batches_done += 1
            await asyncio.sleep(0)

    def _run_historical(self, htx: HistTx, batch: int) -> None:
        if htx.plan.payer in self.params.signer_filter:
            return
        record = self.chain.execute(htx.tx, batch, "history")
        if isinstance(record, TxRecord):
            self.hub.publish(record.slot, record)

    def _run_user(self, txs: List[VersionedTransaction]) -> None:
        self.emit("status", {"status": "readyToExecuteUserTransactions"})
        for index, tx in enumerate(txs):
            record = self.chain.execute(tx, None, "user")
            if isinstance(record, TxRecord):
                self.hub.publish(record.slot, record)
            else:  # refused by the runtime (no fee, nothing ran): say so, go on
                signature = str(tx.signatures[0]) if tx.signatures else "?"
                self.emit("error", {"simulationError": {
                    "error": f"transaction {index} ({signature}) was not executed: "
                             f"{record.err}"}})
        self.emit("status", {"status": "executedUserTransactions"})

    def _finish_block(self) -> bool:
        """Close the current block; True when that was the last one (completed)."""
        slot = self.current_slot
        self.hub.publish(slot, SlotEvent(slot, self.slots[self.idx - 1] if self.idx else slot - 1))
        self.idx += 1
        self.batches_done = 0
        if self.idx >= len(self.slots):
            self._complete()
            return True
        self._arrive()
        return False

    def _arrive(self) -> None:
        self.chain.warp(self.current_slot)
        self.emit("slotNotification", self.current_slot)

    def _pause(self, pause: Frame) -> None:
        self._announce_discovery()
        self.pause_frame = pause
        self.state = "idle"
        self._emit_pause(pause)
        if self.hub.holding:
            self.after_output(self.hub.release)

    def _complete(self) -> None:
        self.state = "completed"
        self.pause_frame = None
        self.chain.ended = True
        summary = self._summary() if self.params.send_summary else None
        self.emit("completed", {"summary": summary})
        self.hub.release()
        self.hub.complete()
        self._on_completed(self)

    def _summary(self) -> JsonObj:
        failed = self.chain.history_failed
        return {"correctSimulation": self.chain.history_executed - failed, "incorrectSimulation": 0,
                "executionErrors": failed, "balanceDiff": 0, "logDiff": 0, "unsanitizable": 0,
                "rerouteStats": None}

    # -- discovery -------------------------------------------------------------------------
    def _announce_discovery(self) -> None:
        found = self._next_discovery()
        if found is None or found == self._last_discovery:
            return
        self._last_discovery = found
        slot, batch = found
        plans = [p for p in self.history.plan(slot)[batch]
                 if p.payer not in self.params.signer_filter]
        matched = matched_filters(self.params.discoveries, plans)
        txs = [base64.b64encode(bytes(h.tx)).decode()
               for h in self.history.block(slot)[batch]
               if h.plan.payer not in self.params.signer_filter
               and matched_filters(self.params.discoveries, [h.plan])]
        self.emit("discoveryBatch", {"slot": slot, "batchIndex": batch, "matched": matched,
                                     "transactions": [{"data": t, "encoding": "base64"}
                                                      for t in txs]})

    def _next_discovery(self) -> Optional[Tuple[int, int]]:
        if not self.params.discoveries:
            return None
        for i in range(self.idx, len(self.slots)):
            slot = self.slots[i]
            first = self.batches_done if i == self.idx else 0
            for b, batch in enumerate(self.history.plan(slot)):
                plans = [p for p in batch if p.payer not in self.params.signer_filter]
                if b >= first and matched_filters(self.params.discoveries, plans):
                    return slot, b
        return None

    # -- introspection (tests) -------------------------------------------------------------
    def describe(self) -> Dict[str, Any]:
        return {"state": self.state, "slot": self.current_slot, "batches_done": self.batches_done,
                "attached": self.attached, "live": self._live, "sequenced": self.sequenced,
                "last_seq": self._seq}
