"""The deterministic synthetic chain history the simulator replays.

Everything here is a pure function of the seed and the bundle layout: which slots produced a
block, the transactions of each block split into batches, the genesis accounts. Blocks are built
(and signed) on demand and cached. Thread-safe: the test thread asks `produced_slots`, the
event-loop thread builds blocks.

The history uses only programs LiteSVM ships: System transfers between funded wallets, SPL Token
transfers between their token accounts, "oracle updates" (a System transfer into
`ORACLE_ACCOUNT`), and SPL Memo instructions, the program a ``programExecuted`` discovery filter
can match (`DISCOVERY_PROGRAM_ID`); a memo shows up in some slots but not all.
"""
from __future__ import annotations

import calendar
import hashlib
import random
import struct
import threading
import time
from dataclasses import dataclass
from typing import Dict, Generic, List, Optional, Tuple, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.account import Account
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.token.associated import get_associated_token_address
from solders.token.state import Mint, TokenAccount, TokenAccountState
from solders.transaction import VersionedTransaction

from simsync.localsim.accounts import Override

SYSTEM_PROGRAM_ID = "11111111111111111111111111111111"
TOKEN_PROGRAM_ID = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
MEMO_PROGRAM_ID = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"
UPGRADEABLE_LOADER_ID = "BPFLoaderUpgradeab1e11111111111111111111111"
DISCOVERY_PROGRAM_ID = MEMO_PROGRAM_ID
ORACLE_ACCOUNT = str(Keypair.from_seed(hashlib.sha256(b"simsync-localsim:oracle").digest())
                     .pubkey())

SKIP_RATE = 0.1
WALLETS = 6
WALLET_LAMPORTS = 10**15
TOKEN_AMOUNT = 10**12
ORACLE_LAMPORTS = 10**9
#: lamports per signature (Agave's and LiteSVM's default); a historical transaction has one
FEE_LAMPORTS = 5_000
#: `History.state_at` keeps the balances at every this many slots from the first
STATE_CHECKPOINT = 1_000
#: slots a chunk of `History._produced_chunk`
_CHUNK = 1_024
EPOCH_UTC = calendar.timegm((2026, 1, 10, 8, 0, 0, 0, 0, 0))  # first slot's wall clock
_KINDS = ("transfer", "token", "oracle", "memo")
_WEIGHTS = (50, 30, 10, 10)

_SYSTEM = Pubkey.from_string(SYSTEM_PROGRAM_ID)
_TOKEN = Pubkey.from_string(TOKEN_PROGRAM_ID)
_MEMO = Pubkey.from_string(MEMO_PROGRAM_ID)
_ORACLE = Pubkey.from_string(ORACLE_ACCOUNT)


@dataclass(frozen=True)
class TxPlan:
    """What a historical transaction does, known without building or signing it."""

    kind: str
    payer: str
    program_ids: Tuple[str, ...]
    account_keys: Tuple[str, ...]


@dataclass(frozen=True)
class HistTx:
    """A built, signed historical transaction."""

    plan: TxPlan
    tx: VersionedTransaction


BlockPlan = Tuple[Tuple[TxPlan, ...], ...]
Block = Tuple[Tuple[HistTx, ...], ...]
K = TypeVar("K")
V = TypeVar("V")


class _Cache(Generic[K, V]):
    """A small thread-safe FIFO-bounded cache."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: Dict[K, V] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> Optional[V]:
        with self._lock:
            return self._data.get(key)

    def put(self, key: K, value: V) -> V:
        with self._lock:
            if len(self._data) >= self._size:
                self._data.pop(next(iter(self._data)))
            self._data[key] = value
        return value


def _transfer(source: Pubkey, dest: Pubkey, lamports: int) -> Instruction:
    """System ``Transfer`` (the bytes ``solders.system_program.transfer`` makes: instruction 2,
    u32 LE, then the lamports u64 LE). Built here because solders 0.29's ``transfer`` keeps a
    ~120-byte allocation alive per call (traced at its ``dict(params)``; in a long session it
    grew the simulator by 0.3 KiB a slot)."""
    return Instruction(_SYSTEM, struct.pack("<IQ", 2, lamports),
                       [AccountMeta(source, True, True), AccountMeta(dest, False, True)])


def _keypair(*parts: object) -> Keypair:
    text = ":".join(str(p) for p in ("simsync-localsim",) + parts)
    return Keypair.from_seed(hashlib.sha256(text.encode()).digest())


def _amount(slot: int, index: int) -> int:
    """What the ``index``-th historical transaction of ``slot`` moves (lamports or token base
    units; unique within a slot, so no two of a block share a signature)."""
    return 1000 * (1 + (slot * 7 + index * 13) % 997) + index


@dataclass(frozen=True)
class _Balances:
    """Lamports of the history's signers and the oracle account (by address), and the
    token amounts of the wallets' token accounts (by wallet index)."""

    lamports: Dict[str, int]
    tokens: Tuple[int, ...]


