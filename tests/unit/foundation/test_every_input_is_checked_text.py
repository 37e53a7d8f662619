"""Every string a route takes — path, query, body — refuses a NUL, a surrogate and controls.

Walks the app's own routes, so a new parameter or body field that is a plain
``str`` (not :data:`~keel.api.text.Line` or :data:`~keel.api.text.Text`) fails
here, before it can reach a database that cannot store it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from keel.http.routes import ROUTERS

BAD = ["\x00", "a\x00b", "\ud800", "bell\x07", "a\x9bb", "a\x7fb"]
# The smallest valid body of each model, so only the field under test is wrong.
VALID_BODIES: dict[str, dict[str, Any]] = {
    "RecognitionCreate": {"recipient_id": "u", "message": "m"},
    "ExportCreate": {"format": "csv"},
}


@pytest.fixture(scope="module")
def routes() -> list[APIRoute]:
    """The API's routes, from the routers the app is composed of."""
    return [route for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)]


def _accepts(field: Any, value: object) -> bool:
    return not field.validate(value, {}, loc=("x",))[1]


def text_parameters(routes: list[APIRoute]) -> Iterator[tuple[str, Any, bool]]:
    """(label, field, takes a list) for every path and query parameter that takes text."""
    for route in routes:
        dependants = [route.dependant, *route.dependant.dependencies]
        for dependant in dependants:
            for field in [*dependant.path_params, *dependant.query_params]:
                label = f"{sorted(route.methods or ())} {route.path} {field.name}"
                if _accepts(field, "plain text"):
                    yield label, field, False
                elif _accepts(field, ["plain text"]):
                    yield label, field, True


def test_every_text_parameter_refuses_what_no_database_stores(routes: list[APIRoute]) -> None:
    found = list(text_parameters(routes))
    assert len(found) >= 10  # ids, filters and cursors of /v1 were found
    accepted = [
        f"{label}={value!r}"
        for label, field, listed in found
        for value in BAD
        if _accepts(field, [value] if listed else value)
    ]
    assert not accepted, accepted


def body_models(routes: list[APIRoute]) -> set[type[BaseModel]]:
    models = set()
    for route in routes:
        for field in route.dependant.body_params:
            annotation = field.field_info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                models.add(annotation)
    return models


def _valid(model: type[BaseModel], data: dict[str, Any]) -> bool:
    try:
        model.model_validate(data)
    except ValidationError:
        return False
    return True


def test_every_text_body_field_refuses_what_no_database_stores(routes: list[APIRoute]) -> None:
    models = body_models(routes)
    assert {model.__name__ for model in models} == set(VALID_BODIES)  # a new body: add it
    accepted, checked = [], 0
    for model in models:
        base = VALID_BODIES[model.__name__]
        assert _valid(model, base)
        for name in model.model_fields:
            for shape in (lambda v: v, lambda v: [v]):
                if not _valid(model, {**base, name: shape("plain text")}):
                    continue
                checked += 1
                accepted += [
                    f"{model.__name__}.{name}={shape(value)!r}"
                    for value in BAD
                    if _valid(model, {**base, name: shape(value)})
                ]
    assert checked >= 4  # recipient_id, message, category, evidence_ids
    assert not accepted, accepted
