"""The HTTP API: auth on every mutating route, JSON errors, no secret leaks, OpenAPI."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bgplb import api
from bgplb.api import TokenError, build_app, build_metrics_app, load_token, serve
from bgplb.logs import RedactingFilter, clear_secrets, json_formatter, register_secret
from bgplb.metrics import Metrics
from bgplb.status import ErrorResponse, FailedCheck, ReloadResult, StatusResponse

from .test_api_support import MD5_SECRET, TOKEN, FakeControl, a_pass, observed

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def mutating_routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, concrete path) of every non-GET route, straight from the router."""
    out = []
    for route in app.router.routes():
        if route.method in ("GET", "HEAD"):
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info["formatter"].replace("{name}", "web")
        out.append((route.method, path))
    return out


def all_routes(app: web.Application) -> list[tuple[str, str]]:
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        out.append((route.method, info.get("path") or info["formatter"]))
    return out


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
def metrics() -> Metrics:
    m = Metrics(dataplane=observed, exabgp_version="5.0.15")
    m.reconcile_pass(a_pass(0.02))
    return m


@pytest.fixture
async def client(aiohttp_client: MakeClient, control: FakeControl, metrics: Metrics) -> Client:
    return await aiohttp_client(build_app(control, metrics, TOKEN))


async def error_body(resp: Any, status: int) -> ErrorResponse:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    return ErrorResponse.model_validate(await resp.json())


# --------------------------------------------------------------------------- read-only


async def test_healthz_and_readyz(client: Client, control: FakeControl) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"ok": True}
    control.is_ready = False
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert await resp.json() == {"ready": False}
    control.is_ready = True
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"ready": True}


async def test_status_round_trips(client: Client) -> None:
    resp = await client.get("/api/v1/status")
    assert resp.status == 200
    status = StatusResponse.model_validate(await resp.json())
    assert [s.name for s in status.services] == ["web", "dns"]
    assert [p.address for p in status.peers] == ["192.0.2.1", "192.0.2.2"]


async def test_metrics_endpoint_serves_registry(client: Client) -> None:
    resp = await client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    assert "bgplb_build_info{" in text
    assert 'bgplb_ipvs_active_connections{port="80",protocol="tcp",vip="198.51.100.10"} 3.0' in text


async def test_separate_metrics_app(aiohttp_client: MakeClient, metrics: Metrics) -> None:
    c = await aiohttp_client(build_metrics_app(metrics))
    assert "bgplb_reconcile_runs_total 1.0" in await (await c.get("/metrics")).text()
    await error_body(await c.get("/api/v1/status"), 404)


