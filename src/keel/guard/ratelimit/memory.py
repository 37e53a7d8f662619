"""The in-process limiter backend: exact for one process, bounded in memory.

Each entry carries the instant after which it means nothing (a GCRA key whose
TAT has passed is the same as a fresh one; a quota counter outlives its window
by nothing; a slot set lives as long as its longest lease). Expired entries are
swept in one pass every ``max(1024, size)`` operations, which keeps the cost
amortised O(1) per decision and the memory proportional to the keys active
recently. A hard ``max_keys`` cap evicts the oldest entries past that — it
trades exactness for a bound (an evicted GCRA key gets its burst back), which
only matters under a flood of distinct keys.

Being synchronous under the hood, every operation is atomic on the event loop
— :meth:`MemoryBackend.admit` included, which is what makes a request's whole
set of limits all or nothing here without any locking, and its quota
reservations exact: no ``await`` falls between reading a count and writing it,
so concurrent requests of one process can never pass a quota together.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence

from keel.guard.ratelimit.backend import Admission, SlotDecision
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
        # Slot ids: a random prefix and a counter, unique without a uuid4 per slot.
        self._slot_prefix = uuid.uuid4().hex[:12] + "-"
        self._slot_ids = itertools.count(1)

    def __len__(self) -> int:
        """Entries held, expired or not (until the next sweep)."""
        return len(self._tats) + len(self._counts) + len(self._slots)

    # --- one request, every limit ---------------------------------------------

    async def admit(
        self,
        rates: Sequence[tuple[str, Rate]],
        quotas: Sequence[tuple[str, int, QuotaWindow]],
        slots: Sequence[tuple[str, int, float]],
        now: float,
        n: int = 1,
    ) -> Admission:
        # Read everything, decide, and only then write, so a refusal by any check
        # leaves every other one untouched. The arithmetic is gcra() and
        # quota_decision() themselves; tests/unit/guard/test_memory_admit.py holds
        # admit to them over random requests and clocks.
        if n < 0:
            raise ValueError("n must not be negative")
        self._ops += 1
        if self._ops >= self._sweep_at:
            self.sweep(now)
        tats = self._tats
        allowed = True
        readings = []
        for key, rate in rates:
            reading = gcra(tats.get(key), now, rate, n)
            allowed = allowed and reading.allowed
            readings.append(reading)
        peeks = []
        # (counter key, count with this reservation, window end) per quota that fits.
        reserved: list[tuple[str, int, float]] = []
        for key, limit, window in quotas:
            bounds, suffix = window.span(now)
            ckey = key + suffix  # counter_key(key, bounds), its suffix memoised per window
            used = self._count(ckey, now)
            if used + n <= limit:
                # Read as reserved; _refusal takes the n back off if anything refuses.
                peeks.append(counted(used + n, limit, now, bounds))
                reserved.append((ckey, used + n, bounds[1]))
            else:
                peeks.append(quota_decision(used, limit, n, now, bounds))
                allowed = False
        leases = [self._live_leases(claim[0], now) for claim in slots]
        if allowed and slots:
            allowed = all(len(held) < claim[1] for claim, held in zip(slots, leases, strict=True))
        if not allowed:
            return self._refusal(rates, readings, tuple(peeks), slots, leases, now, n)
        if n > 0:
            if len(tats) + len(rates) >= self._max_keys:
                self._evict(room=len(rates))
            for (key, _), reading in zip(rates, readings, strict=True):
                tats[key] = reading.tat
            if reserved:
                self._reserve(reserved)
        taken = tuple(
            self._take(claim, held, now) for claim, held in zip(slots, leases, strict=True)
        )
        return Admission(True, tuple(readings), tuple(peeks), taken)

    def _reserve(self, reserved: list[tuple[str, int, float]]) -> None:
        """Write the admitted quota counts: the reservation, in the same atomic step."""
        counts = self._counts
        if len(self) + len(reserved) >= self._max_keys:
            self._evict(room=len(reserved))
        for ckey, used, end in reserved:
            counts[ckey] = (used, end)

    def _refusal(
        self,
        rates: Sequence[tuple[str, Rate]],
        readings: list[GcraDecision],
        peeks: tuple[QuotaDecision, ...],
        slots: Sequence[tuple[str, int, float]],
        leases: list[dict[str, float]],
        now: float,
        n: int,
    ) -> Admission:
        tats = self._tats
        unspent = []
        for (key, rate), reading in zip(rates, readings, strict=True):
            tat = tats.get(key)
            # One that would have passed spent nothing: report the peek.
            decision = gcra(tat, now, rate, 0) if reading.allowed else reading
            if tat is not None and decision.tat < tat:
                tats[key] = decision.tat  # the backwards-clock clamp, as gcra() does
            unspent.append(decision)
        refused = tuple(
            SlotDecision(
                False,
                None,
                len(held),
                limit,
                max(0.0, min(held.values()) - now) if len(held) >= limit else 0.0,
            )
            for (_, limit, _), held in zip(slots, leases, strict=True)
        )
        # A quota that would have fitted reads as reserved (see admit): nothing
        # was, so its reading goes back to the count as it stands.
        unreserved = tuple(q._replace(used=q.used - n) if q.allowed else q for q in peeks)
        return Admission(False, tuple(unspent), unreserved, refused)

    def _live_leases(self, key: str, now: float) -> dict[str, float]:
        leases = self._slots.get(key)
        if leases is None:
            return {}
        for slot_id, expiry in list(leases.items()):
            if expiry <= now:
                del leases[slot_id]
        return leases

    def _take(
        self, claim: tuple[str, int, float], held: dict[str, float], now: float
    ) -> SlotDecision:
        key, limit, lease = claim
        if not held:
            if len(self) >= self._max_keys:
                self._evict()
            held = self._slots.setdefault(key, held)
        slot_id = f"{self._slot_prefix}{next(self._slot_ids)}"
        held[slot_id] = now + lease
        return SlotDecision(True, slot_id, len(held), limit, 0.0)

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
        slot_id = f"{self._slot_prefix}{next(self._slot_ids)}"
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

    def _evict(self, room: int = 1) -> None:
        # Oldest-inserted first (dicts keep insertion order); rate state goes
        # before quota counts because losing it costs only one burst.
        for store in (self._tats, self._slots, self._counts):
            # Leave room for the entries the current operation may add.
            while len(self) + room > self._max_keys and store:
                del store[next(iter(store))]
