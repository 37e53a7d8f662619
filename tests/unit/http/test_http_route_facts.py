"""Each route's facts are declared once, and everything in front of the router reads them."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter

from keel.guard.shed import Priority, classify
from keel.http.facts import Keys, RouteFacts, facts_of, route
from keel.http.routes import route_table
from keel.http.routing import RouteTable
from keel.http.state import RequestState
from keel.settings import Settings

TABLE = route_table()


def concrete(template: str) -> str:
    return template.replace("{", "x").replace("}", "")


def test_the_operations_that_take_keys_come_from_the_route_facts() -> None:
    assert TABLE.keyed() == ("POST /v1/recognitions", "POST /v1/evidence", "POST /v1/exports")


def test_the_settings_default_requires_keys_where_the_facts_say_required() -> None:
    # The setting is the operator's override; its default must agree with the routes.
    assert sorted(Settings().idempotency_required_routes) == sorted(
        TABLE.keys_required_by_default()
    )


def test_the_operation_names_the_policy_targets() -> None:
    named = {r.name: r.facts.operation for r in TABLE if r.facts.operation is not None}
    assert named == {
        "POST /v1/recognitions": "recognitions.create",
        "DELETE /v1/recognitions/{recognition_id}": "recognitions.delete",
        "POST /v1/evidence": "evidence.upload",
        "GET /v1/evidence/{evidence_id}/content": "evidence.download",
        "DELETE /v1/evidence/{evidence_id}": "evidence.delete",
        "POST /v1/exports": "exports.create",
        "GET /v1/exports/{export_id}/content": "exports.download",
        "GET /v1/audit": "admin.audit",
    }


@pytest.mark.parametrize("served", list(TABLE), ids=lambda r: r.name)
def test_a_route_is_shed_as_its_path_would_be_classified(served: Any) -> None:
    """Unserved paths fall back to ``classify``; a served route's fact agrees with it."""
    path = concrete(served.template)
    assert served.facts.priority_for(served.method) is classify(served.method, path)


@pytest.mark.parametrize("served", list(TABLE), ids=lambda r: r.name)
def test_the_table_matches_every_route_to_itself(served: Any) -> None:
    assert TABLE.match(served.method, concrete(served.template)) == served


def test_unserved_paths_and_methods_match_nothing() -> None:
    assert TABLE.match("GET", "/v1/nowhere") is None
    assert TABLE.match("PUT", "/v1/recognitions") is None


def test_a_declared_route_documents_the_key_and_carries_its_facts() -> None:
    router = APIRouter()
    facts = RouteFacts("things.make", keys=Keys.OPTIONAL, priority=Priority.BULK)

    @route(router.post, "/v1/things", facts, openapi_extra={"requestBody": {"x": 1}})
    async def make() -> None:
        return None

    (declared,) = router.routes
    assert facts_of(make) is facts
    extra = declared.openapi_extra  # type: ignore[attr-defined]
    assert extra["requestBody"] == {"x": 1}
    assert [p["name"] for p in extra["parameters"]] == ["Idempotency-Key"]
    table = RouteTable([router])
    matched = table.match("POST", "/v1/things")
    assert matched is not None
    assert matched.facts is facts
    assert table.keyed() == ("POST /v1/things",)


def test_the_route_is_looked_up_once_per_request() -> None:
    calls: list[str] = []

    class Counting(RouteTable):
        def match(self, method: str, path: str) -> Any:
            calls.append(path)
            return super().match(method, path)

    table = Counting([])
    state = RequestState()
    scope = {"method": "GET", "path": "/v1/nowhere"}
    assert state.matched(table, scope) is None
    assert state.matched(table, scope) is None
    assert calls == ["/v1/nowhere"]
