"""Storage quota: bytes of evidence an organisation may hold, by plan.

An upload that would pass the quota is refused *before* its bytes are kept:
the streaming writer is given the remaining room as its ceiling (so it stops
and discards the moment it would overflow), and the total is checked again
inside the transaction that records the file, which closes the race between
two uploads that each fit alone. The refusal is a 413 whose type,
``storage-quota-exceeded``, tells it apart from the per-file size limit.
"""

from __future__ import annotations

from collections.abc import Mapping

from keel.domain.principal import Principal
from keel.errors import PayloadTooLarge
from keel.guard.overrides import OverrideCache


class StorageQuotaExceeded(PayloadTooLarge):
    slug = "storage-quota-exceeded"
    title = "Storage quota exceeded"


class StorageQuota:
    def __init__(self, by_plan: Mapping[str, int], overrides: OverrideCache | None = None) -> None:
        self._by_plan = dict(by_plan)
        self._overrides = overrides

    def limit_for(self, principal: Principal) -> int | None:
        """The org's quota in bytes; ``None`` when it has no limit (an override of 0)."""
        if self._overrides is not None:
            override = self._overrides.storage_override(principal.org_id)
            if override is not None:
                return None if override == 0 else override
        return self._by_plan.get(principal.plan.value)

    @staticmethod
    def refuse(quota: int, used: int) -> StorageQuotaExceeded:
        return StorageQuotaExceeded(
            f"this upload would take the organisation past its storage quota of {quota} bytes "
            f"({used} used)",
            quota=quota,
            used=used,
        )
