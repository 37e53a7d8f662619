"""A separate OS process that appends audit events to one organisation's chain.

Run as ``python -m tests.support.audit_append_worker URL ORG COUNT KEY_PEM LABEL``;
used by the concurrency test to have two real processes race on one chain.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from keel.audit import AuditEvent, Auditor, EventCode, KeyRing, Signer
from keel.db.engine import Database

RING = KeyRing.parse("k1:" + "s" * 32, None)


async def main(url: str, org: str, count: int, key_path: str, label: str) -> None:
    database = Database(url, pool_size=2)
    auditor = Auditor(
        database, RING, Signer.from_file(Path(key_path), create=False), digest_every=7
    )
    try:
        for number in range(count):
            event = AuditEvent(
                EventCode.LIMIT_OVERRIDE_SET,
                org_id=org,
                fields={"limit": f"{label}-{number}", "value": number, "via": "test"},
            )
            await auditor.record_now(event)
    finally:
        await database.dispose()


if __name__ == "__main__":
    url, org, count, key_path, label = sys.argv[1:6]
    asyncio.run(main(url, org, int(count), key_path, label))