def utc(timestamp: int) -> str:
    """``2026-01-10T08:00:00Z`` for a unix timestamp."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


class History:
    """Deterministic slots, blocks and genesis state for one seed and bundle layout."""

    def __init__(self, seed: int, first_slot: int, bundle_size: int, bundles: int) -> None:
        if bundle_size < 1 or bundles < 1:
            raise ValueError("bundle_size and bundles must be >= 1")
        self.seed = seed
        self.first_slot = first_slot
        self.bundle_size = bundle_size
        self.bundle_count = bundles
        self.last_slot = first_slot + bundle_size * bundles - 1
        self.wallets = [_keypair(seed, "wallet", i) for i in range(WALLETS)]
        self.oracle_authority = _keypair(seed, "oracle-authority")
        self.mint = _keypair(seed, "mint").pubkey()
        # Keypair.pubkey() derives the key on every call (tens of µs): derive each once.
        self._wallet_keys = [w.pubkey() for w in self.wallets]
        oracle_key = self.oracle_authority.pubkey()
        self.wallet_ids = [str(k) for k in self._wallet_keys]
        self.oracle_authority_id = str(oracle_key)
        # each signer's ed25519 key in OpenSSL (``cryptography``): its signatures are the
        # same bytes as solders' ``Keypair.sign_message`` (ed25519 is deterministic) at
        # three quarters of the cost, and signing is most of building the history
        self._signers: Dict[str, Tuple[Ed25519PrivateKey, Pubkey]] = {
            str(k): (Ed25519PrivateKey.from_private_bytes(bytes(kp)[:32]), k)
            for kp, k in zip(self.wallets + [self.oracle_authority],
                             self._wallet_keys + [oracle_key])}
        self.token_accounts = [get_associated_token_address(k, self.mint)
                               for k in self._wallet_keys]
        #: every transaction plan there is (kind, payer wallet, other wallet): block plans
        #: share them, so a cached block plan costs its tuples only
        self._tx_plans = {(kind, a, b): self._new_tx_plan(kind, a, b) for kind in _KINDS
                          for a in range(WALLETS) for b in range(WALLETS) if a != b}
        self._plans: _Cache[int, BlockPlan] = _Cache(8_192)
        self._blocks: _Cache[int, Block] = _Cache(512)  # built blocks hold native transactions
        self._token_index = {str(t): i for i, t in enumerate(self.token_accounts)}
        lamports = {k: WALLET_LAMPORTS for k in self._signers}
        lamports[ORACLE_ACCOUNT] = ORACLE_LAMPORTS
        #: balances before the block at first_slot + k * STATE_CHECKPOINT, as they are found
        self._checkpoints: Dict[int, _Balances] = {
            first_slot: _Balances(lamports, (TOKEN_AMOUNT,) * WALLETS)}
        self._checkpoint_lock = threading.Lock()
        self._produced: Dict[int, bytes] = {}
        self._chunk_counts: Dict[int, int] = {}

    # -- layout ----------------------------------------------------------------------------
    def bundles(self) -> List[Tuple[int, int]]:
        """``[(first, last)]`` of every bundle, inclusive."""
        size = self.bundle_size
        return [(self.first_slot + i * size, self.first_slot + (i + 1) * size - 1)
                for i in range(self.bundle_count)]

    def bundle_of(self, slot: int) -> int:
        """The index of the bundle holding ``slot`` (a slot of the history)."""
        return (slot - self.first_slot) // self.bundle_size

    def in_range(self, slot: int) -> bool:
        return self.first_slot <= slot <= self.last_slot

    def is_bundle_start(self, slot: int) -> bool:
        return self.in_range(slot) and (slot - self.first_slot) % self.bundle_size == 0

    def is_produced(self, slot: int) -> bool:
        if not self.in_range(slot):
            return False
        offset = slot - self.first_slot
        return bool(self._produced_chunk(offset // _CHUNK)[offset % _CHUNK])

    def _draw_produced(self, slot: int) -> bool:
        if self.is_bundle_start(slot):
            return True
        return random.Random(f"{self.seed}:skip:{slot}").random() >= SKIP_RATE

    def _produced_chunk(self, index: int) -> bytes:
        """One flag a slot (1: produced) for the `_CHUNK` slots from ``first_slot + index ×
        _CHUNK``: drawn once (a seeded ``random.Random`` a slot costs microseconds, and
        `block_height` counts from the first slot), then kept (a byte a slot). Any thread:
        two threads drawing the same chunk draw the same bytes."""
        flags = self._produced.get(index)
        if flags is None:
            lo = self.first_slot + index * _CHUNK
            flags = bytes(self._draw_produced(s)
                          for s in range(lo, min(lo + _CHUNK, self.last_slot + 1)))
            self._produced[index] = flags
        return flags

    def produced_slots(self, start: int, end: int) -> List[int]:
        lo, hi = max(start, self.first_slot), min(end, self.last_slot)
        return [s for s in range(lo, hi + 1) if self.is_produced(s)]

    def _produced_before(self, slot: int) -> int:
        """How many slots of the history below ``slot`` were produced."""
        offset = min(slot, self.last_slot + 1) - self.first_slot
        if offset <= 0:
            return 0
        whole, part = divmod(offset, _CHUNK)
        count = 0
        for index in range(whole):
            found = self._chunk_counts.get(index)
            if found is None:
                found = self._chunk_counts[index] = sum(self._produced_chunk(index))
            count += found
        return count + (sum(self._produced_chunk(whole)[:part]) if part else 0)

    def blockhash(self, slot: int) -> Hash:
        """The recent blockhash a block at ``slot`` is built on: what ``getLatestBlockhash``
        answers while the session stands at ``slot``, and what the history's own
        transactions of that block carry (deterministic)."""
        return Hash(hashlib.sha256(f"{self.seed}:blockhash:{slot}".encode()).digest())

    def block_height(self, slot: int) -> int:
        """Block height at a pause before ``slot`` (a produced slot): the number of blocks
        produced before it on its own scale, below the slot number (mainnet's base:
        ``first_slot`` × 0.945, then one per produced block; skipped slots add none)."""
        return self.first_slot * 945 // 1000 + self._produced_before(slot)

    def block_time(self, slot: int) -> int:
        return EPOCH_UTC + (slot - self.first_slot) * 2 // 5

    def available_ranges(self) -> List[Dict[str, object]]:
        return [{"bundleStartSlot": lo, "bundleStartSlotUtc": utc(self.block_time(lo)),
                 "maxBundleEndSlot": hi, "maxBundleEndSlotUtc": utc(self.block_time(hi)),
                 "maxBundleSize": self.bundle_size, "kind": "blocks", "scope": "global"}
                for lo, hi in self.bundles()]

    # -- genesis and start state -----------------------------------------------------------
    def genesis(self) -> List[Override]:
        """The accounts of the history before its first block (``first_slot``)."""
        return self.state_at(self.first_slot)

    def state_at(self, slot: int) -> List[Override]:
        """The history's accounts before the block at ``slot`` (a slot of the history):
        genesis plus every historical transaction of the slots before it, each succeeding and
        paying `FEE_LAMPORTS` (what a session that ran there from ``first_slot`` holds; the
        state a session, or a parallel sub-session, starting at ``slot`` is installed with).
        Computed from the plans without executing anything, from the nearest checkpoint
        below (every `STATE_CHECKPOINT` slots, kept once found): 30–80 ms per 1,000 slots
        past it on a loaded 2-core VM. Any thread (the registry calls it on the event loop
        when it creates a session); ValueError for a slot outside the history."""
        if not self.in_range(slot):
            raise ValueError(f"slot {slot} is outside the history")
        balances = self._balances_at(slot)
        out: List[Override] = []
        for address, (_, pubkey) in self._signers.items():
            out.append((pubkey, Account(balances.lamports[address], b"", _SYSTEM, False, 0)))
        mint = Mint(self._wallet_keys[0], TOKEN_AMOUNT * WALLETS, 6, True)
        out.append((self.mint, Account(1_461_600, bytes(mint), _TOKEN, False, 0)))
        for key, ata, amount in zip(self._wallet_keys, self.token_accounts, balances.tokens):
            state = TokenAccount(self.mint, key, amount, None,
                                 TokenAccountState.Initialized, None, 0)
            out.append((ata, Account(2_039_280, bytes(state), _TOKEN, False, 0)))
        out.append((_ORACLE, Account(balances.lamports[ORACLE_ACCOUNT], b"", _SYSTEM, False, 0)))
        return out

    def _balances_at(self, slot: int) -> _Balances:
        step = STATE_CHECKPOINT
        with self._checkpoint_lock:
            known = max(s for s in self._checkpoints if s <= slot)
            start = self._checkpoints[known]
        lamports, tokens = dict(start.lamports), list(start.tokens)
        for s in range(known, slot + 1):
            if s > known and (s - self.first_slot) % step == 0:
                with self._checkpoint_lock:
                    self._checkpoints[s] = _Balances(dict(lamports), tuple(tokens))
            if s < slot:
                self._apply(s, lamports, tokens)
        return _Balances(lamports, tuple(tokens))

    def _apply(self, slot: int, lamports: Dict[str, int], tokens: List[int]) -> None:
        """Add the effect of the block at ``slot`` (as `_build` makes it) to the balances."""
        plan = self._plans.get(slot)
        plans = plan if plan is not None else self._make_plan(slot)
        for index, p in enumerate(tx for batch in plans for tx in batch):
            lamports[p.payer] -= FEE_LAMPORTS
            amount = _amount(slot, index)
            if p.kind == "transfer":
                lamports[p.payer] -= amount
                lamports[p.account_keys[1]] += amount
            elif p.kind == "token":
                tokens[self._token_index[p.account_keys[1]]] -= amount
                tokens[self._token_index[p.account_keys[2]]] += amount
            elif p.kind == "oracle":
                lamports[p.payer] -= 1 + index
                lamports[ORACLE_ACCOUNT] += 1 + index

    # -- blocks ----------------------------------------------------------------------------
    def plan(self, slot: int) -> BlockPlan:
        """The batches of ``slot`` (empty for a skipped slot), without building anything."""
        cached = self._plans.get(slot)
        if cached is not None:
            return cached
        return self._plans.put(slot, self._make_plan(slot))

    def _make_plan(self, slot: int) -> BlockPlan:
        if not self.is_produced(slot):
            return ()
        rng = random.Random(f"{self.seed}:block:{slot}")
        batches = []
        for _ in range(rng.randint(1, 3)):
            kinds = rng.choices(_KINDS, _WEIGHTS, k=rng.randint(1, 3))
            batches.append(tuple(self._plan_tx(kind, rng) for kind in kinds))
        return tuple(batches)

    def _plan_tx(self, kind: str, rng: random.Random) -> TxPlan:
        a, b = rng.sample(range(WALLETS), 2)
        return self._tx_plans[kind, a, b]

    def _new_tx_plan(self, kind: str, a: int, b: int) -> TxPlan:
        payer, dest = self.wallet_ids[a], self.wallet_ids[b]
        if kind == "transfer":
            return TxPlan(kind, payer, (SYSTEM_PROGRAM_ID,), (payer, dest, SYSTEM_PROGRAM_ID))
        if kind == "token":
            keys = (payer, str(self.token_accounts[a]), str(self.token_accounts[b]),
                    TOKEN_PROGRAM_ID)
            return TxPlan(kind, payer, (TOKEN_PROGRAM_ID,), keys)
        if kind == "oracle":
            auth = self.oracle_authority_id
            return TxPlan(kind, auth, (SYSTEM_PROGRAM_ID,),
                          (auth, ORACLE_ACCOUNT, SYSTEM_PROGRAM_ID))
        return TxPlan(kind, payer, (MEMO_PROGRAM_ID,), (payer, MEMO_PROGRAM_ID))

    def block(self, slot: int) -> Block:
        """The built and signed batches of ``slot``."""
        cached = self._blocks.get(slot)
        if cached is not None:
            return cached
        blockhash = self.blockhash(slot)
        built = []
        index = 0
        for batch in self.plan(slot):
            txs = []
            for plan in batch:
                txs.append(HistTx(plan, self._build(plan, slot, index, blockhash)))
                index += 1
            built.append(tuple(txs))
        return self._blocks.put(slot, tuple(built))

    def _build(self, plan: TxPlan, slot: int, index: int, blockhash: Hash) -> VersionedTransaction:
        signer, payer = self._signers[plan.payer]
        amount = _amount(slot, index)
        if plan.kind == "transfer":
            ix = _transfer(payer, Pubkey.from_string(plan.account_keys[1]), amount)
        elif plan.kind == "token":
            src, dst = (Pubkey.from_string(k) for k in plan.account_keys[1:3])
            ix = Instruction(_TOKEN, bytes([3]) + struct.pack("<Q", amount),
                             [AccountMeta(src, False, True), AccountMeta(dst, False, True),
                              AccountMeta(payer, True, False)])
        elif plan.kind == "oracle":
            ix = _transfer(payer, _ORACLE, 1 + index)
        else:
            ix = Instruction(_MEMO, f"simsync localsim {slot}:{index}".encode(), [])
        message = MessageV0.try_compile(payer, [ix], [], blockhash)
        # the same bytes as VersionedTransaction(message, [keypair]), which costs twice the
        # signature (it derives the signer's public key again to check it)
        return VersionedTransaction.populate(
            message, [Signature.from_bytes(signer.sign(to_bytes_versioned(message)))])
