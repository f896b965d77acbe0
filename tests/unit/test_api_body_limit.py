"""No endpoint takes a request body: one over ``api.MAX_BODY`` bytes is refused with 413 and
the JSON error body before anything runs (the token check included), declared or chunked."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bgplb.api import MAX_BODY, build_app, build_metrics_app, openapi_document
from bgplb.metrics import Metrics
from bgplb.status import ErrorResponse

from .test_api_support import TOKEN, FakeControl

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MUTATING = ["/api/v1/drain", "/api/v1/undrain", "/api/v1/services/web/drain", "/api/v1/reload"]
TEN_MB = 10_000_000


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
async def client(aiohttp_client: MakeClient, control: FakeControl) -> Client:
    return await aiohttp_client(build_app(control, Metrics(), TOKEN))


async def chunks(total: int, size: int = 1 << 20) -> AsyncIterator[bytes]:
    """A chunked request body (no Content-Length) of ``total`` bytes."""
    while total > 0:
        n = min(size, total)
        total -= n
        yield b"x" * n


async def assert_413(resp: object) -> None:
    assert resp.status == 413, await resp.text()  # type: ignore[attr-defined]
    assert resp.content_type == "application/json"  # type: ignore[attr-defined]
    err = ErrorResponse.model_validate(await resp.json())  # type: ignore[attr-defined]
    assert err.error == "request body too large"
    assert str(MAX_BODY) in (err.detail or "")


@pytest.mark.parametrize("path", MUTATING)
@pytest.mark.parametrize("auth", [AUTH, {}], ids=["token", "no-token"])
async def test_a_10MB_body_is_413_and_nothing_runs(
    client: Client, control: FakeControl, path: str, auth: dict[str, str]
) -> None:
    await assert_413(await client.post(path, data=io.BytesIO(b"x" * TEN_MB), headers=auth))
    await assert_413(await client.post(path, data=chunks(TEN_MB), headers=auth))
    assert control.calls == []


async def test_the_limit_is_exact_for_chunked_bodies(client: Client, control: FakeControl) -> None:
    await assert_413(await client.post("/api/v1/drain", data=chunks(MAX_BODY + 1), headers=AUTH))
    assert control.calls == []
    resp = await client.post("/api/v1/drain", data=chunks(MAX_BODY, size=1000), headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert control.calls == [("drain", None)]


async def test_a_small_body_is_ignored(client: Client, control: FakeControl) -> None:
    resp = await client.post("/api/v1/undrain", data=b"{}", headers=AUTH)
    assert resp.status == 200
    resp = await client.post("/api/v1/undrain", data=b"x" * MAX_BODY, headers=AUTH)
    assert resp.status == 200
    assert control.calls == [("undrain", None), ("undrain", None)]


async def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(
    client: Client,
) -> None:
    resp = await client.post("/api/v1/drain", data=b"x" * (MAX_BODY + 1), headers=AUTH)
    await assert_413(resp)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/api/v1/status", "/metrics"])
async def test_read_only_routes_too(client: Client, path: str) -> None:
    await assert_413(await client.get(path, data=b"x" * (MAX_BODY + 1)))
    assert (await client.get(path)).status == 200


async def test_the_metrics_listener_too(aiohttp_client: MakeClient) -> None:
    c = await aiohttp_client(build_metrics_app(Metrics()))
    await assert_413(await c.get("/metrics", data=chunks(TEN_MB)))
    assert (await c.get("/metrics")).status == 200


def test_the_openapi_document_lists_413_everywhere() -> None:
    for ops in openapi_document()["paths"].values():
        for op in ops.values():
            ref = op["responses"]["413"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorResponse")
