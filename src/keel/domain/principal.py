"""Who is calling: the user, their organisation and role, and the token used."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    MEMBER = "member"
    ADMIN = "admin"


class Plan(StrEnum):
    FREE = "free"
    TEAM = "team"
    ENTERPRISE = "enterprise"


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    org_id: str
    role: Role
    token_id: str
    plan: Plan
    org_timezone: str = "UTC"

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN
