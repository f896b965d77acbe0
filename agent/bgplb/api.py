"""The agent's HTTP API (aiohttp): health, readiness, metrics, status and admin actions.

One route table (:data:`ENDPOINTS`) drives both the router and the OpenAPI 3.1 document,
whose schemas come from the pydantic models in :mod:`bgplb.status`. Mutating endpoints need
``Authorization: Bearer <token>``; with no token configured they are disabled (403). Every
error is an :class:`ErrorResponse` JSON body; the token never appears in a response or log.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client.exposition import choose_encoder
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from . import __version__
from .apitoken import ApiToken
from .apitoken import TokenError as TokenError  # re-exported: client.py, tests
from .apitoken import load_token as load_token
from .metrics import Metrics
from .model import IPAddress
from .status import (
    ActionResponse,
    AgentControl,
    ErrorResponse,
    HealthResponse,
    ReadyResponse,
    ReloadResult,
    StatusResponse,
)

log = logging.getLogger(__name__)

# The config's rule for service names (they name Linux interfaces).
SERVICE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
ACTION_TIMEOUT = 30.0  # seconds for a drain/undrain/reload to complete inside the agent
SERVE_TIMEOUT = 10.0  # seconds to bind a listener
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --------------------------------------------------------------------------- route table

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
_COMMON_ERRORS: Responses = ((404, ErrorResponse), (405, ErrorResponse), (500, ErrorResponse))


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
    500: "internal error",
    503: "not ready, or the agent timed out",
}


# --------------------------------------------------------------------------- responses


def _json(
    model: BaseModel, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(text=model.model_dump_json(), status=status, headers=headers)


def _error(
    status: int, error: str, detail: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    return _json(ErrorResponse(error=error, detail=detail), status, headers)


_PASSED_HEADERS = ("Allow", "WWW-Authenticate")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into an ErrorResponse JSON body; never leak a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {h: exc.headers[h] for h in _PASSED_HEADERS if h in exc.headers}
        detail = {
            404: "unknown path; the routes are listed at /api/v1/openapi.json",
            405: f"allowed: {exc.headers.get('Allow', '')}",
        }.get(exc.status)
        return _error(exc.status, exc.reason.lower(), detail, headers)
    except Exception:
        log.exception(
            "api_internal_error", extra={"event": "api_internal_error", "path": request.path}
        )
        return _error(500, "internal error", "see the agent log")


# --------------------------------------------------------------------------- handlers


class _Handlers:
    def __init__(self, control: AgentControl, metrics: Metrics, token: ApiToken) -> None:
        self.control = control
        self.token = token
        self.metrics = metrics_handler(metrics)
        self.document = openapi_document()

    def guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            token = self.token.value
            if token is None:
                return _error(403, "mutating endpoints are disabled", self.token.disabled)
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            # Only HTTP's own whitespace around the token (str.strip() also dropped U+00A0
            # and friends); surrogatepass: undecodable header bytes never raise (was a 500).
            given_token = given.strip(" \t").encode("utf-8", "surrogatepass")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given_token, token):
                return _error(
                    401,
                    "unauthorized",
                    "send Authorization: Bearer <token>",
                    {"WWW-Authenticate": 'Bearer realm="bgp-lb"'},
                )
            return await handler(request)

        return guarded

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        return _json(HealthResponse(ok=True))

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        ready = self.control.ready()
        return _json(ReadyResponse(ready=ready), 200 if ready else 503)

    async def status(self, request: web.Request) -> web.StreamResponse:
        return _json(self.control.status())

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.document)

    async def drain_service(self, request: web.Request) -> web.StreamResponse:
        return await self._act("drain", request.match_info["name"])

    async def undrain_service(self, request: web.Request) -> web.StreamResponse:
        return await self._act("undrain", request.match_info["name"])

    async def drain_node(self, request: web.Request) -> web.StreamResponse:
        return await self._act("drain", None)

    async def undrain_node(self, request: web.Request) -> web.StreamResponse:
        return await self._act("undrain", None)

    async def _act(self, action: str, service: str | None) -> web.StreamResponse:
        if service is not None and not SERVICE_NAME_RE.match(service):
            return _error(
                400,
                "bad service name",
                "a service name is 1-15 characters of letters, digits, '_', '-', '.'",
            )
        call = self.control.drain if action == "drain" else self.control.undrain
        try:
            async with asyncio.timeout(ACTION_TIMEOUT):
                not_persisted = await call(service)
        except KeyError:
            return _error(404, "unknown service", f"no service named {service!r} in the config")
        except TimeoutError:
            return _error(503, f"{action} timed out", f"no answer within {ACTION_TIMEOUT:g} s")
        log.info(action, extra={"event": f"api_{action}", "service": service})
        return _json(
            ActionResponse(
                ok=True,
                action=action,
                service=service,
                persisted=not_persisted is None,
                detail=not_persisted,
            )
        )

    async def reload(self, request: web.Request) -> web.StreamResponse:
        probe = _flag(request.query.getall("probe", []))
        if probe is None:
            bad = "probe must be true or false"
            return _json(ReloadResult(ok=False, errors=[bad]), 400)
        try:
            async with asyncio.timeout(ACTION_TIMEOUT):
                result = await self.control.reload(probe=probe)
        except TimeoutError:
            return _error(503, "reload timed out", f"no answer within {ACTION_TIMEOUT:g} s")
        return _json(result, 200 if result.ok else 400)


_TRUE = frozenset({"true", "1", "yes", ""})
_FALSE = frozenset({"false", "0", "no"})


def _flag(values: list[str]) -> bool | None:
    """A boolean query parameter (absent: False); None when it is not one (or repeated)."""
    if not values:
        return False
    if len(values) > 1:
        return None
    value = values[0].strip().lower()
    return True if value in _TRUE else False if value in _FALSE else None


def build_app(
    control: AgentControl, metrics: Metrics, token: str | ApiToken | None
) -> web.Application:
    """The API application. ``token=None`` (or an ApiToken without a value) disables the
    mutating endpoints (403); an ApiToken is read at each request (reloads change it)."""
    app = web.Application(middlewares=[error_middleware])
    source = token if isinstance(token, ApiToken) else ApiToken(token=token)
    handlers = _Handlers(control, metrics, source)
    for e in ENDPOINTS:
        handler: Handler = handlers.metrics if e.name == "metrics" else getattr(handlers, e.name)
        if e.mutating:
            handler = handlers.guard(handler)
        app.router.add_route(e.method, e.path, handler, name=e.name)
    return app


def metrics_handler(metrics: Metrics) -> Handler:
    """``/metrics`` (Prometheus text, or OpenMetrics if asked for), rendered in a worker thread:
    at 1,000 services it is tens of ms of CPU, not to be spent in one go on the event loop.
    The thread renders a snapshot taken here, on the loop, where the metrics change: it never
    iterates a dict the loop is changing."""

    async def handler(request: web.Request) -> web.Response:
        _, content_type = choose_encoder(request.headers.get("Accept", ""))
        openmetrics = content_type.startswith("application/openmetrics-text")
        scrape = metrics.snapshot()
        body = await asyncio.to_thread(scrape.render, openmetrics)
        return web.Response(body=body, headers={"Content-Type": content_type})

    return handler


def build_metrics_app(metrics: Metrics) -> web.Application:
    """A second listener with only ``/metrics`` (node.api.metrics_listen)."""
    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/metrics", metrics_handler(metrics), allow_head=False)
    return app


async def serve(app: web.Application, listen: IPAddress, port: int) -> web.AppRunner:
    """Start serving ``app`` on ``listen:port``; the caller calls ``runner.cleanup()``."""
    runner = web.AppRunner(app, handle_signals=False)
    async with asyncio.timeout(SERVE_TIMEOUT):
        await runner.setup()
        try:
            await web.TCPSite(runner, str(listen), port).start()
        except BaseException:
            await runner.cleanup()
            raise
    return runner
