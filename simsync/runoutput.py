"""The run-output document and its collector: what ``simsync run``, ``simsync sweep``'s
default worker (``simsync.sweep.run_job``) and recordings build from a session's events, and
``collect_run``, which drives a session (or a parallel batch) to ``Completed`` collecting them.
Library code: it never imports ``simsync.cli`` (the command line builds on it).

File layout (interchangeable with the service's own CLI)::

    {"metadata": {"start_slot", "end_slot", "program_id", "session_ids", "timestamp"},
     "transactions": [{"slot", "signature", "success", "error", "logs",
                       "sol_changes": {pubkey: lamports delta},
                       "token_changes": {owner: {mint: raw amount delta}},
                       "account_diffs": {pubkey: {"before": account, "after": account}}}],
     "summary": {"total", "successes", "failures"}}

Each entry is one transaction that invoked the program (top-level or inner instruction);
``success`` is True or False; ``total == successes + failures``. ``token_changes`` come
from ``meta.preTokenBalances``/``postTokenBalances`` (per owner and mint), or, when the meta
has none, from the entry's token-account diffs. Account keys come from the wire transaction
(decoded with solders). Without solders the changes are keyed by account index ("0", "1",
...). The building functions are pure; ``load``/``write`` do file I/O; ``collect_run``
blocks on the session (user thread).
"""
from __future__ import annotations

import base64
import contextlib
import datetime
import json
import logging
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Literal,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Union,
)

import base58

from simsync.errors import EventTimeout, SimsyncError
from simsync.protocol import (
    AccountDiff,
    Completed,
    Event,
    Paused,
    ReadyForContinue,
    ServerError,
    Slot,
    Transaction,
)
from simsync.transport import ConnectionStatus

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from simsync.client import Client
    from simsync.parallel import SubSession
    from simsync.session import Session

Json = Dict[str, Any]

_decode: Optional[Callable[[bytes], Any]]
try:  # the 'local' extra; without it sol_changes are keyed by account index
    from solders.transaction import VersionedTransaction

    _decode = VersionedTransaction.from_bytes
except ImportError:  # pragma: no cover - depends on the installed extras
    _decode = None

KEYS_DECODABLE = _decode is not None


# ----------------------------------------------------------------------------- building

TOKEN_PROGRAMS = ("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",      # SPL Token
                  "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")      # Token-2022
#: An SPL token account: mint (32 bytes), owner (32), amount (u64 LE) at 64; 165 bytes, or
#: more with Token-2022 extensions (then byte 165 is the account type, 2 = Account).
TOKEN_ACCOUNT_LEN = 165


def _decoded(transaction: Any) -> Any:
    """A solders ``VersionedTransaction`` from ``[base64, "base64"]`` or base64 text; None
    without solders or for undecodable bytes."""
    if isinstance(transaction, (list, tuple)) and transaction and isinstance(transaction[0], str):
        if len(transaction) > 1 and transaction[1] not in ("base64", None):
            return None
        transaction = transaction[0]
    if not isinstance(transaction, str) or _decode is None:
        return None
    try:
        return _decode(base64.b64decode(transaction))
    except Exception:  # noqa: BLE001 - solders raises its own types; fall back to indices
        return None


def account_keys(transaction: Any, meta: Optional[Json]) -> Optional[List[str]]:
    """The transaction's account keys in Solana's order (static keys, then the addresses
    loaded from lookup tables), or None when they cannot be decoded. ``transaction`` is
    ``[base64, "base64"]`` or a ``json`` object with ``message.accountKeys``."""
    keys: Optional[List[str]] = None
    decoded = _decoded(transaction)
    if decoded is not None:
        keys = [str(key) for key in decoded.message.account_keys]
    elif isinstance(transaction, dict):  # a "json"-encoded transaction
        listed = (transaction.get("message") or {}).get("accountKeys")
        if isinstance(listed, list):
            keys = [str(k.get("pubkey")) if isinstance(k, dict) else str(k) for k in listed]
    loaded = (meta or {}).get("loadedAddresses") or {}
    if keys is not None and isinstance(loaded, dict):
        keys += [str(k) for k in (loaded.get("writable") or []) + (loaded.get("readonly") or [])]
    return keys


