"""Content-Disposition for client filenames: RFC 6266, RFC 8187 ``filename*``, always sendable."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.api.disposition import attachment
from keel.api.text import printable
from keel.http.response_headers import unsendable_header

# RFC 8187 ext-value with the UTF-8 charset and no language.
EXT_VALUE = re.compile(r"^UTF-8''(?:[A-Za-z0-9!#$&+\-.^_`|~]|%[0-9A-F]{2})*$")


def parameters(value: str) -> dict[str, str]:
    match = re.fullmatch(r'attachment; filename="([^"\\]*)"(?:; filename\*=(\S+))?', value)
    assert match is not None, value
    found = {"filename": match.group(1)}
    if match.group(2) is not None:
        found["filename*"] = match.group(2)
    return found


def test_a_plain_ascii_name_is_just_quoted() -> None:
    assert attachment("report-2026.pdf") == 'attachment; filename="report-2026.pdf"'


@pytest.mark.parametrize(
    ("name", "fallback", "extended"),
    [
        ("résumé.pdf", "r_sum_.pdf", "UTF-8''r%C3%A9sum%C3%A9.pdf"),
        ('say "hi".txt', "say _hi_.txt", "UTF-8''say%20%22hi%22.txt"),
        ("back\\slash.txt", "back_slash.txt", "UTF-8''back%5Cslash.txt"),
        ("100%.txt", "100_.txt", "UTF-8''100%25.txt"),
        ("日本.png", "__.png", "UTF-8''%E6%97%A5%E6%9C%AC.png"),
        ("a\x00b\r\nc.txt", "a_b__c.txt", None),
        ("lone\ud800.txt", "lone_.txt", None),
        ("", "download", None),
    ],
)
def test_special_names_get_a_safe_fallback_and_the_exact_name_in_filename_star(
    name: str, fallback: str, extended: str | None
) -> None:
    found = parameters(attachment(name))
    assert found["filename"] == fallback
    assert found.get("filename*") == extended


@settings(max_examples=500)
@given(name=st.text(max_size=60))
def test_any_name_gives_a_header_the_server_can_send(name: str) -> None:
    value = attachment(name)
    assert unsendable_header([(b"content-disposition", value.encode("latin-1"))]) is None
    assert value.isascii()
    found = parameters(value)
    if "filename*" in found:
        assert EXT_VALUE.match(found["filename*"])
        # The extended form carries the name exactly (controls made visible).
        assert unquote(found["filename*"].removeprefix("UTF-8''")) == printable(name)
    else:
        assert found["filename"] == (printable(name) or "download")
