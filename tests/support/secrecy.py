"""Log secrecy: the error paths a client can reach, and a search for the secrets they carry.

Shared by the in-process test (which can also provoke an unhandled exception and
read the spans) and the one against a real ``keel serve``. Every request carries
a credential: a live token, a guessed one, the service secret where a client
would never put it; afterwards the logs, spans and bodies are searched for all
of them.
"""

from __future__ import annotations

import gzip
import http.server
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx

from tests.support.app import World

GUESSED_TOKEN = "keel_Gu3ssedTokenThatDoesNotExist0123456789abcd"
PASSWORD = "s3cr3t-pw"  # in the database URL's userinfo (PostgreSQL's trust auth ignores it)
AUDIT_SECRET = "audit-secret-for-secrecy-tests-0123456789"
AUDIT_KEYS = f"k1:{AUDIT_SECRET}"


def with_password(database_url: str) -> str:
    """A PostgreSQL URL whose userinfo carries :data:`PASSWORD`; SQLite's as it is."""
    if "@" not in database_url:
        return database_url
    scheme, rest = database_url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user.split(':')[0]}:{PASSWORD}@{host}"


@dataclass
class Outcome:
    """What the client saw: every response's status and body."""

    statuses: list[int] = field(default_factory=list)
    bodies: list[str] = field(default_factory=list)

    def note(self, response: httpx.Response) -> httpx.Response:
        self.statuses.append(response.status_code)
        self.bodies.append(response.text + "\n" + repr(dict(response.headers)))
        return response


async def drive_error_paths(client: httpx.AsyncClient, world: World) -> Outcome:
    """401, 403, 404, 405, 409, 413, 415, 422 (and 429 if the policy is tight), then probes.

    The probes and ``/metrics`` come last, so that their bodies hold whatever the
    errors before them left in metric labels and health outputs.
    """
    seen = Outcome()
    alice, bob = world.alice.headers, world.bob.headers
    bearer_of = {"Authorization": f"Bearer {GUESSED_TOKEN}"}
    # 401: a guessed token, a malformed header, a token in the wrong scheme, no token.
    seen.note(await client.get("/v1/users/me", headers=bearer_of))
    seen.note(await client.get("/v1/users/me", headers={"Authorization": world.alice.token}))
    seen.note(
        await client.get("/v1/users/me", headers={"Authorization": f"Basic {world.bob.token}"})
    )
    seen.note(await client.get(f"/v1/users/me?token={world.alice.token}"))
    # 404: unknown paths and ids, the token in the path and the query.
    seen.note(await client.get(f"/v1/recognitions/{world.alice.token}", headers=alice))
    seen.note(await client.get(f"/v1/nowhere/{world.bob.token}?access_token={world.bob.token}"))
    # 405
    seen.note(await client.put("/v1/recognitions", headers=alice))
    # 422: wrong types and values, the token as a field's value, malformed JSON.
    seen.note(
        await client.post(
            "/v1/recognitions",
            json={"recipient_id": world.alice.token, "message": 5, "category": ["x"]},
            headers=alice,
        )
    )
    seen.note(
        await client.post(
            "/v1/recognitions",
            content=f'{{"message": "{world.alice.token}"',
            headers={**alice, "Content-Type": "application/json"},
        )
    )
    seen.note(await client.get(f"/v1/recognitions?cursor={world.alice.token}", headers=alice))
    # 403: deleting someone else's recognition; the audit log as a member.
    given = seen.note(
        await client.post(
            "/v1/recognitions", json={"recipient_id": world.alice.id, "message": "hi"}, headers=bob
        )
    )
    if given.status_code == 201:
        seen.note(await client.delete(f"/v1/recognitions/{given.json()['id']}", headers=alice))
    seen.note(await client.get("/v1/audit", headers=alice))
    # 409: an export's content before it has succeeded.
    export = seen.note(await client.post("/v1/exports", json={"format": "csv"}, headers=alice))
    if export.status_code == 202:
        seen.note(await client.get(f"/v1/exports/{export.json()['id']}/content", headers=alice))
    # 413 and 415: an upload over the limit, a type outside the allow-list, not multipart.
    big = {"file": ("big.bin", b"\0" * 4096, "application/octet-stream")}
    seen.note(await client.post("/v1/evidence", files=big, headers=alice))
    exe = {"file": ("tool.exe", b"MZ", "application/x-msdownload")}
    seen.note(await client.post("/v1/evidence", files=exe, headers=alice))
    seen.note(
        await client.post(
            "/v1/evidence",
            content=world.alice.token,
            headers={**alice, "Content-Type": "text/plain"},
        )
    )
    # 429: the tight rule on /v1/users/me when the policy has one (the e2e server's does).
    for _ in range(3):
        seen.note(await client.get("/v1/users/me", headers=bob))
    # What operators read: metric labels, health outputs, the version document.
    for path in ("/metrics", "/ready", "/health?verbose", "/version"):
        seen.note(await client.get(path))
    return seen


def secrets_of(world: World, *extra: str) -> list[str]:
    return [
        world.admin.token,
        world.alice.token,
        world.bob.token,
        world.mallory.token,
        GUESSED_TOKEN,
        PASSWORD,
        AUDIT_SECRET,
        *extra,
    ]


def leaks(texts: Iterable[str], secrets: Iterable[str]) -> list[str]:
    """Each (secret, where) found: the empty list is the only passing answer."""
    found = []
    every = list(secrets)
    for index, text in enumerate(texts):
        for secret in every:
            if secret in text:
                at = text.index(secret)
                found.append(f"{secret[:12]}… in text {index}: …{text[max(0, at - 80) : at]}")
    return found


class SpanCollector:
    """An OTLP/HTTP endpoint on 127.0.0.1 that keeps every export's raw bytes.

    Strings travel as plain UTF-8 inside OTLP's protobuf, so searching the bytes
    for a secret finds it wherever the exporter put it.
    """

    def __init__(self) -> None:
        received: list[bytes] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                received.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                """Quiet: the test reads what was received, not an access log."""

        self.received = received
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"

    def __enter__(self) -> SpanCollector:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def text(self) -> str:
        return b"\n".join(self.received).decode("utf-8", errors="replace")
