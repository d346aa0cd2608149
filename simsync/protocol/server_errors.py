"""Server errors (PROTOCOL.md §9) and simsync's fatal-error policy, kept in this one table."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict

from dataclasses_json import DataClassJsonMixin

#: Error variants that end the session. Everything else (including variants this version
#: does not know) is delivered to the user as a non-fatal ``ServerError`` event.
FATAL_ERRORS = frozenset({
    "noMoreBlocks", "bundleNotFound", "noProducedBlocksInRange", "advanceSlotFailed",
    "finalizeSlotFailed", "initializingSysvarsFailed", "internal", "clerkError",
    "sessionNotFound", "sessionOwnerMismatch", "sessionNameTaken",
})

#: Variants that are transient while (re-)attaching: retry with backoff.
RETRYABLE_ON_ATTACH = frozenset({"sessionOwnershipBusy"})

#: Non-fatal variants that mean "the request was rejected": the step did not run and the
#: session is still at its pause.
REJECTS_REQUEST = frozenset({
    "invalidTransactionEncoding", "invalidTransactionFormat", "invalidAccountEncoding",
    "invalidAccountOwner", "invalidAccountPubkey", "invalidBlockhashFormat", "invalidRequest",
})

#: Known non-fatal variants (documentation; not needed for the decision).
NON_FATAL_ERRORS = frozenset({
    "invalidTransactionEncoding", "invalidTransactionFormat", "invalidAccountEncoding",
    "invalidAccountOwner", "invalidAccountPubkey", "invalidBlockhashFormat", "invalidRequest",
    "simulationError", "sessionOwnershipBusy",
})

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])([A-Z])")


def variant_name(name: str) -> str:
    """``SessionNotFound`` or ``sessionNotFound`` → ``sessionNotFound``."""
    return name[:1].lower() + name[1:]


def snake_case(name: str) -> str:
    """``startSlot`` → ``start_slot``; snake_case stays as it is."""
    return _CAMEL_BOUNDARY.sub(r"_\1", name).lower()


@dataclass(frozen=True)
class ServerError(DataClassJsonMixin):
    """An ``error`` frame. ``kind`` is the camelCase variant, ``fields`` its fields in
    snake_case, ``raw`` the params exactly as received."""

    kind: str
    fields: Dict[str, Any] = field(default_factory=dict)
    raw: Any = None

    @property
    def fatal(self) -> bool:
        """Whether simsync's policy treats this error as the end of the session."""
        return self.kind in FATAL_ERRORS

    @property
    def retryable_on_attach(self) -> bool:
        """Whether a re-attach that got this error should retry with backoff."""
        return self.kind in RETRYABLE_ON_ATTACH

    @property
    def rejects_request(self) -> bool:
        """Whether the error rejected the request it answers (the step did not run)."""
        return self.kind in REJECTS_REQUEST

    @property
    def message(self) -> str:
        """The error in plain words: the variant and its fields."""
        if not self.fields:
            return self.kind
        details = ", ".join(f"{k}={v}" for k, v in self.fields.items())
        return f"{self.kind}: {details}"

    def __str__(self) -> str:
        return self.message
