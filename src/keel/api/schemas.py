"""Request and response bodies of the public API: clients are written against these fields."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from keel.api.text import Line, Text


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class RecognitionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Every text field is Text or Line (keel.api.text): checked before it reaches a database.
    recipient_id: Line = Field(min_length=1, max_length=64)
    message: Text = Field(min_length=1, max_length=2000, pattern=r"\S")
    category: Line | None = Field(default=None, min_length=1, max_length=100, pattern=r"\S")
    evidence_ids: list[Annotated[Line, Field(max_length=64)]] = Field(
        default_factory=list, max_length=20
    )


class RecognitionOut(_Out):
    id: str
    org_id: str
    giver_id: str
    recipient_id: str
    message: str
    category: str | None
    evidence_ids: list[str]
    created_at: datetime


class RecognitionPage(BaseModel):
    items: list[RecognitionOut]
    next_cursor: str | None


class EvidenceOut(_Out):
    id: str
    filename: str
    content_type: str
    size: int
    sha256: str
    created_at: datetime


class ExportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["csv", "json"]


class ExportOut(_Out):
    id: str
    status: Literal["pending", "running", "succeeded", "failed"]
    format: Literal["csv", "json"]
    created_at: datetime
    finished_at: datetime | None = None
    size: int | None = None
    row_count: int | None = None
    error: str | None = None
    """Why the export's last run failed (the failure's kind, never its internals)."""


class UserOut(_Out):
    id: str
    org_id: str
    email: str
    display_name: str
    role: Literal["member", "admin"]
    created_at: datetime


class UserPage(BaseModel):
    items: list[UserOut]
    next_cursor: str | None