async def test_metrics_render_on_one_dedicated_thread(
    aiohttp_client: MakeClient, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every render runs on the one ``bgplb-metrics`` thread, not the loop's default executor
    (which grew by a worker when scrapes overlapped other off-loop work: the soak's +1 thread),
    and concurrent scrapes add no thread once the first scrape has run."""
    names: list[str] = []
    snapshot = metrics.snapshot

    def recording_snapshot() -> Any:
        scrape = snapshot()
        render = scrape.render

        def slow_render(openmetrics: bool = False) -> bytes:
            names.append(threading.current_thread().name)
            time.sleep(0.02)  # long enough for the scrapes below to overlap
            return render(openmetrics)

        monkeypatch.setattr(scrape, "render", slow_render)
        return scrape

    monkeypatch.setattr(metrics, "snapshot", recording_snapshot)
    c = await aiohttp_client(build_metrics_app(metrics))
    assert (await c.get("/metrics")).status == 200
    after_first = threading.active_count()
    replies = await asyncio.gather(*(c.get("/metrics") for _ in range(8)))
    assert [r.status for r in replies] == [200] * 8
    assert len(names) == 9
    assert {n.rsplit("_", 1)[0] for n in names} == {"bgplb-metrics"}
    assert threading.active_count() == after_first


# --------------------------------------------------------------------------- auth


async def test_router_has_the_mutating_routes(client: Client) -> None:
    routes = mutating_routes(client.app)
    assert len(routes) == 5
    assert ("POST", "/api/v1/reload") in routes


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer"},
    ],
)
async def test_every_mutating_route_needs_the_token(
    client: Client, control: FakeControl, headers: dict[str, str]
) -> None:
    for method, path in mutating_routes(client.app):
        resp = await client.request(method, path, headers=headers)
        body = await error_body(resp, 401)
        assert body.error == "unauthorized"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert control.calls == []


async def test_no_token_configured_disables_mutations(
    aiohttp_client: MakeClient, control: FakeControl, metrics: Metrics
) -> None:
    c = await aiohttp_client(build_app(control, metrics, None))
    for method, path in mutating_routes(c.app):
        body = await error_body(await c.request(method, path, headers=AUTH), 403)
        assert "no API token" in (body.detail or "")
    assert control.calls == []
    assert (await c.get("/api/v1/status")).status == 200


async def test_drain_and_undrain_with_token(client: Client, control: FakeControl) -> None:
    resp = await client.post("/api/v1/services/web/drain", headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {
        "ok": True,
        "action": "drain",
        "service": "web",
        "persisted": True,
        "detail": None,
    }
    assert (await client.post("/api/v1/drain", headers=AUTH)).status == 200
    assert (await client.post("/api/v1/undrain", headers=AUTH)).status == 200
    assert (await client.post("/api/v1/services/web/undrain", headers=AUTH)).status == 200
    assert control.calls == [
        ("drain", "web"),
        ("drain", None),
        ("undrain", None),
        ("undrain", "web"),
    ]


# --------------------------------------------------------------------------- errors


async def test_unknown_service_is_404_json(client: Client, control: FakeControl) -> None:
    body = await error_body(await client.post("/api/v1/services/nope/drain", headers=AUTH), 404)
    assert body.error == "unknown service"
    assert "nope" in (body.detail or "")
    assert control.calls == []


@pytest.mark.parametrize("name", ["bad%20name", "a" * 16, "-x%3By"])
async def test_bad_service_name_is_400_json(client: Client, name: str) -> None:
    body = await error_body(await client.post(f"/api/v1/services/{name}/drain", headers=AUTH), 400)
    assert body.error == "bad service name"


async def test_unknown_route_and_method_are_json(client: Client) -> None:
    await error_body(await client.get("/nope"), 404)
    await error_body(await client.post("/api/v1/nope", headers=AUTH), 404)
    resp = await client.get("/api/v1/reload")
    body = await error_body(resp, 405)
    assert resp.headers["Allow"] == "POST"
    assert "POST" in (body.detail or "")
    await error_body(await client.delete("/api/v1/status"), 405)


async def test_internal_error_is_500_without_traceback(
    client: Client, control: FakeControl, caplog: pytest.LogCaptureFixture
) -> None:
    control.fail_status = RuntimeError("kaboom internal")
    resp = await client.get("/api/v1/status")
    body = await error_body(resp, 500)
    text = body.model_dump_json()
    assert "kaboom" not in text
    assert "Traceback" not in text
    assert any(r.message == "api_internal_error" for r in caplog.records)


async def test_action_timeout_is_503(
    client: Client, control: FakeControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "ACTION_TIMEOUT", 0.01)
    control.hang = True
    body = await error_body(await client.post("/api/v1/drain", headers=AUTH), 503)
    assert "timed out" in body.error
    await error_body(await client.post("/api/v1/reload", headers=AUTH), 503)


async def test_reload_results(client: Client, control: FakeControl) -> None:
    resp = await client.post("/api/v1/reload", headers=AUTH)
    assert resp.status == 200
    assert ReloadResult.model_validate(await resp.json()).changed_services == ["web"]
    control.reload_result = ReloadResult(ok=False, errors=["services[0].vips: required"])
    resp = await client.post("/api/v1/reload", headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["errors"] == ["services[0].vips: required"]


async def test_probe_reload_passes_the_flag_and_returns_the_failed_checks(
    client: Client, control: FakeControl
) -> None:
    resp = await client.post("/api/v1/reload?probe=true", headers=AUTH)
    assert resp.status == 200
    await client.post("/api/v1/reload?probe=false", headers=AUTH)
    await client.post("/api/v1/reload", headers=AUTH)
    assert control.calls == [("reload", "probe"), ("reload", None), ("reload", None)]
    failed = FailedCheck(check="web/tcp", error="connect: Connection refused")
    control.reload_result = ReloadResult(
        ok=False, errors=["1 of 1 changed check(s) failed"], probed_checks=1, failed_checks=[failed]
    )
    resp = await client.post("/api/v1/reload?probe=1", headers=AUTH)
    assert resp.status == 400
    assert ReloadResult.model_validate(await resp.json()).failed_checks == [failed]


@pytest.mark.parametrize("query", ["probe=maybe", "probe=true&probe=false", "probe=%00"])
async def test_a_bad_probe_flag_is_a_400_reload_result(
    client: Client, control: FakeControl, query: str
) -> None:
    resp = await client.post(f"/api/v1/reload?{query}", headers=AUTH)
    assert resp.status == 400
    assert not ReloadResult.model_validate(await resp.json()).ok
    assert control.calls == []


def test_openapi_documents_the_probe_parameter() -> None:
    op = api.openapi_document()["paths"]["/api/v1/reload"]["post"]
    assert [(p["name"], p["in"], p["schema"]["type"]) for p in op["parameters"]] == [
        ("probe", "query", "boolean")
    ]
    schemas = api.openapi_document()["components"]["schemas"]
    assert "failed_checks" in schemas["ReloadResult"]["properties"]
    assert "last_reload" in schemas["StatusResponse"]["properties"]


# --------------------------------------------------------------------------- secrets


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Everything logged during the test, as the agent's redacting JSON handler writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)
    clear_secrets()


async def test_no_secret_in_any_response_or_log(
    client: Client,
    control: FakeControl,
    caplog: pytest.LogCaptureFixture,
    log_lines: io.StringIO,
) -> None:
    register_secret(TOKEN)
    register_secret(MD5_SECRET)
    caplog.set_level(logging.DEBUG)
    bodies: list[str] = []
    app = client.app
    for auth in ({}, AUTH, {"Authorization": "Bearer wrong"}):
        for method, path in all_routes(app):
            concrete = path.replace("{name}", "web")
            for p in (concrete, path.replace("{name}", "nope")):
                resp = await client.request(method, p, headers=auth)
                bodies.append(await resp.text())
                bodies.append(str(dict(resp.headers)))
    control.fail_status = RuntimeError(f"failure mentioning {MD5_SECRET}")
    resp = await client.get("/api/v1/status", headers=AUTH)
    assert resp.status == 500
    bodies.append(await resp.text())
    assert len(bodies) > 40
    for text in bodies:
        assert TOKEN not in text
        assert MD5_SECRET not in text
    # The API never logs the token itself; the one record carrying the MD5 secret (in the
    # exception) is redacted by the agent's handler.
    assert TOKEN not in caplog.text
    written = log_lines.getvalue()
    assert "api_internal_error" in written
    assert TOKEN not in written
    assert MD5_SECRET not in written
    assert "***" in written


# --------------------------------------------------------------------------- openapi


async def test_openapi_lists_every_route(client: Client) -> None:
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status == 200
    doc = json.loads(await resp.text())
    assert doc["openapi"].startswith("3.1")
    routes = all_routes(client.app)
    assert routes
    for method, path in routes:
        assert method.lower() in doc["paths"][path], (method, path)
    n_ops = sum(len(ops) for ops in doc["paths"].values())
    assert n_ops == len(routes)
    schemas = doc["components"]["schemas"]
    assert {"StatusResponse", "ErrorResponse", "ReloadResult", "ServiceStatus"} <= set(schemas)
    for ref in re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc)):
        assert ref in schemas
    drain = doc["paths"]["/api/v1/services/{name}/drain"]["post"]
    assert drain["security"] == [{"bearer": []}]
    assert "401" in drain["responses"]
    assert "404" in drain["responses"]
    assert "security" not in doc["paths"]["/api/v1/status"]["get"]


def test_openapi_passes_a_spec_validator() -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(api.openapi_document())
    broken = api.openapi_document()
    broken["paths"]["/healthz"]["get"]["responses"] = "nope"
    with pytest.raises(Exception, match="nope"):
        validator.validate(broken)


# --------------------------------------------------------------------------- token file


def test_load_token_strips(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(f"  {TOKEN}\n")
    f.chmod(0o600)
    assert load_token(f) == TOKEN


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_load_token_refuses_shared_file(tmp_path: Path, mode: int) -> None:
    f = tmp_path / "token"
    f.write_text(TOKEN)
    f.chmod(mode)
    with pytest.raises(TokenError) as exc:
        load_token(f)
    assert str(f) in str(exc.value)
    assert f"chmod 600 {f}" in str(exc.value)
    assert TOKEN not in str(exc.value)


def test_load_token_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="cannot read"):
        load_token(tmp_path / "absent")
    f = tmp_path / "empty"
    f.write_text(" \n")
    os.chmod(f, 0o600)
    with pytest.raises(TokenError, match="empty"):
        load_token(f)


# --------------------------------------------------------------------------- serve


async def test_serve_binds_loopback(control: FakeControl, metrics: Metrics) -> None:
    import ipaddress

    from aiohttp import ClientSession

    runner = await serve(build_app(control, metrics, TOKEN), ipaddress.ip_address("127.0.0.1"), 0)
    try:
        host, port = runner.addresses[0][:2]
        async with ClientSession() as s, s.get(f"http://{host}:{port}/healthz") as resp:
            assert resp.status == 200
    finally:
        await runner.cleanup()


async def test_serve_reports_a_busy_port(control: FakeControl, metrics: Metrics) -> None:
    import ipaddress

    lo = ipaddress.ip_address("127.0.0.1")
    first = await serve(build_app(control, metrics, TOKEN), lo, 0)
    try:
        port = first.addresses[0][1]
        with pytest.raises(OSError, match=r"address already in use|Errno 98"):
            await serve(build_metrics_app(metrics), lo, port)
    finally:
        await first.cleanup()