def invoked_programs(transaction: Any, meta: Optional[Json],
                     keys: Optional[List[str]]) -> Optional[List[str]]:
    """Every program the transaction invoked: its top-level instructions' program ids, and
    those of the inner instructions ``meta.innerInstructions`` lists. None when the
    instructions cannot be read (no solders, undecodable bytes)."""
    if keys is None:
        return None
    indexes: List[int] = []
    decoded = _decoded(transaction)
    if decoded is not None:
        indexes = [int(ix.program_id_index) for ix in decoded.message.instructions]
    elif isinstance(transaction, dict):
        listed = (transaction.get("message") or {}).get("instructions")
        if not isinstance(listed, list):
            return None
        indexes = [ix["programIdIndex"] for ix in listed
                   if isinstance(ix, dict) and isinstance(ix.get("programIdIndex"), int)]
    else:
        return None
    programs = [keys[i] for i in indexes if 0 <= i < len(keys)]
    for group in (meta or {}).get("innerInstructions") or []:
        for ix in (group.get("instructions") or []) if isinstance(group, dict) else []:
            index = ix.get("programIdIndex") if isinstance(ix, dict) else None
            if isinstance(index, int) and 0 <= index < len(keys):
                programs.append(keys[index])
            elif isinstance(ix, dict) and isinstance(ix.get("programId"), str):
                programs.append(ix["programId"])     # jsonParsed inner instructions
    return list(dict.fromkeys(programs))


def _key(keys: Optional[List[str]], index: int) -> str:
    return keys[index] if keys is not None and index < len(keys) else str(index)


def _token_amounts(balances: Any, keys: Optional[List[str]]) -> Dict[Tuple[str, str], int]:
    """``{(owner, mint): raw amount}`` from ``meta.preTokenBalances``/``postTokenBalances``
    (standard Solana: ``accountIndex``, ``mint``, ``owner``, ``uiTokenAmount.amount``); an
    entry without ``owner`` is keyed by its token account."""
    out: Dict[Tuple[str, str], int] = {}
    for entry in balances or []:
        try:
            amount = int((entry.get("uiTokenAmount") or {}).get("amount", 0))
            owner = entry.get("owner") or _key(keys, int(entry["accountIndex"]))
            pair = (str(owner), str(entry["mint"]))
        except (AttributeError, KeyError, TypeError, ValueError):
            continue
        out[pair] = out.get(pair, 0) + amount
    return out


def _deltas(pre: Dict[Tuple[str, str], int],
            post: Dict[Tuple[str, str], int]) -> Dict[str, Dict[str, int]]:
    tokens: Dict[str, Dict[str, int]] = {}
    for owner, mint in sorted(set(pre) | set(post)):
        delta = post.get((owner, mint), 0) - pre.get((owner, mint), 0)
        if delta:
            tokens.setdefault(owner, {})[mint] = delta
    return tokens


def token_account(account: Optional[Json]) -> Optional[Tuple[str, str, int]]:
    """``(owner, mint, raw amount)`` of an SPL Token / Token-2022 account in Solana's
    ``UiAccount`` shape (``data: [base64, "base64"]``), else None."""
    if not isinstance(account, dict) or account.get("owner") not in TOKEN_PROGRAMS:
        return None
    data = account.get("data")
    text = data[0] if isinstance(data, (list, tuple)) and data else data
    if not isinstance(text, str):
        return None
    try:
        raw = base64.b64decode(text)
    except ValueError:
        return None
    if len(raw) < TOKEN_ACCOUNT_LEN or (len(raw) > TOKEN_ACCOUNT_LEN
                                        and raw[TOKEN_ACCOUNT_LEN] != 2):
        return None
    mint, owner = base58.b58encode(raw[:32]).decode(), base58.b58encode(raw[32:64]).decode()
    return owner, mint, int.from_bytes(raw[64:72], "little")


