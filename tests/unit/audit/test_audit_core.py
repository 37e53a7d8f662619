"""The audit log's pure parts: registry, pseudonyms, events, canonical hashing."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from keel.audit import AuditEvent, AuditEventInvalid, EventCode, KeyRing, describe, stripes
from keel.audit.chain import (
    GENESIS,
    ChainedEvent,
    DigestBody,
    UnchainedEvent,
    canonical_json,
    digest_hash,
    timestamp,
)
from keel.audit.registry import REGISTRY
from keel.audit.signing import PublicKeys, Signer
from keel.errors import ConfigurationError
from keel.settings import Settings

SECRET_A = "a" * 32
SECRET_B = "b" * 32


def test_registry_documents_at_least_fifteen_codes_with_meaning_and_fields() -> None:
    assert len(REGISTRY) >= 15
    assert set(REGISTRY) == set(EventCode)
    for item in describe():
        assert item["meaning"]
        assert isinstance(item["fields"], list)
    required = {
        "auth.succeeded", "auth.failed", "token.created", "token.revoked",
        "recognition.created", "recognition.deleted", "evidence.uploaded",
        "evidence.downloaded", "evidence.deleted", "export.requested", "export.completed",
        "export.downloaded", "ratelimit.breached", "quota.threshold_crossed",
        "idempotency.key_mismatch", "org.created", "user.role_changed", "plan.changed",
        "limit.override_set", "breaker.state_changed", "job.dead_lettered",
        "migration.applied", "migration.failed", "deployment.started",
        "deployment.state_changed", "deployment.approved",
    }  # fmt: skip
    assert required <= {code.value for code in EventCode}


def test_pseudonyms_are_keyed_tagged_and_separated_by_kind() -> None:
    ring = KeyRing.parse(f"k1:{SECRET_A}", None)
    user = ring.pseudonym("user", "0190-same")
    assert user.startswith("k1:")
    assert len(user) == 3 + 64
    assert "0190-same" not in user
    assert ring.pseudonym("token", "0190-same") != user
    other = KeyRing.parse(f"k1:{SECRET_B}", None)
    assert other.pseudonym("user", "0190-same") != user  # the key matters, not only the value


def test_rotation_uses_the_current_key_and_searches_under_every_key() -> None:
    old = KeyRing.parse(f"k1:{SECRET_A}", None)
    ring = KeyRing.parse(f"k1:{SECRET_A},k2:{SECRET_B}", "k2")
    assert ring.pseudonym("user", "u").startswith("k2:")
    assert old.pseudonym("user", "u") in ring.candidates("user", "u")
    assert len(ring.candidates("user", "u")) == 2


@pytest.mark.parametrize(
    ("spec", "current"),
    [("", None), ("nocolon", None), ("k1:x,k1:y", None), ("k1:x", "k9"), ("bad id!:x", None)],
)
def test_malformed_key_rings_are_refused(spec: str, current: str | None) -> None:
    with pytest.raises(ConfigurationError):
        KeyRing.parse(spec, current)


@pytest.mark.parametrize(
    "fields",
    [
        {"recognition_id": "someone@example.com"},
        {"recognition_id": "keel_abcdefghijklmnop"},
        {"recognition_id": "10.0.0.7"},
        {"recognition_id": "::1"},
        {"not_a_field": "x"},
    ],
)
def test_events_refuse_personal_data_and_unregistered_fields(fields: dict[str, str]) -> None:
    with pytest.raises(AuditEventInvalid):
        AuditEvent(EventCode.RECOGNITION_DELETED, org_id="o", fields=fields).check()


@given(
    value=st.one_of(
        st.ip_addresses().map(str),
        st.ip_addresses(v=6).map(lambda address: f"{address}%eth0"),
        st.from_regex(r"[0-9a-fA-F.:%]{0,45}", fullmatch=True),
        st.text(max_size=60),
    )
)
def test_a_field_is_refused_as_an_ip_address_exactly_when_it_parses_as_one(value: str) -> None:
    """The cheap check before the parse (no colon, not only digits and dots: no address)
    lets no address through and refuses nothing else."""
    assume("@" not in value and "keel_" not in value)
    try:
        ipaddress.ip_address(value)
    except ValueError:
        parses = False
    else:
        parses = True
    event = AuditEvent(EventCode.RECOGNITION_DELETED, org_id="o", fields={"recognition_id": value})
    if parses:
        with pytest.raises(AuditEventInvalid, match="IP address"):
            event.check()
    else:
        event.check()


@given(value=st.emails())
def test_a_field_holding_an_email_address_is_refused(value: str) -> None:
    event = AuditEvent(EventCode.RECOGNITION_DELETED, org_id="o", fields={"recognition_id": value})
    with pytest.raises(AuditEventInvalid, match="email"):
        event.check()


def test_events_refuse_identifiers_their_code_does_not_carry() -> None:
    with pytest.raises(AuditEventInvalid):
        AuditEvent(EventCode.BREAKER_STATE_CHANGED, actor_id="u").check()


def _event(**changes: object) -> ChainedEvent:
    base = ChainedEvent(
        id="0190a000-0000-7000-8000-000000000001",
        chain_id="k1:" + "c" * 64,
        seq=7,
        occurred_at=datetime(2026, 11, 29, 3, 0, 0, 123456, tzinfo=UTC),
        code="recognition.created",
        key_id="k1",
        actor="k1:" + "a" * 64,
        subject=None,
        token=None,
        ip=None,
        fields='{"recognition_id":"r"}',
        prev_hash=GENESIS,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_canonical_form_is_sorted_compact_json_with_utc_microseconds() -> None:
    text = _event().canonical().decode()
    assert '"occurred_at":"2026-11-29T03:00:00.123456Z"' in text
    assert ", " not in text
    assert ": " not in text
    keys = [part.split('":')[0].strip('{"') for part in text.split(',"')]
    assert keys == sorted(keys)


@given(
    field=st.sampled_from(
        [
            "id",
            "chain_id",
            "seq",
            "code",
            "key_id",
            "actor",
            "subject",
            "token",
            "ip",
            "fields",
            "prev_hash",
        ]
    ),
    salt=st.text(min_size=1, max_size=8),
)
def test_changing_any_field_changes_the_hash(field: str, salt: str) -> None:
    original = _event()
    value = getattr(original, field)
    changed = value + 1 if isinstance(value, int) else (value or "") + salt
    assert replace(original, **{field: changed}).hash() != original.hash()


_OPTIONAL = st.none() | st.text(max_size=12)


@given(
    texts=st.tuples(st.text(max_size=12), st.text(max_size=12), st.text(max_size=12)),
    optional=st.tuples(_OPTIONAL, _OPTIONAL, _OPTIONAL, _OPTIONAL),
    fields=st.dictionaries(st.text(max_size=6), st.text(max_size=6) | st.integers(), max_size=3),
    seq=st.integers(min_value=1, max_value=2**62),
    chain_id=st.text(alphabet="abcdefk0123456789:", min_size=1, max_size=20),
    prev_hash=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
)
def test_the_text_around_the_head_rebuilds_the_chained_events_canonical_bytes(
    texts: tuple[str, str, str],
    optional: tuple[str | None, str | None, str | None, str | None],
    fields: dict[str, str | int],
    seq: int,
    chain_id: str,
    prev_hash: str,
) -> None:
    # What the database's append statement hashes must be exactly what verify hashes.
    unchained = UnchainedEvent(
        id=texts[0],
        occurred_at=datetime(2026, 11, 29, 3, 0, 0, 123456, tzinfo=UTC),
        code=texts[1],
        key_id=texts[2],
        actor=optional[0],
        subject=optional[1],
        token=optional[2],
        ip=optional[3],
        fields=canonical_json(fields),
    )
    first, second, third, last = unchained.around_head()
    text = (
        first + canonical_json(chain_id) + second + canonical_json(prev_hash) + third + str(seq)
    ) + last
    chained = unchained.chained(chain_id=chain_id, seq=seq, prev_hash=prev_hash)
    assert text.encode() == chained.canonical()


@given(
    moment=st.datetimes(datetime(2, 1, 1), datetime(9998, 12, 31), timezones=st.timezones()),
)
def test_a_timestamp_is_the_utc_form_the_stored_hashes_cover(moment: datetime) -> None:
    expected = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert timestamp(moment) == expected


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(value=_JSON)
def test_canonical_json_is_the_sorted_compact_text_the_stored_hashes_cover(value: object) -> None:
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == expected


def test_a_timestamp_moved_by_one_microsecond_changes_the_hash() -> None:
    moved = _event(occurred_at=datetime(2026, 11, 29, 3, 0, 0, 123457, tzinfo=UTC))
    assert moved.hash() != _event().hash()
    with pytest.raises(ValueError, match="naive"):
        timestamp(datetime(2026, 1, 1))


def test_digest_signatures_verify_only_with_the_right_key_and_body() -> None:
    signer, stranger = Signer.generate(), Signer.generate()
    body = DigestBody(
        "c", 1, 5, GENESIS, "f" * 64, GENESIS, datetime(2026, 1, 1, tzinfo=UTC), signer.key_id
    )
    signature = signer.sign(body.canonical())
    keys = PublicKeys([signer.public_key])
    assert keys.verify(signer.key_id, signature, body.canonical())
    assert not keys.verify(signer.key_id, signature, replace(body, last_seq=6).canonical())
    assert not PublicKeys([stranger.public_key]).verify(signer.key_id, signature, body.canonical())
    assert digest_hash(body, signature.hex()) != digest_hash(body, stranger.sign(b"x").hex())


def _staging(**values: object) -> Settings:
    base: dict[str, object] = {"env": "staging", "secret_key": "x" * 40}
    return Settings.model_validate(base | values)


def test_staging_refuses_the_derived_keys_and_a_generated_signing_key() -> None:
    with pytest.raises(ConfigurationError, match="KEEL_AUDIT_KEYS"):
        _staging().check_startable()
    with pytest.raises(ConfigurationError, match="KEEL_AUDIT_SIGNING_KEY_PATH"):
        _staging(audit_keys="k1:" + "s" * 32).check_startable()
    with pytest.raises(ConfigurationError, match="at least"):
        _staging(audit_keys="k1:short", audit_signing_key_path="/k.pem").check_startable()
    _staging(audit_keys="k1:" + "s" * 32, audit_signing_key_path="/k.pem").check_startable()
    Settings.model_validate({"env": "dev"}).check_startable()


@given(number=st.integers(min_value=0, max_value=stripes.MAX_CHAINS_PER_ORG - 1))
def test_a_chain_id_names_its_organisation_and_number_and_splits_back(number: int) -> None:
    base = KeyRing.parse("k_1-x:" + "s" * 32, None).pseudonym("org", "some-org")
    chain = stripes.chain_id(base, number)
    assert stripes.split(chain) == (base, number)
    assert chain == base if number == 0 else chain.startswith(base + "/")


def test_ids_from_before_stripes_and_the_system_chain_are_chain_0() -> None:
    assert stripes.split("system") == ("system", 0)
    assert stripes.split("k1:" + "a" * 64) == ("k1:" + "a" * 64, 0)


def test_readers_look_under_every_key_for_every_chain_an_organisation_may_have() -> None:
    ring = KeyRing.parse("k1:" + "s" * 32 + ",k2:" + "t" * 32, None)
    chains = stripes.every_chain(ring, "org-1")
    assert len(chains) == 2 * stripes.MAX_CHAINS_PER_ORG
    assert {stripes.split(c)[0] for c in chains} == set(ring.candidates("org", "org-1"))


def test_the_settings_ceiling_on_chains_per_org_is_the_readers_ceiling() -> None:
    field = Settings.model_fields["audit_chains_per_org"]
    ceilings = [m.le for m in field.metadata if getattr(m, "le", None) is not None]
    assert ceilings == [stripes.MAX_CHAINS_PER_ORG]
