"""The recording file: zstandard-compressed JSON lines, one record per line, written as a
sequence of complete zstandard frames (one per flush) so that a writer killed mid-run leaves
a readable prefix.

Records (every line is one JSON object with a ``"type"``):

* ``header`` (first): ``format`` (``FORMAT``), ``version`` (``VERSION``), ``host`` (the
  simulator's host and port; never the API key), ``start_slot``, ``end_slot``, ``programs``,
  ``accounts``, ``created_at`` (ISO 8601, UTC), ``simsync_version``, ``not_seen`` (what a
  recording of these subscriptions cannot contain).
* ``event``: ``wire`` is the frame object of one event as the protocol carries it
  (``simsync.protocol.codec.response_wire``: control events, ``transactionNotification`` with
  its full meta, ``accountDiffNotification``); a notification's ``subscription`` is the
  recording's own id (``simsync.recorder.SUBSCRIPTION_IDS``: 1 transactions, 2 account
  diffs), not the server's per-connection one. Each connection's events are in the order it
  carried them; how separate connections' events interleave is arrival order, not history.
* ``block``: ``slot``, ``blockhash``, ``last_valid_block_height`` at a pause.
* ``cursor``: ``cursor`` (``SessionCursor.to_json``): everything before it was handled; a
  resumed recording continues from the last one.
* ``end`` (last): ``accounts_not_touched`` (subscribed accounts that no diff named).

Nothing here drives a session (``simsync.recorder`` does); any thread.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Dict, Iterator, List, Optional, Tuple

from simsync.errors import SimsyncError

if TYPE_CHECKING:
    import zstandard

FORMAT = "simsync-recording"
VERSION = 1
_MAGIC = b"\x28\xb5\x2f\xfd"     # a zstandard frame's first four bytes

Record = Dict[str, Any]


class RecordingError(SimsyncError):
    """A file that is not a readable simsync recording: not zstandard, not this format, a
    version this simsync does not read, or no complete header."""


@dataclass
class Recording:
    """A decoded recording: ``header``, every later record in order, and ``complete``
    (``False`` when the file ends before its ``end`` record: a prefix, e.g. of a killed
    recorder). ``good_bytes`` is the length of the file's whole frames."""

    header: Record
    records: List[Record] = field(default_factory=list)
    complete: bool = False
    good_bytes: int = 0

    def events(self) -> List[Record]:
        """The ``wire`` objects of the ``event`` records, in order."""
        return [r["wire"] for r in self.records if r.get("type") == "event"]

    def streams(self) -> Dict[str, List[Record]]:
        """The ``events`` split by the connection that carries them: ``control`` (the
        session's control connection) and one list per notification method (the
        subscriptions'), each in its order. Each connection's order is history; how
        separate connections interleave is not (two recordings of a range may differ
        there), so compare recordings by their streams and blocks."""
        out: Dict[str, List[Record]] = {"control": []}
        for wire in self.events():
            key = str(wire.get("method")) if "jsonrpc" in wire else "control"
            out.setdefault(key, []).append(wire)
        return out

    def blocks(self) -> List[Record]:
        """The ``block`` records (slot, blockhash at each pause), in order."""
        return [r for r in self.records if r.get("type") == "block"]

    def last_cursor(self) -> Optional[Tuple[int, str]]:
        """``(index in records, cursor JSON)`` of the last ``cursor`` record, or ``None``."""
        for index in range(len(self.records) - 1, -1, -1):
            if self.records[index].get("type") == "cursor":
                return index, str(self.records[index]["cursor"])
        return None


def _zstd() -> Any:
    """The ``zstandard`` module (an optional dependency: ``pip install 'simsync[zstd]'``)."""
    try:
        import zstandard
    except ImportError as exc:
        raise RecordingError(f"recordings need zstandard ({exc}): "
                             "pip install 'simsync[zstd]'") from None
    return zstandard


_CHUNK = 1 << 16


