"""No state file stops the agent (issue 13, items 2 and 3): a corrupt admin.json starts the node
drained, a full or read-only state_dir never refuses a drain, a bad API token file disables only
the mutating API. The whole agent runs on the fakes with a fake clock."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bgplb import admin as admin_module
from bgplb.admin import RETRY_INTERVAL, STATE_FILE
from bgplb.api import ApiToken, build_app
from bgplb.config import load_config
from bgplb.logs import clear_secrets, redact
from bgplb.statefile import write_atomic

from .test_agent import VIP, Harness, raw_config

TOKEN = "state-files-token-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Client = TestClient[web.Request, web.Application]


def metric(h: Harness, name: str) -> str:
    body = h.agent.metrics.exposition().decode()
    return next((line for line in body.splitlines() if line.startswith(name)), "")


async def test_corrupt_admin_json_starts_the_node_drained_not_a_crash_loop(
    tmp_path: Path,
) -> None:
    """Was: AdminStateError from Agent() -> exit 1 in 0.7 s -> systemd restart loop."""
    state = tmp_path / "state"
    state.mkdir()
    (state / STATE_FILE).write_bytes(b'{"version": 1, "drained": [tr')
    h = Harness(tmp_path)
    await h.start()
    await h.clock.advance(10.0)
    assert not h.announced()  # fail-safe: drained until an operator says otherwise
    status = h.agent.status()
    assert status.node.drained
    assert status.node.drain_reason is not None
    assert STATE_FILE in status.node.drain_reason
    admin = next(f for f in status.state_files if f.file == "admin")
    assert not admin.ok
    assert admin.errors == 1
    assert metric(h, 'bgplb_state_file_ok{file="admin"}').endswith(" 0.0")
    assert metric(h, 'bgplb_state_file_errors_total{file="admin"}').endswith(" 1.0")
    assert [p.name for p in state.iterdir() if ".corrupt-" in p.name]

    assert await h.agent.undrain(None) is None  # the operator: persisted
    await h.until(lambda: VIP in h.announced())
    status = h.agent.status()
    assert status.node.drain_reason is None
    assert all(f.ok for f in status.state_files)
    assert metric(h, 'bgplb_state_file_ok{file="admin"}').endswith(" 1.0")
    await h.stop()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path)
    await h.start()
    yield h
    await h.stop()


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[Client]:
    async with TestClient(TestServer(build_app(harness.agent, harness.agent.metrics, TOKEN))) as c:
        yield c


@pytest.mark.parametrize(
    ("code", "text"),
    [(errno.ENOSPC, "no space left on device"), (errno.EROFS, "read-only file system")],
)
async def test_drain_on_a_full_disk_answers_200_not_persisted_and_is_written_later(
    harness: Harness, client: Client, monkeypatch: pytest.MonkeyPatch, code: int, text: str
) -> None:
    """Was: 500 {"error": "internal error"} and a traceback; the node was not drained."""
    h = harness
    await h.until(lambda: VIP in h.announced())

    def refused(*_args: object, **_kw: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(admin_module, "write_atomic", refused)
    resp = await client.post("/api/v1/drain", headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    assert body["ok"] is True
    assert body["persisted"] is False
    assert body["detail"] == f"state_dir {tmp_state(h)}: {text}"
    await h.until(lambda: not h.announced(), limit=10.0)  # in force: the safe direction
    status = (await (await client.get("/api/v1/status")).json())["node"]
    assert status["drained"] is True
    assert status["admin_persisted"] is False
    assert metric(h, 'bgplb_state_file_ok{file="admin"}').endswith(" 0.0")

    resp = await client.post("/api/v1/services/web/drain", headers=AUTH)
    assert resp.status == 200
    assert (await resp.json())["persisted"] is False

    monkeypatch.setattr(admin_module, "write_atomic", write_atomic)  # the disk has room again
    await h.clock.advance(RETRY_INTERVAL + 1.0)
    h.agent.reconciler.wake()
    # retried by a reconcile pass; the write itself runs in a worker thread, in real time
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30.0
    while not h.agent.admin.persisted:
        assert loop.time() < deadline, "admin.json not written within 30 s"
        await h.clock.advance(0.05)
        await asyncio.sleep(0.01)
    assert h.agent.status().node.admin_persisted
    assert metric(h, 'bgplb_state_file_ok{file="admin"}').endswith(" 1.0")
    on_disk = yaml.safe_load((tmp_state(h) / STATE_FILE).read_text())
    assert on_disk["node_drained"] is True
    assert on_disk["drained"] == ["web"]


def tmp_state(h: Harness) -> Path:
    return Path(h.agent.config.node.state_dir)


async def test_undrain_on_a_full_disk_is_in_force(
    harness: Harness, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    await client.post("/api/v1/drain", headers=AUTH)
    await h.until(lambda: not h.announced(), limit=10.0)

    def full(*_args: object, **_kw: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(admin_module, "write_atomic", full)
    resp = await client.post("/api/v1/undrain", headers=AUTH)
    assert resp.status == 200
    assert (await resp.json())["persisted"] is False
    await h.until(lambda: VIP in h.announced())


def test_action_response_in_openapi_documents_persisted() -> None:
    from bgplb.api import openapi_document

    schema = openapi_document()["components"]["schemas"]["ActionResponse"]["properties"]
    assert {"persisted", "detail"} <= schema.keys()


# --------------------------------------------------------------------------- API token


def token_file(tmp_path: Path, text: str, mode: int) -> Path:
    f = tmp_path / "api.token"
    f.write_text(text)
    f.chmod(mode)
    return f


def test_a_bad_token_file_does_not_stop_the_config_from_loading(tmp_path: Path) -> None:
    """Was: ConfigError (exit 2): a typo in the token file's path kept the node from routing."""
    raw = raw_config(tmp_path, api={"token_file": str(tmp_path / "absent.token")})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_config(path).node.api.token_file == tmp_path / "absent.token"


@pytest.mark.parametrize(
    ("text", "mode", "why"),
    [(TOKEN, 0o644, "chmod 600"), ("\n", 0o600, "empty"), (None, 0o600, "cannot read")],
)
async def test_an_unusable_token_disables_the_mutating_api_with_the_reason(
    tmp_path: Path, text: str | None, mode: int, why: str
) -> None:
    path = token_file(tmp_path, text, mode) if text is not None else tmp_path / "absent"
    token = ApiToken()
    assert token.load(path) is None
    assert token.health.problem is not None
    assert token.health.errors == 1
    h = Harness(tmp_path)
    h.agent.api_token = token
    await h.start()
    async with TestClient(TestServer(build_app(h.agent, h.agent.metrics, token))) as c:
        resp = await c.post("/api/v1/drain", headers=AUTH)
        assert resp.status == 403
        detail = (await resp.json())["detail"]
        assert why in detail
        assert str(path) in detail
        status = h.agent.status()
        assert status.node.mutating_api == detail
        assert not next(f for f in status.state_files if f.file == "api_token").ok
        await h.until(lambda: VIP in h.announced())  # routing is not affected

        # the operator fixes the file and reloads: the token is read again
        token_file(tmp_path, TOKEN, 0o600)
        raw = raw_config(tmp_path, api={"token_file": str(tmp_path / "api.token")})
        h.path.write_text(yaml.safe_dump(raw))
        assert (await h.agent.reload()).ok
        assert TOKEN not in redact(f"Bearer {TOKEN}")  # registered for log redaction too
        resp = await c.post("/api/v1/services/web/drain", headers=AUTH)
        assert resp.status == 200
        assert h.agent.status().node.mutating_api is None
    await h.stop()
    clear_secrets()
