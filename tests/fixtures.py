"""Loads the golden frames kept in ``tests/golden`` (copies of the protocol's fixtures).

The suite reads only these in-repo copies, so it runs in any clone; ``.ci/run`` checks that
they still equal the project's shared fixtures where those are beside the repo (in CI).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

GOLDEN = Path(__file__).resolve().parent / "golden"


def rows(name: str) -> List[Dict[str, Any]]:
    """The rows of one JSON Lines fixture file."""
    with open(GOLDEN / name, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def frames(name: str, direction: str) -> List[Dict[str, Any]]:
    """The rows of one direction (``c2s`` or ``s2c``)."""
    return [row for row in rows(name) if row["dir"] == direction]


def compact(frame: Any) -> str:
    """A frame as canonical compact JSON (the byte-for-byte comparison form)."""
    return json.dumps(frame, separators=(",", ":"))
