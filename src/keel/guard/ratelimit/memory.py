"""The in-process limiter backend: exact for one process, bounded in memory.

Each entry carries the instant after which it means nothing (a GCRA key whose
TAT has passed is the same as a fresh one; a quota counter outlives its window
by nothing; a slot set lives as long as its longest lease). Expired entries are
swept in one pass every ``max(1024, size)`` operations, which keeps the cost
amortised O(1) per decision and the memory proportional to the keys active
recently. A hard ``max_keys`` cap evicts the oldest entries past that — it
trades exactness for a bound (an evicted GCRA key gets its burst back), which
only matters under a flood of distinct keys.

Being synchronous under the hood, every operation is atomic on the event loop.
"""

from __future__ import annotations

import uuid

from keel.guard.ratelimit.backend import SlotDecision
from keel.guard.ratelimit.gcra import GcraDecision, Rate, gcra
from keel.guard.ratelimit.quota import (
    QuotaDecision,
    QuotaWindow,
    counted,
    counter_key,
    quota_decision,
)

_MIN_SWEEP_INTERVAL = 1024


class MemoryBackend:
    """A :class:`~keel.guard.ratelimit.backend.LimiterBackend` in a dict."""

    def __init__(self, *, max_keys: int = 100_000) -> None:
        if max_keys <= 0:
            raise ValueError("max_keys must be positive")
        self._max_keys = max_keys
        self._tats: dict[str, float] = {}
        # counter key -> (count, expires_at)
        self._counts: dict[str, tuple[int, float]] = {}
        # slot key -> {slot_id: lease expiry}
        self._slots: dict[str, dict[str, float]] = {}
        self._ops = 0
        self._sweep_at = _MIN_SWEEP_INTERVAL

    def __len__(self) -> int:
        """Entries held, expired or not (until the next sweep)."""
        return len(self._tats) + len(self._counts) + len(self._slots)

    # --- GCRA ---------------------------------------------------------------

    async def gcra(self, key: str, rate: Rate, now: float, n: int = 1) -> GcraDecision:
        # Kept flat on purpose: this is the per-request hot path.
        self._ops += 1
        if self._ops >= self._sweep_at:
            self.sweep(now)
        tats = self._tats
        tat = tats.get(key)
        decision = gcra(tat, now, rate, n)
        if decision.allowed:
            if n > 0:
                if tat is None and len(tats) >= self._max_keys:
                    self._evict()
                tats[key] = decision.tat
        elif tat is not None and decision.tat < tat:
            tats[key] = decision.tat
        return decision

    # --- quotas --------------------------------------------------------------

    async def quota_check(
        self, key: str, limit: int, window: QuotaWindow, now: float, n: int = 1
    ) -> QuotaDecision:
        self._tick(now)
        bounds = window.bounds(now)
        return quota_decision(self._count(counter_key(key, bounds), now), limit, n, now, bounds)

    async def quota_consume(
        self,
        key: str,
        limit: int,
        window: QuotaWindow,
        now: float,
        n: int = 1,
        *,
        overdraft: bool = False,
    ) -> QuotaDecision:
        self._tick(now)
        bounds = window.bounds(now)
        ckey = counter_key(key, bounds)
        used = self._count(ckey, now)
        decision = quota_decision(used, limit, n, now, bounds)
        if decision.allowed or overdraft:
            self._counts[ckey] = (used + n, bounds[1])
            return counted(used + n, limit, now, bounds)
        return decision

    async def quota_refund(
        self, key: str, window: QuotaWindow, consumed_at: float, n: int = 1
    ) -> None:
        ckey = counter_key(key, window.bounds(consumed_at))
        entry = self._counts.get(ckey)
        if entry is not None:
            self._counts[ckey] = (max(0, entry[0] - n), entry[1])

    def _count(self, ckey: str, now: float) -> int:
        entry = self._counts.get(ckey)
        if entry is None or entry[1] <= now:
            return 0
        return entry[0]

    # --- concurrency slots ----------------------------------------------------

    async def slot_acquire(self, key: str, limit: int, lease: float, now: float) -> SlotDecision:
        self._tick(now)
        leases = self._slots.get(key)
        if leases is None:
            leases = self._slots[key] = {}
        for slot_id, expiry in list(leases.items()):
            if expiry <= now:
                del leases[slot_id]
        if len(leases) >= limit:
            earliest = min(leases.values())
            return SlotDecision(False, None, len(leases), limit, max(0.0, earliest - now))
        slot_id = uuid.uuid4().hex
        leases[slot_id] = now + lease
        return SlotDecision(True, slot_id, len(leases), limit, 0.0)

    async def slot_release(self, key: str, slot_id: str) -> None:
        leases = self._slots.get(key)
        if leases is not None:
            leases.pop(slot_id, None)
            if not leases:
                del self._slots[key]

    async def aclose(self) -> None:
        self._tats.clear()
        self._counts.clear()
        self._slots.clear()

    # --- bounded memory ---------------------------------------------------------

    def _tick(self, now: float) -> None:
        self._ops += 1
        if self._ops >= self._sweep_at:
            self.sweep(now)
        if len(self) >= self._max_keys:
            self._evict()

    def sweep(self, now: float) -> int:
        """Drop every entry that has expired at ``now``; returns how many."""
        self._ops = 0
        before = len(self)
        # Sweep again after as many operations as there are entries (at
        # least 1024): a full pass costs O(size), so amortised O(1) each.
        self._tats = {k: tat for k, tat in self._tats.items() if tat > now}
        self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
        live_slots: dict[str, dict[str, float]] = {}
        for key, leases in self._slots.items():
            kept = {s: e for s, e in leases.items() if e > now}
            if kept:
                live_slots[key] = kept
        self._slots = live_slots
        self._sweep_at = max(_MIN_SWEEP_INTERVAL, len(self))
        return before - len(self)

    def _evict(self) -> None:
        # Oldest-inserted first (dicts keep insertion order); rate state goes
        # before quota counts because losing it costs only one burst.
        for store in (self._tats, self._slots, self._counts):
            # Leave room for the entry the current operation may add.
            while len(self) >= self._max_keys and store:
                del store[next(iter(store))]
