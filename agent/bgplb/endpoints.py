"""The API's endpoints: one route table (:data:`ENDPOINTS`) that drives both the router
(``api.build_app``) and the OpenAPI 3.1 document (:func:`openapi_document`), whose schemas
come from the pydantic models in :mod:`bgplb.status`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from . import __version__
from .status import (
    ActionResponse,
    ErrorResponse,
    HealthResponse,
    ReadyResponse,
    ReloadResult,
    StatusResponse,
    TrafficResponse,
)

# The config's rule for service names (they name Linux interfaces).
SERVICE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")

Responses = tuple[tuple[int, type[BaseModel] | None], ...]
_AUTH_ERRORS: Responses = ((401, ErrorResponse), (403, ErrorResponse), (503, ErrorResponse))
_SERVICE_ERRORS: Responses = ((400, ErrorResponse), (404, ErrorResponse), *_AUTH_ERRORS)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    name: str  # operationId and the handler's method name
    summary: str
    responses: Responses  # status -> body model; None = a body without a pydantic model
    mutating: bool = False
    media_type: str = "application/json"
    query: tuple[dict[str, Any], ...] = ()  # OpenAPI parameter objects ("in": "query")

    def content(self, model: type[BaseModel] | None) -> dict[str, Any]:
        """The OpenAPI ``content`` object of one response."""
        if model is not None:
            schema = {"$ref": f"#/components/schemas/{model.__name__}"}
            return {"application/json": {"schema": schema}}
        kind = "object" if self.media_type == "application/json" else "string"
        return {self.media_type: {"schema": {"type": kind}}}


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/healthz",
        "healthz",
        "Liveness: 200 while the process serves",
        ((200, HealthResponse),),
    ),
    Endpoint(
        "GET",
        "/readyz",
        "readyz",
        "Readiness: 200 once the first reconcile pass ran",
        ((200, ReadyResponse), (503, ReadyResponse)),
    ),
    Endpoint(
        "GET",
        "/metrics",
        "metrics",
        "Prometheus metrics (text exposition)",
        ((200, None),),
        media_type="text/plain",
    ),
    Endpoint(
        "GET",
        "/api/v1/status",
        "status",
        "Node, services, peers and prerequisites",
        ((200, StatusResponse),),
    ),
    Endpoint(
        "GET",
        "/api/v1/services/{name}/traffic",
        "traffic",
        "One service's IPVS counters per VIP, read from the kernel now (drain --wait polls it)",
        (
            (200, TrafficResponse),
            (400, ErrorResponse),
            (404, ErrorResponse),
            (503, ErrorResponse),
        ),
    ),
    Endpoint(
        "POST",
        "/api/v1/services/{name}/drain",
        "drain_service",
        "Drain one service",
        ((200, ActionResponse), *_SERVICE_ERRORS),
        mutating=True,
    ),
    Endpoint(
        "POST",
        "/api/v1/services/{name}/undrain",
        "undrain_service",
        "Undrain one service",
        ((200, ActionResponse), *_SERVICE_ERRORS),
        mutating=True,
    ),
    Endpoint(
        "POST",
        "/api/v1/drain",
        "drain_node",
        "Drain the whole node",
        ((200, ActionResponse), *_AUTH_ERRORS),
        mutating=True,
    ),
    Endpoint(
        "POST",
        "/api/v1/undrain",
        "undrain_node",
        "Undrain the whole node",
        ((200, ActionResponse), *_AUTH_ERRORS),
        mutating=True,
    ),
    Endpoint(
        "POST",
        "/api/v1/reload",
        "reload",
        "Reload the config file, all or nothing (400: refused, the old config stays)",
        ((200, ReloadResult), (400, ReloadResult), *_AUTH_ERRORS),
        mutating=True,
        query=(
            {
                "name": "probe",
                "in": "query",
                "required": False,
                "description": "first probe every changed or new check once; refuse the "
                "config (400, failed_checks) if one fails",
                "schema": {"type": "boolean", "default": False},
            },
        ),
    ),
    Endpoint("GET", "/api/v1/openapi.json", "openapi", "This OpenAPI document", ((200, None),)),
)
_COMMON_ERRORS: Responses = (
    (404, ErrorResponse),
    (405, ErrorResponse),
    (413, ErrorResponse),
    (500, ErrorResponse),
)


def openapi_document(endpoints: tuple[Endpoint, ...] = ENDPOINTS) -> dict[str, Any]:
    """OpenAPI 3.1, generated from the route table and the models' JSON schemas."""
    models = {m for e in endpoints for _, m in e.responses if m is not None} | {ErrorResponse}
    _, top = models_json_schema(
        [(m, "serialization") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        responses: dict[str, Any] = {}
        for status, model in (*e.responses, *_COMMON_ERRORS):
            if str(status) in responses:
                continue
            responses[str(status)] = {
                "description": _STATUS_TEXT.get(status, "response"),
                "content": e.content(model),
            }
        op: dict[str, Any] = {"operationId": e.name, "summary": e.summary, "responses": responses}
        if e.query:
            op["parameters"] = list(e.query)
        if "{name}" in e.path:
            op["parameters"] = [
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "description": "service name",
                    "schema": {"type": "string", "pattern": SERVICE_NAME_RE.pattern},
                }
            ]
        if e.mutating:
            op["security"] = [{"bearer": []}]
        paths.setdefault(e.path, {})[e.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "bgp-lb agent API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


_STATUS_TEXT = {
    200: "OK",
    400: "bad input",
    401: "missing or wrong bearer token",
    403: "mutating endpoints are disabled (no usable token: the detail says why)",
    404: "unknown route or service",
    405: "method not allowed",
    413: "request body too large (no endpoint takes a body; at most 64 KiB is read)",
    500: "internal error",
    503: "not ready, the agent timed out, or the kernel did not answer",
}
