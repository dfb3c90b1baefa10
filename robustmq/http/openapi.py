"""The OpenAPI 3.1 document of the HTTP listener, built from the route table, and the API
reference of docs/operations.md built from that document.

``python -m robustmq.http.openapi`` prints the document as JSON; with ``--markdown`` it
prints the API reference section of docs/operations.md (a test checks the page is
current). The routes themselves are in ``http/routes.py``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from robustmq import __version__
from robustmq.http.api.common import Route, obj

_ERROR = obj(
    {
        "error": obj(
            {"code": {"type": "string"}, "message": {"type": "string"}}, ["code", "message"]
        )
    },
    ["error"],
)
_REASONS = {
    200: "OK",
    201: "Created",
    204: "No content",
    400: "Bad input; the message names the field",
    401: "Missing or wrong admin token",
    404: "Unknown resource",
    409: "Conflict with the current state",
    503: "Not ready",
}


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": route.summary,
        "tags": [route.tag],
        "operationId": f"{route.method.lower()}_{route.path.strip('/').replace('/', '_')}".replace(
            "{", ""
        )
        .replace("}", "")
        .replace(".", "_"),
    }
    if route.params:
        op["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required or p.where == "path",
                "description": p.description,
                "schema": p.schema,
            }
            for p in route.params
        ]
    if route.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": route.body}},
        }
    ok: dict[str, Any] = {"description": _REASONS[route.status]}
    if route.status != 204:
        ok["content"] = {route.content_type: {"schema": route.response}}
    responses: dict[str, Any] = {str(route.status): ok}
    for status in (*route.errors, *(() if route.open else (401,))):
        if status == 503:
            body = route.response
        else:
            body = {"$ref": "#/components/schemas/Error"}
        responses[str(status)] = {
            "description": _REASONS[status],
            "content": {"application/json": {"schema": body}},
        }
    op["responses"] = responses
    if route.open:
        op["security"] = []
    return op


def document(routes: Sequence[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "RobustMQ HTTP API",
            "version": __version__,
            "description": "Admin API of a RobustMQ node. Lists page with ?page=&limit=; "
            'errors are {"error": {"code", "message"}}.',
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"adminToken": []}],
    }


def markdown(doc: dict[str, Any]) -> str:
    """The API reference: one table row per operation, then its parameters and body."""
    lines = ["| method | path | summary | success |", "|---|---|---|---|"]
    details = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            ok = next(s for s in op["responses"] if s.startswith("2"))
            lines.append(f"| {method.upper()} | `{path}` | {op['summary']} | {ok} |")
            params = [
                f"`{p['name']}` ({p['in']}{', required' if p['required'] else ''}): "
                f"{p['description']}"
                for p in op.get("parameters", [])
            ]
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                schema = body["schema"]
                fields = ", ".join(
                    f"`{name}`{'*' if name in schema.get('required', []) else ''}"
                    for name in schema.get("properties", {})
                )
                params.append(f"JSON body: {fields} (* required)")
            if params:
                details.append(f"- **{method.upper()} `{path}`**: " + "; ".join(params))
    return "\n".join(lines) + "\n\n" + "\n".join(details)


def main(argv: Sequence[str]) -> None:
    from robustmq.http.routes import ROUTES

    doc = document(ROUTES)
    print(markdown(doc) if "--markdown" in argv else json.dumps(doc, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