def diff_token_changes(diffs: Dict[str, Json]) -> Dict[str, Dict[str, int]]:
    """Token changes per owner and mint from one transaction's token-account diffs
    (``{account: {"before": UiAccount|None, "after": UiAccount|None}}``)."""
    pre: Dict[Tuple[str, str], int] = {}
    post: Dict[Tuple[str, str], int] = {}
    for diff in diffs.values():
        for side, into in (("before", pre), ("after", post)):
            found = token_account(diff.get(side))
            if found is not None:
                owner, mint, amount = found
                into[(owner, mint)] = into.get((owner, mint), 0) + amount
    return _deltas(pre, post)


def _outcome(meta: Optional[Json]) -> Tuple[bool, Any]:
    """``(success, error)``: ``meta.err`` (or ``meta.status.Err``); a notification without
    meta cannot be judged and counts as failed, with an error saying so."""
    if not isinstance(meta, dict):
        return False, "no meta in the transaction notification: outcome unknown"
    error = meta.get("err")
    status = meta.get("status")
    if error is None and isinstance(status, dict) and status.get("Err") is not None:
        error = status["Err"]
    return error is None, error


def transaction_record(slot: int, signature: str, transaction: Any, meta: Optional[Json]) -> Json:
    """One entry of ``transactions`` (without ``account_diffs``) from a Transaction event.
    ``success`` is always True or False."""
    keys = account_keys(transaction, meta)
    success, error = _outcome(meta)
    meta = meta if isinstance(meta, dict) else {}
    sol: Dict[str, int] = {}
    for index, (pre, post) in enumerate(zip(meta.get("preBalances") or [],
                                            meta.get("postBalances") or [])):
        if post != pre:
            sol[_key(keys, index)] = sol.get(_key(keys, index), 0) + int(post) - int(pre)
    tokens = _deltas(_token_amounts(meta.get("preTokenBalances"), keys),
                     _token_amounts(meta.get("postTokenBalances"), keys))
    return {"slot": slot, "signature": signature, "success": success,
            "error": error, "logs": list(meta.get("logMessages") or []),
            "sol_changes": sol, "token_changes": tokens}


def signature_of(event: Any) -> str:
    """A Transaction event's signature: ``event.signature``, or for a ``json``-encoded
    transaction (which ``event.signature`` cannot decode) its ``signatures[0]``."""
    signature = str(event.signature or "")
    transaction = event.transaction
    if not signature and isinstance(transaction, dict):
        listed = transaction.get("signatures")
        if isinstance(listed, list) and listed:
            signature = str(listed[0])
    return signature


class Collector:
    """Gathers ``Transaction`` and ``AccountDiff`` events into file entries: one per
    signature of a transaction that invoked ``program_id`` (when its instructions cannot be
    read, without solders, the server's subscription filter is trusted); diffs are joined to
    their transaction by signature (in either arrival order); diffs of transactions that are
    not listed are counted in ``unmatched_diffs`` and left out. ``diffs_subscribed``: the
    run subscribed to account diffs (so token changes are measured from them when the meta
    has no token balances). User thread only."""

    def __init__(self, program_id: Optional[str] = None, diffs_subscribed: bool = False) -> None:
        self.program_id = program_id
        self.diffs_subscribed = diffs_subscribed
        self.meta_token_balances = False   # some entry's meta listed token balances
        self._records: Dict[str, Json] = {}
        self._diffs: Dict[str, Dict[str, Json]] = {}
        self.diff_count = 0
        self.not_invoking = 0      # transaction notifications that did not invoke program_id

    def transaction(self, event: Any) -> None:
        signature = signature_of(event)
        if signature in self._records:
            return
        if self.program_id is not None:
            keys = account_keys(event.transaction, event.meta)
            programs = invoked_programs(event.transaction, event.meta, keys)
            if programs is not None and self.program_id not in programs:
                self.not_invoking += 1
                return
        self._records[signature] = transaction_record(event.slot, signature,
                                                      event.transaction, event.meta)
        meta = event.meta if isinstance(event.meta, dict) else {}
        if meta.get("preTokenBalances") or meta.get("postTokenBalances"):
            self.meta_token_balances = True

    @property
    def token_changes_measured(self) -> bool:
        """Whether ``token_changes`` were measured: account diffs were subscribed, or the
        server fills the meta's token balances (some entry listed one). Empty lists in every
        meta do not count: a server that does not fill them sends them empty for token
        transfers too."""
        return self.diffs_subscribed or self.meta_token_balances

    def diff(self, event: Any) -> None:
        self.diff_count += 1
        self._diffs.setdefault(event.signature, {})[event.account] = {
            "before": event.pre, "after": event.post}

    @property
    def unmatched_diffs(self) -> int:
        """Account diffs whose signature has no entry (another program's transactions)."""
        return sum(len(d) for s, d in self._diffs.items() if s not in self._records)

    def records(self) -> List[Json]:
        """Every entry, in slot order (arrival order within a slot). ``token_changes``
        falls back to the token-account diffs when the meta has no token balances."""
        out = []
        for signature, record in self._records.items():
            diffs = self._diffs.get(signature, {})
            entry = {**record, "account_diffs": diffs}
            if not entry["token_changes"] and diffs:
                entry["token_changes"] = diff_token_changes(diffs)
            out.append(entry)
        return sorted(out, key=lambda r: r["slot"])


