"""The redactor: every form of secret Keel and its libraries write is replaced, and nothing else."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from keel.redaction import REDACTED, Redactor, is_sensitive_key, mask_url
from keel.settings import Settings

TOKEN = "keel_" + "Ab3" + "x" * 40
PASSWORD = "s3cr3t-pw"
SECRET_KEY = "a-secret-key-that-is-long-enough-0123456789"
AUDIT_SECRET = "audit-secret-0123456789abcdef0123"
FINGERPRINT = "fingerprint-secret-0123456789abcd"

SETTINGS = Settings(
    secret_key=SecretStr(SECRET_KEY),
    audit_keys=SecretStr(f"k1:{AUDIT_SECRET}"),
    fingerprint_key=SecretStr(FINGERPRINT),
    database_url=f"postgresql+asyncpg://root:{PASSWORD}@127.0.0.1:5432/keel",
    redis_url="redis://:r3dis-pass@127.0.0.1:6379/0",
)
REDACTOR = Redactor.from_settings(SETTINGS)
URLSAFE = string.ascii_letters + string.digits + "-_"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"Authorization: Bearer {TOKEN}", TOKEN),
        ("authorization: bearer opaque.jwt-like.value_123", "opaque.jwt-like.value_123"),
        ("Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        (f"[(b'host', b'keel'), (b'authorization', b'Bearer {TOKEN}')]", TOKEN),
        ("[(b'cookie', b'session=abcdef0123')]", "abcdef0123"),
        ("{'Cookie': 'session=abcdef0123'}", "abcdef0123"),
        ('{"password": "hunter2hunter2"}', "hunter2hunter2"),
        (f"token {TOKEN} seen in prose", TOKEN),
        (f"postgresql+asyncpg://root:{PASSWORD}@127.0.0.1/keel", PASSWORD),
        ("redis://:other-password@cache:6379/0", "other-password"),
        ("host=db user=keel password=hunter2hunter2 dbname=keel", "hunter2hunter2"),
        ("/callback?access_token=abcdef0123&x=1", "abcdef0123"),
        (f"the service secret {SECRET_KEY} leaked", SECRET_KEY),
        (f"keys k1:{AUDIT_SECRET}", AUDIT_SECRET),
        (f"fingerprint {FINGERPRINT}", FINGERPRINT),
        (f"a bare configured password {PASSWORD} in text", PASSWORD),
        ("the redis one r3dis-pass too", "r3dis-pass"),
    ],
)
def test_every_form_of_secret_is_replaced(text: str, secret: str) -> None:
    redacted = REDACTOR.text(text)
    assert secret not in redacted
    assert REDACTED in redacted or "***" in redacted


@pytest.mark.parametrize(
    "text",
    [
        "http_request",
        "/v1/recognitions/01J8ZQ3V6N5W7Y2C4B0A9D8E7F",
        "keel_http_server_request_duration_seconds_bucket",
        "this endpoint needs 'Authorization: Bearer <token>'",
        "GET /v1/recognitions/{recognition_id}",
        "postgresql+asyncpg://postgres@127.0.0.1:5432/keel",
        "the token is invalid or revoked",
    ],
)
def test_ordinary_text_is_left_exactly_as_it_was(text: str) -> None:
    assert REDACTOR.text(text) == text


def test_a_url_keeps_its_user_and_host_and_loses_only_its_password() -> None:
    assert mask_url(f"postgresql+asyncpg://root:{PASSWORD}@db:5432/keel") == (
        "postgresql+asyncpg://root:***@db:5432/keel"
    )
    assert mask_url("sqlite+aiosqlite:///./keel.db") == "sqlite+aiosqlite:///./keel.db"


@pytest.mark.parametrize(
    "key",
    ["authorization", "Authorization", "cookie", "set-cookie", "password", "api_token",
     "secret_key", "db_password", "audit_keys", "x-api-key"],
)  # fmt: skip
def test_fields_named_as_secrets_are_sensitive(key: str) -> None:
    assert is_sensitive_key(key)


@pytest.mark.parametrize(
    "key", ["event", "path", "token_id", "route", "user", "request_id", "trace_id"]
)
def test_ordinary_field_names_are_not_sensitive(key: str) -> None:
    assert not is_sensitive_key(key)


@given(
    before=st.text(max_size=40),
    after=st.text(max_size=40),
    token=st.text(alphabet=URLSAFE, min_size=43, max_size=43)
    .filter(lambda t: any(c.isupper() or c.isdigit() for c in t))
    .map(lambda t: "keel_" + t),
)
def test_an_issued_token_never_survives_whatever_surrounds_it(
    before: str, after: str, token: str
) -> None:
    """Tokens are "keel_" and secrets.token_urlsafe(32), as keel.domain.tokens issues them."""
    for text in (f"{before} {token} {after}", f"{before}Bearer {token}{after}"):
        assert token not in REDACTOR.text(text)


@given(st.text(alphabet=st.characters(blacklist_characters="=:@"), max_size=80))
def test_text_without_any_trigger_is_returned_unchanged(text: str) -> None:
    plain = Redactor()
    if not plain.suspects(text):
        assert plain.text(text) is text
