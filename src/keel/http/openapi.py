"""The OpenAPI document, finished with what only the running configuration knows.

FastAPI writes the document from the routes (their facts add the
``Idempotency-Key`` parameter, :mod:`keel.http.facts`); this adds what
settings decide and what the layers in front of the routes answer.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from keel.http import problems
from keel.observe.health import HealthRegistry
from keel.settings import Settings


def finish(app: FastAPI, settings: Settings, health: HealthRegistry) -> None:
    """Finish the OpenAPI document with what only the running configuration knows.

    Which file types this deployment accepts is a setting, and so is which
    operations require an ``Idempotency-Key`` (those say ``required: true``); and
    every ``/v1`` operation can be refused by the layers in front of the routes —
    401 by authentication, 429 by limits, 503 by load shedding or a dependency —
    so each documents those problems too.
    """
    allowed = settings.allowed_content_types
    required = set(settings.idempotency_required_routes) if settings.idempotency_enabled else set()
    generate = app.openapi
    everywhere = problems.problem_responses(401, 429, 503)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            upload = schema["paths"]["/v1/evidence"]["post"]["requestBody"]["content"]
            upload["multipart/form-data"]["encoding"] = {
                "file": {"contentType": ", ".join(allowed)}
            }
            reference = {"$ref": "#/components/schemas/Problem"}
            problem = {problems.MEDIA_TYPE: {"schema": reference}}
            for path, operations in schema["paths"].items():
                for operation in operations.values():
                    # FastAPI documents its own 422 body; Keel answers problem+json.
                    invalid = operation.get("responses", {}).get("422")
                    if invalid is not None and "application/json" in invalid.get("content", {}):
                        invalid["content"] = problem
                if not path.startswith("/v1/"):
                    continue
                for method, operation in operations.items():
                    if "parameters" in operation:
                        operation["parameters"] = [
                            {**parameter, "required": f"{method.upper()} {path}" in required}
                            if parameter.get("name") == "Idempotency-Key"
                            else parameter
                            for parameter in operation["parameters"]
                        ]
                    responses = operation.setdefault("responses", {})
                    for status, documented in everywhere.items():
                        responses.setdefault(
                            str(status),
                            {
                                "description": documented["description"],
                                "content": problem,
                            },
                        )
            _document_readiness_checks(schema, health)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_readiness_checks(schema: dict[str, Any], health: HealthRegistry) -> None:
    """``/ready?exclude=`` takes the names of the registered checks (others are a 422)."""
    names = sorted(check.name for check in health.checks)
    for parameter in schema["paths"]["/ready"]["get"].get("parameters", []):
        if parameter["name"] != "exclude":
            continue
        for option in parameter["schema"].get("anyOf", []):
            if option.get("type") == "array":
                option["items"] = {"type": "string", "enum": names}
