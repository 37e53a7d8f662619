"""A separate OS process that appends audit events to one organisation's chain.

Run as ``python -m tests.support.audit_append_worker URL ORG COUNT KEY_PEM LABEL
[CHAINS [WRITERS]]``; used by the concurrency tests to have two real processes race
on one chain (the defaults: one chain, one writer), or on an organisation's
``CHAINS`` chains with ``WRITERS`` concurrent transactions in each process.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from keel.audit import AuditEvent, Auditor, EventCode, KeyRing, Signer
from keel.db.engine import Database

RING = KeyRing.parse("k1:" + "s" * 32, None)


async def main(
    url: str, org: str, count: int, key_path: str, label: str, chains: int, writers: int
) -> None:
    database = Database(url, pool_size=writers + 2)
    auditor = Auditor(
        database,
        RING,
        Signer.from_file(Path(key_path), create=False),
        digest_every=7,
        chains_per_org=chains,
    )

    async def write(writer: int) -> None:
        for number in range(writer, count, writers):
            event = AuditEvent(
                EventCode.LIMIT_OVERRIDE_SET,
                org_id=org,
                fields={"limit": f"{label}-{number}", "value": number, "via": "test"},
            )
            await auditor.record_now(event)

    await auditor.start()  # a started auditor opens the organisation's missing chains
    try:
        await asyncio.gather(*(write(writer) for writer in range(writers)))
        await auditor.stop()
    finally:
        await database.dispose()


if __name__ == "__main__":
    url, org, count, key_path, label = sys.argv[1:6]
    chains, writers = (int(value) for value in [*sys.argv[6:8], "1", "1"][:2])
    asyncio.run(main(url, org, int(count), key_path, label, chains, writers))