def _frames(source: BinaryIO) -> Iterator[Tuple[int, bytes]]:
    """``(end offset, decompressed bytes)`` of each whole frame of ``source``, reading it in
    chunks (memory: one frame); stops at a torn or corrupt one."""
    zstd = _zstd()
    offset = 0              # where the current frame starts
    pending = b""           # bytes read past the end of the previous frame
    while True:
        dobj = zstd.ZstdDecompressor().decompressobj()
        parts: List[bytes] = []
        used = 0
        data = pending or source.read(_CHUNK)
        if not data:
            return
        while True:
            try:
                parts.append(dobj.decompress(data))
            except zstd.ZstdError:
                return
            if dobj.eof:
                pending = dobj.unused_data
                used += len(data) - len(pending)
                break
            used += len(data)
            data = source.read(_CHUNK)
            if not data:
                return      # the frame is cut short
        offset += used
        yield offset, b"".join(parts)


def raw_lines(path: str) -> Iterator[Tuple[int, bytes]]:
    """``(end offset of its frame, line)`` of every record line of the file at ``path``, in
    order, reading it a frame at a time (memory: one frame); stops after the last whole
    frame. Calling thread. Raises ``RecordingError`` when the file is not zstandard,
    ``OSError`` when it cannot be read."""
    with open(path, "rb") as source:
        if source.read(len(_MAGIC)) != _MAGIC:
            raise RecordingError(f"{path} is not a simsync recording "
                                 "(not zstandard-compressed)")
        source.seek(0)
        for end, chunk in _frames(source):
            for line in io.BytesIO(chunk):
                yield end, line


def parse_line(path: str, line: bytes) -> Record:
    """One record line decoded; ``RecordingError`` when it is not a JSON object."""
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise RecordingError(f"{path}: a record is not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise RecordingError(f"{path}: a record is not a JSON object")
    return record


def check_header(path: str, first: Optional[Record]) -> Record:
    """``first`` (the file's first record) when it is a header of this format and version;
    ``RecordingError`` saying what is wrong otherwise (``None``: the file has no record)."""
    if first is None or first.get("type") != "header":
        raise RecordingError(f"{path} has no complete simsync recording header "
                             "(truncated or not a recording)")
    if first.get("format") != FORMAT:
        raise RecordingError(f"{path} is not a simsync recording (format "
                             f"{first.get('format')!r})")
    if first.get("version") != VERSION:
        raise RecordingError(f"{path} is a recording of version {first.get('version')!r}; "
                             f"this simsync reads version {VERSION}")
    return first


def read(path: str) -> Recording:
    """Decode the recording at ``path`` (calling thread; reads the file in chunks).

    A file cut short reads as its prefix of whole frames with ``complete=False``. Raises
    ``RecordingError`` when it is not a zstandard file, has no complete header, or its
    header names another format or version; ``OSError`` when it cannot be read."""
    lines: List[Record] = []
    good = 0
    for end, line in raw_lines(path):
        lines.append(parse_line(path, line))
        good = end
    header = check_header(path, lines[0] if lines else None)
    body = lines[1:]
    complete = bool(body) and body[-1].get("type") == "end"
    return Recording(header, body, complete, good)


class RecordingWriter:
    """Appends records to a recording file; ``flush`` ends a zstandard frame and hands it to
    the OS, so that what was flushed survives the process being killed. One thread."""

    def __init__(self, path: str, append_at: Optional[int] = None) -> None:
        """A new file at ``path`` (``append_at`` None), or the existing one cut to
        ``append_at`` bytes (its whole frames up to a cursor) and continued."""
        self._compressor: zstandard.ZstdCompressor = _zstd().ZstdCompressor(level=3)
        if append_at is None:
            self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by close()
        else:
            self._file = open(path, "r+b")  # noqa: SIM115 - closed by close()
            self._file.truncate(append_at)
            self._file.seek(append_at)
        self._buffer: List[bytes] = []

    def write(self, record: Record) -> None:
        self._buffer.append(json.dumps(record, separators=(",", ":")).encode() + b"\n")

    def flush(self) -> None:
        if not self._buffer:
            return
        self._file.write(self._compressor.compress(b"".join(self._buffer)))
        self._file.flush()
        self._buffer = []

    def sync(self) -> None:
        """``flush`` and ``os.fsync`` (survives a machine crash, not only the process's)."""
        self.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self.flush()
        self._file.close()


__all__ = ["FORMAT", "VERSION", "Recording", "RecordingError", "RecordingWriter", "check_header",
           "parse_line", "raw_lines", "read"]
