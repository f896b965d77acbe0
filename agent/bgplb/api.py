"""The agent's HTTP API (aiohttp): health, readiness, metrics, status and admin actions.

One route table (:data:`~bgplb.endpoints.ENDPOINTS`) drives both the router and the OpenAPI
3.1 document (endpoints.py), whose schemas come from the pydantic models in
:mod:`bgplb.status`. Mutating endpoints need ``Authorization: Bearer <token>``; with no token
configured they are disabled (403). Every error is an :class:`ErrorResponse` JSON body; the
token never appears in a response or log.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from prometheus_client.exposition import choose_encoder
from pydantic import BaseModel

from .apitoken import ApiToken
from .apitoken import TokenError as TokenError  # re-exported: client.py, tests
from .apitoken import load_token as load_token
from .dataplane.base import DataplaneError
from .endpoints import ENDPOINTS as ENDPOINTS  # re-exported: tests
from .endpoints import SERVICE_NAME_RE
from .endpoints import openapi_document as openapi_document  # re-exported: tests
from .metrics import Metrics
from .model import IPAddress
from .status import (
    ActionResponse,
    AgentControl,
    ErrorResponse,
    HealthResponse,
    ReadyResponse,
    ReloadResult,
)

log = logging.getLogger(__name__)

ACTION_TIMEOUT = 30.0  # seconds for a drain/undrain/reload to complete inside the agent
TRAFFIC_TIMEOUT = 5.0  # seconds to read one service's IPVS counters (each netlink call: less)

# Every /metrics render runs on this one thread (of every listener): the thread count stays
# put once the first scrape has run, instead of the loop's default executor growing by a
# worker whenever a scrape overlaps other off-loop work (the soak's thread goal, bench/NOTES.md).
# Concurrent scrapes queue here; a render holds the GIL anyway.
METRICS_RENDER = ThreadPoolExecutor(1, thread_name_prefix="bgplb-metrics")
SERVE_TIMEOUT = 10.0  # seconds to bind a listener
MAX_BODY = 64 * 1024  # bytes: no endpoint takes a body; anything larger is refused (413)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request body over :data:`MAX_BODY` bytes is refused (413) before anything else runs
    (the token check included): a declared Content-Length at once, a chunked body once that
    much of it has arrived. A smaller body is read and ignored (no endpoint takes one)."""
    if request.body_exists:
        length = request.content_length
        if (length is not None and length > MAX_BODY) or not await _body_fits(request):
            return _error(
                413,
                "request body too large",
                f"the API takes no request body (at most {MAX_BODY} bytes)",
            )
    return await handler(request)


async def _body_fits(request: web.Request) -> bool:
    """Read the body (and drop it) up to one byte over the limit; False if it is over."""
    got = 0
    while chunk := await request.content.read(MAX_BODY + 1 - got):
        got += len(chunk)
        if got > MAX_BODY:
            return False
    return True


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
        return web.json_response(text=await self.control.status_json())

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.document)

    async def traffic(self, request: web.Request) -> web.StreamResponse:
        service = request.match_info["name"]
        if not SERVICE_NAME_RE.match(service):
            return _bad_name()
        try:
            async with asyncio.timeout(TRAFFIC_TIMEOUT):
                result = await self.control.traffic(service)
        except KeyError:
            return _error(404, "unknown service", f"no service named {service!r} in the config")
        except TimeoutError:
            return _error(503, "traffic timed out", f"no answer within {TRAFFIC_TIMEOUT:g} s")
        except DataplaneError as e:
            return _error(503, "cannot read the IPVS counters", str(e))
        return _json(result)

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
            return _bad_name()
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


def _bad_name() -> web.Response:
    return _error(
        400,
        "bad service name",
        "a service name is 1-15 characters of letters, digits, '_', '-', '.'",
    )


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
    app = web.Application(
        middlewares=[error_middleware, body_limit_middleware], client_max_size=MAX_BODY
    )
    source = token if isinstance(token, ApiToken) else ApiToken(token=token)
    handlers = _Handlers(control, metrics, source)
    for e in ENDPOINTS:
        handler: Handler = handlers.metrics if e.name == "metrics" else getattr(handlers, e.name)
        if e.mutating:
            handler = handlers.guard(handler)
        app.router.add_route(e.method, e.path, handler, name=e.name)
    return app


def metrics_handler(metrics: Metrics) -> Handler:
    """``/metrics`` (Prometheus text, or OpenMetrics if asked for), rendered on the one
    ``METRICS_RENDER`` thread: at 1,000 services it is tens of ms of CPU, not to be spent in
    one go on the event loop. The thread renders a snapshot taken here, on the loop, where
    the metrics change: it never iterates a dict the loop is changing."""

    async def handler(request: web.Request) -> web.Response:
        _, content_type = choose_encoder(request.headers.get("Accept", ""))
        openmetrics = content_type.startswith("application/openmetrics-text")
        scrape = metrics.snapshot()
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(METRICS_RENDER, scrape.render, openmetrics)
        return web.Response(body=body, headers={"Content-Type": content_type})

    return handler


def build_metrics_app(metrics: Metrics) -> web.Application:
    """A second listener with only ``/metrics`` (node.api.metrics_listen)."""
    app = web.Application(
        middlewares=[error_middleware, body_limit_middleware], client_max_size=MAX_BODY
    )
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
