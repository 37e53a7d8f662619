"""Text at the edge: NUL, unpaired surrogates and controls are refused; valid text round-trips."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError

from keel.api.text import Line, Text, printable, refusal


class Form(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line: Line
    text: Text


SURROGATES = st.integers(min_value=0xD800, max_value=0xDFFF).map(chr)
C0_BUT_LINE_BREAKS_AND_TAB = st.sampled_from(
    [chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"]
)
C1_AND_DEL = st.integers(min_value=0x7F, max_value=0x9F).map(chr)
# Text as a database can store it: no NUL, no surrogates, no controls at all.
CLEAN = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc"),  # surrogates and every control character
    ),
    max_size=50,
)


def spliced(base: str, bad: str, where: int) -> str:
    at = where % (len(base) + 1)
    return base[:at] + bad + base[at:]


@settings(max_examples=200)
@given(base=st.text(max_size=40), where=st.integers(min_value=0, max_value=40))
def test_any_text_with_a_nul_is_refused_as_a_line_and_as_free_text(base: str, where: int) -> None:
    value = spliced(base, "\x00", where)
    assert refusal(value, multiline=False) is not None
    assert refusal(value, multiline=True) is not None
    with pytest.raises(ValidationError) as raised:
        Form(line=value, text="ok")
    assert raised.value.errors()[0]["type"] in {"text_invalid", "string_unicode"}


@settings(max_examples=200)
@given(base=st.text(max_size=40), bad=SURROGATES, where=st.integers(min_value=0, max_value=40))
def test_any_text_with_a_lone_surrogate_is_refused(base: str, bad: str, where: int) -> None:
    value = spliced(base, bad, where)
    assert refusal(value, multiline=False) is not None
    assert refusal(value, multiline=True) is not None
    with pytest.raises(ValidationError):
        Form(line="ok", text=value)
    with pytest.raises(ValidationError):
        Form(line=value, text="ok")


@settings(max_examples=200)
@given(
    base=CLEAN,
    bad=st.one_of(C0_BUT_LINE_BREAKS_AND_TAB, C1_AND_DEL),
    where=st.integers(min_value=0, max_value=50),
)
def test_control_characters_are_refused_in_both_kinds(base: str, bad: str, where: int) -> None:
    value = spliced(base, bad, where)
    with pytest.raises(ValidationError):
        Form(line=value, text="ok")
    with pytest.raises(ValidationError):
        Form(line="ok", text=value)


@pytest.mark.parametrize("separator", ["\t", "\n", "\r", "\r\n"])
def test_free_text_keeps_tabs_and_line_breaks_that_a_line_refuses(separator: str) -> None:
    value = f"first{separator}second"
    assert Form(line="ok", text=value).text == value
    with pytest.raises(ValidationError):
        Form(line=value, text="ok")


@settings(max_examples=300)
@given(line=CLEAN, text=st.lists(CLEAN, max_size=4).map("\n\t".join))
def test_valid_text_round_trips_exactly_through_json(line: str, text: str) -> None:
    raw = json.dumps({"line": line, "text": text})
    parsed = Form.model_validate_json(raw)
    assert (parsed.line, parsed.text) == (line, text)
    assert Form.model_validate(json.loads(parsed.model_dump_json())) == parsed


def test_a_surrogate_pair_sent_as_escapes_is_one_valid_character() -> None:
    parsed = Form.model_validate(json.loads('{"line": "\\ud83d\\ude00", "text": "x"}'))
    assert parsed.line == "\U0001f600"


def test_the_refusal_names_the_character_and_never_echoes_the_text() -> None:
    reason = refusal("secret\x00", multiline=True)
    assert reason is not None
    assert "NUL" in reason
    assert "secret" not in reason
    assert "U+D800" in (refusal("a\ud800", multiline=False) or "")
    assert "U+0007" in (refusal("bell\x07", multiline=True) or "")


@given(value=st.text(max_size=40))
def test_printable_leaves_only_what_a_line_accepts(value: str) -> None:
    assert refusal(printable(value), multiline=False) is None
    assert len(printable(value)) == len(value)