def document(records: List[Json], start_slot: int, end_slot: int, program_id: Optional[str],
             session_ids: Sequence[str], token_changes_measured: Optional[bool] = None,
             complete: bool = True) -> Json:
    """The whole output file. ``metadata.token_changes_measured`` is written when given
    (``Collector.token_changes_measured``); ``complete=False`` adds ``metadata.incomplete:
    true`` (a run interrupted before ``Completed``: the entries collected so far)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    metadata: Json = {"start_slot": start_slot, "end_slot": end_slot,
                      "program_id": program_id, "session_ids": list(session_ids),
                      "timestamp": stamp.isoformat().replace("+00:00", "Z")}
    if token_changes_measured is not None:
        metadata["token_changes_measured"] = token_changes_measured
    if not complete:
        metadata["incomplete"] = True
    return {"metadata": metadata, "transactions": records, "summary": totals(records)}


def totals(records: Iterable[Json]) -> Json:
    records = list(records)
    return {"total": len(records),
            "successes": sum(1 for r in records if r.get("success") is True),
            "failures": sum(1 for r in records if r.get("success") is False)}


def write(doc: Json, path: str) -> None:
    with open(path, "w", encoding="utf-8") as out:
        json.dump(doc, out, indent=1)
        out.write("\n")


#: The columns of a ``--format jsonl`` line, in order: scalars only (the nested changes are
#: JSON text), so ``pandas.read_json(path, lines=True)`` gives one row per transaction.
FLAT_COLUMNS = ("slot", "signature", "success", "error", "logs", "sol_changes",
                "token_changes", "account_diffs", "program_id", "run_complete")


def flat_rows(doc: Json) -> List[Json]:
    """One flat dict per transaction (``FLAT_COLUMNS``): ``error``, ``logs``,
    ``sol_changes`` and ``token_changes`` as JSON text (``error`` None on success),
    ``account_diffs`` the number of diffs, ``program_id`` from the metadata, ``run_complete``
    False when the run was interrupted (``metadata.incomplete``)."""
    found = doc.get("metadata")
    meta: Json = found if isinstance(found, dict) else {}
    complete = not meta.get("incomplete", False)
    rows = []
    for record in doc["transactions"]:
        error = record.get("error")
        rows.append({"slot": record.get("slot"), "signature": record["signature"],
                     "success": record.get("success"),
                     "error": None if error is None else json.dumps(error),
                     "logs": json.dumps(record.get("logs") or []),
                     "sol_changes": json.dumps(record.get("sol_changes") or {}),
                     "token_changes": json.dumps(record.get("token_changes") or {}),
                     "account_diffs": len(record.get("account_diffs") or {}),
                     "program_id": meta.get("program_id"), "run_complete": complete})
    return rows


def write_jsonl(doc: Json, path: str) -> None:
    """``doc`` as JSON Lines: one ``flat_rows`` line per transaction."""
    with open(path, "w", encoding="utf-8") as out:
        for row in flat_rows(doc):
            out.write(json.dumps(row) + "\n")


def load(path: str) -> Json:
    """Read an output file (ours or the service CLI's); ValueError when it is not one."""
    with open(path, encoding="utf-8") as source:
        try:
            doc = json.load(source)
        except ValueError as exc:
            raise ValueError(f"{path} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("transactions"), list):
        raise ValueError(f"{path} is not a backtest output file (no 'transactions' list)")
    for record in doc["transactions"]:
        if not isinstance(record, dict) or "signature" not in record:
            raise ValueError(f"{path}: a transaction entry has no signature")
        if "success" not in record:
            record["success"] = record.get("error") is None
    return doc


# ----------------------------------------------------------------------------- collecting a run

log = logging.getLogger("simsync.runoutput")

SYSTEM_PROGRAM_ID = "11111111111111111111111111111111"
#: What ``subscriptions`` may name: transactions are always streamed (entries are
#: transactions); ``account-diff`` joins each entry's account diffs.
SUBSCRIPTIONS = ("transactions", "account-diff")
_PAUSES = (ReadyForContinue, Paused)
TICK = 0.2    # longest wait for an event before the observer is ticked


class RunObserver(Protocol):
    """What ``collect_run`` reports as it goes (``simsync run``'s progress display is one);
    every call is made on the thread that runs ``collect_run``, and must not block."""

    def watch(self, status: Callable[[], ConnectionStatus]) -> None: ...
    def track(self, key: str, start_slot: int, end_slot: int) -> None: ...
    def slot(self, key: str, slot: int) -> None: ...
    def finished(self, key: str) -> None: ...
    def event(self) -> None: ...
    def tick(self, force: bool = False) -> None: ...


class NoObserver:
    """A ``RunObserver`` that ignores everything."""

    def watch(self, status: Callable[[], ConnectionStatus]) -> None:
        pass

    def track(self, key: str, start_slot: int, end_slot: int) -> None:
        pass

    def slot(self, key: str, slot: int) -> None:
        pass

    def finished(self, key: str) -> None:
        pass

    def event(self) -> None:
        pass

    def tick(self, force: bool = False) -> None:
        pass


class Driver:
    """Steps one (sub-)session and files what it sends into a ``Collector``; the first step
    carries the program override when there is one. User thread only."""

    def __init__(self, session: Union[Session, SubSession], key: str, *,
                 program_id: Optional[str], elf: Optional[bytes], advance_count: int,
                 observer: RunObserver, collector: Collector) -> None:
        self.session = session
        self.key = key
        self.program_id = program_id
        self.elf = elf
        self.advance_count = advance_count
        self.observer = observer
        self.collector = collector
        self.first_step = True
        self.completed: Optional[Completed] = None

    def subscribe(self, program_id: str, subscriptions: Sequence[str]) -> None:
        self.session.subscribe_transactions([program_id])
        if "account-diff" in subscriptions:
            self.session.subscribe_account_diffs([program_id])

    def handle(self, event: Event) -> None:
        """Files one event; answers a pause with the next step. Raises ``SimsyncError``
        when the server rejected a step (nothing more will come)."""
        self.observer.event()
        if isinstance(event, _PAUSES):
            overrides = None
            if self.first_step and self.elf is not None and self.program_id is not None:
                overrides = self.session.modify_program(self.program_id, self.elf)
            self.first_step = False
            self.session.send_continue(advance_count=self.advance_count,
                                       modify_account_states=overrides)
        elif isinstance(event, Slot):
            self.observer.slot(self.key, event.slot)
        elif isinstance(event, Transaction):
            self.collector.transaction(event)
        elif isinstance(event, AccountDiff):
            self.collector.diff(event)
        elif isinstance(event, ServerError):
            if event.rejects_request:     # the step did not run; nothing will come
                raise SimsyncError(f"the server rejected the step: {event.message}")
            log.warning("server error (non-fatal) in session %s: %s",
                        self.session.info.session_id, event.message)
        elif isinstance(event, Completed):
            self.completed = event
            self.observer.finished(self.key)


#: ELF ``e_machine`` values of Solana programs: EM_BPF (eBPF, the older SBF toolchains) and
#: EM_SBF (SBFv2+).
SBF_MACHINES = {247: "EM_BPF", 263: "EM_SBF"}


def check_program_elf(header: bytes, name: str) -> None:
    """Raises ``ValueError`` (one line naming ``name``) unless ``header`` (the first 20 or more
    bytes of a file) starts an ELF of a Solana program: the ``\\x7fELF`` magic, 64-bit,
    little-endian, ``e_machine`` EM_BPF (247) or EM_SBF (263). An x86 or ARM binary (say
    ``/bin/ls``) would be installed and kill the session inside the simulator."""
    if not header.startswith(b"\x7fELF"):
        raise ValueError(f"{name} is not an ELF file (no \\x7fELF header)")
    if len(header) < 20:
        raise ValueError(f"{name} is a truncated ELF file ({len(header)} bytes)")
    order: Optional[Literal["little", "big"]] = {1: "little", 2: "big"}.get(header[5])  # type: ignore[assignment]
    if order is None:
        raise ValueError(f"{name} is not a valid ELF file (byte order {header[5]})")
    machine = int.from_bytes(header[18:20], order)
    if machine not in SBF_MACHINES:
        kind = ELF_MACHINES.get(machine, "unknown")
        raise ValueError(f"{name} is an ELF for e_machine {machine} ({kind}), not a Solana "
                         "program (SBF: e_machine 247 EM_BPF or 263 EM_SBF)")
    if header[4] != 2 or order != "little":
        raise ValueError(f"{name} is not a 64-bit little-endian ELF: not a Solana program")


#: Names for the error line of the usual wrong files.
ELF_MACHINES = {3: "x86", 40: "ARM", 62: "x86-64", 183: "AArch64", 243: "RISC-V"}


def read_elf(path: str) -> bytes:
    """The bytes of a Solana program's ELF file; ``ValueError`` when it is not one
    (``check_program_elf``); ``OSError`` when it cannot be read."""
    with open(path, "rb") as source:
        elf = source.read()
    check_program_elf(elf, path)
    return elf


def collect_run(client: Client, create: Dict[str, Any], *, program_id: Optional[str] = None,
                subscriptions: Sequence[str] = ("transactions",), advance_count: int = 100,
                parallel: bool = False, elf: Optional[bytes] = None,
                observer: Optional[RunObserver] = None,
                collector: Optional[Collector] = None) -> Tuple[List[Driver], Collector]:
    """Drive one run to ``Completed`` on the calling thread: a session created with
    ``client.start_session(**create)`` (or ``start_parallel`` with ``parallel``), subscribed to
    the transactions of ``program_id`` (the System program when None) and, with
    ``"account-diff"`` in ``subscriptions``, their account diffs; ``elf`` replaces
    ``program_id``'s code from the first step. Returns the drivers (one per (sub-)session) and
    the collector (pass your own to keep what was collected when this raises, e.g. on
    ``KeyboardInterrupt``). Blocks on the session's events; raises what the session raises
    (``ControlFailed``, ``SessionCreateError``, ...)."""
    program = program_id or SYSTEM_PROGRAM_ID
    seen = observer if observer is not None else NoObserver()
    kept = collector if collector is not None else Collector(
        program, diffs_subscribed="account-diff" in subscriptions)

    def driver(session: Union[Session, SubSession], key: str) -> Driver:
        made = Driver(session, key, program_id=program_id, elf=elf,
                      advance_count=advance_count, observer=seen, collector=kept)
        made.subscribe(program, subscriptions)
        return made

    if not parallel:
        with client.start_session(**create) as session:
            seen.watch(lambda: session.status)
            seen.track("main", create["start_slot"], create["end_slot"])
            one = driver(session, "main")
            while one.completed is None:
                with contextlib.suppress(EventTimeout):
                    one.handle(session.next_event(TICK))
                seen.tick()
            return [one], kept
    with client.start_parallel(**create) as batch:
        seen.watch(lambda: batch.status)
        drivers: Dict[str, Driver] = {}
        for sub in batch.sub_sessions:
            key = sub.info.session_id
            seen.track(key, *sub.range)
            drivers[key] = driver(sub, key)
        while any(d.completed is None for d in drivers.values()):
            try:   # events() ends on a timeout: start it again (completion is tracked here)
                for sub, event in batch.events(timeout=TICK):
                    drivers[sub.info.session_id].handle(event)
                    seen.tick()
                    if all(d.completed is not None for d in drivers.values()):
                        break
            except EventTimeout:
                pass
            seen.tick()
        return list(drivers.values()), kept
