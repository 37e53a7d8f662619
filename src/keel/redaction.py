"""Redaction: secrets never leave the process in a log line, a span or an error body.

The first defence is not to hand secrets to a logger at all (tracebacks are
logged without frame locals, URLs with their password masked). This is the last
one: every string bound for a log line, a span attribute or a problem body
passes through :meth:`Redactor.text`, which replaces

- credentials after an HTTP authentication scheme (``Bearer …``, ``Basic …``);
- Keel API tokens wherever they appear (``keel_`` and 32+ random characters);
- the password part of a URL (``scheme://user:***@host``);
- ``password=…``/``token=…`` pairs, and the values after ``authorization``,
  ``cookie`` or ``password`` keys in a dict or header list's text;
- the literal values of the service's own secrets (``KEEL_SECRET_KEY``, audit
  and fingerprint keys, passwords of the configured URLs), however they got
  into the text.

A field whose *name* says it holds a secret (``authorization``, ``cookie``,
``password``, ``*_token``, …) is replaced whole (:func:`is_sensitive_key`).
The rules are patterns over text, not a promise about every encoding a secret
could take: they catch the forms Keel and its libraries actually write.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from keel.settings import Settings

REDACTED = "[REDACTED]"
MIN_SECRET_CHARS = 6
"""Shorter configured values are not searched for: they would blank ordinary words."""

_SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "x_api_key",
        "api_key",
        "apikey",
        "password",
        "passwd",
        "secret",
        "secret_key",
        "client_secret",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "audit_keys",
        "fingerprint_key",
    }
)
_SENSITIVE_SUFFIXES = ("_password", "_secret", "_token", "_api_key", "_secret_key")

# Each rule runs only when one of its trigger substrings is in the text: a substring
# test is far cheaper than a regular expression, and most text (paths, ids, event
# names) triggers none. Each pattern's group 1 is what stays visible.
_Rule = tuple[tuple[str, ...], "re.Pattern[str]", str]
_RULES: tuple[_Rule, ...] = (
    # Credentials after an authentication scheme, in a header's text or in prose.
    (
        ("earer", "EARER", "asic", "ASIC"),
        re.compile(r"(\b(?:[Bb]earer|BEARER|[Bb]asic|BASIC)[ \t]+)[A-Za-z0-9._~+/=\-]{8,}"),
        r"\g<1>" + REDACTED,
    ),
    # Keel API tokens: the public prefix, then random URL-safe characters (at least
    # one upper-case letter or digit, which metric names such as keel_http_… lack).
    (
        ("keel_",),
        re.compile(r"(\bkeel_)(?=[A-Za-z0-9_\-]*[A-Z0-9])[A-Za-z0-9_\-]{32,}"),
        r"\g<1>" + REDACTED,
    ),
    # scheme://user:password@host — keep the user and the host, mask the password.
    (
        ("://",),
        re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/:@'\"]*:)[^\s/@'\"]+(?=@)"),
        r"\g<1>***",
    ),
    # password=…, token=… in query strings, DSNs and key=value text.
    (
        ("=",),
        re.compile(
            r"(?i)(\b(?:password|passwd|pwd|secret|secret_key|token|access_token|api_key)=)"
            r"(?!SecretStr\()[^\s&;,'\"]+"  # pydantic already masks a SecretStr
        ),
        r"\g<1>" + REDACTED,
    ),
    # The value after a sensitive key in a dict's or a header list's repr:
    # {'cookie': 'a=b'}, (b'authorization', b'…'), "password": "…".
    (
        ("uthoriz", "UTHORIZ", "ookie", "OOKIE", "assw", "ASSW", "ecret", "ECRET", "pi-key"),
        re.compile(
            r"(?i)(\b(?:authorization|proxy-authorization|cookie|set-cookie|x-api-key"
            r"|password|passwd|secret_key|client_secret)['\"]?\s*[:=,]\s*b?['\"])[^'\"]+"
        ),
        r"\g<1>" + REDACTED,
    ),
)


def is_sensitive_key(key: str) -> bool:
    """Whether a field named ``key`` holds a secret by its name alone."""
    name = key.lower().replace("-", "_")
    return name in _SENSITIVE_KEYS or name.endswith(_SENSITIVE_SUFFIXES)


def url_password(url: str | None) -> str | None:
    """The password in ``url``'s userinfo, if there is one."""
    if not url or "@" not in url:
        return None
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (as SQLAlchemy's ``hide_password``)."""
    return Redactor().text(url)


class Redactor:
    """Replaces secrets in text; built once per configuration, then shared (immutable)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        known = sorted(
            {s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=lambda s: (-len(s), s)
        )
        self.secrets = tuple(known)
        self._literal = re.compile("|".join(re.escape(s) for s in known)) if known else None
        triggers = {trigger for rule in _RULES for trigger in rule[0]} | set(known)
        self._any_trigger = re.compile("|".join(re.escape(t) for t in sorted(triggers)))

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        """A redactor that also knows the literal secrets ``settings`` holds."""
        found: list[str] = [settings.secret_key.get_secret_value()]
        if settings.fingerprint_key is not None:
            found.append(settings.fingerprint_key.get_secret_value())
        if settings.audit_keys is not None:
            ring = settings.audit_keys.get_secret_value()
            found.append(ring)
            for entry in ring.split(","):
                _, _, secret = entry.partition(":")
                found.append(secret.strip())
        for url in (
            settings.database_url,
            settings.redis_url,
            settings.breaker_store_url,
            settings.otel_endpoint,
        ):
            password = url_password(url)
            if password:
                found.extend({password, unquote(password)})
        return cls(found)

    def suspects(self, value: str) -> bool:
        """Whether any rule could match in ``value`` (False: :meth:`text` returns it as is)."""
        return len(value) >= MIN_SECRET_CHARS and self._any_trigger.search(value) is not None

    def text(self, value: str) -> str:
        """``value`` with every secret it contains replaced."""
        if not self.suspects(value):
            return value  # the common case: nothing any rule could match
        if self._literal is not None and any(secret in value for secret in self.secrets):
            value = self._literal.sub(REDACTED, value)
        for triggers, pattern, replacement in _RULES:
            if any(trigger in value for trigger in triggers):
                value = pattern.sub(replacement, value)
        return value

    def value(self, key: str, value: str) -> str:
        """A field's text: replaced whole when its name says it is secret."""
        if is_sensitive_key(key):
            return REDACTED
        return self.text(value)
