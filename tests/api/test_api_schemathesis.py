"""Schemathesis against the OpenAPI document a real agent serves (/api/v1/openapi.json):
every operation, valid and invalid inputs, with the token, without it, and on an agent with no
token configured. Every response must be documented (status code, content type, body schema)
and none may be a 5xx. The agent must be alive and still routing afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.failures import FailureGroup, ServerError
from schemathesis.generation.modes import GenerationMode

from bgplb.api import ENDPOINTS
from tests.harness.figures import count, record_figures  # noqa: F401  (fixture)

from .live import TOKEN, LiveAgent, live_agent

SETTINGS = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
TIMEOUT = 30.0  # seconds per request (a shared, loaded CI box)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAgent]:
    with live_agent(tmp_path_factory.mktemp("token"), TOKEN) as a:
        yield a
    # (stop() raised if the agent's run() failed or did not return 0)


@pytest.fixture(scope="module")
def tokenless_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAgent]:
    with live_agent(tmp_path_factory.mktemp("notoken"), None) as a:
        yield a


def _schema(agent: LiveAgent) -> Any:
    return schemathesis.openapi.from_url(f"{agent.base_url}/api/v1/openapi.json", timeout=TIMEOUT)


@pytest.fixture(scope="module")
def token_schema(agent: LiveAgent) -> Any:
    return _schema(agent)


@pytest.fixture(scope="module")
def tokenless_schema(tokenless_agent: LiveAgent) -> Any:
    return _schema(tokenless_agent)


# schemathesis' own pytest integration (``from_fixture`` + ``parametrize``) breaks on pytest
# 9.2 (it sets ``Node._nodeid``, gone there): draw its per-operation strategies directly.
# Negative data (schemathesis breaks the schema) exists only where there are parameters.
CASES = [
    pytest.param((e.method, e.path), mode, id=f"{e.method} {e.path} {mode}")
    for e in ENDPOINTS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or "{" in e.path
]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def still_serving(agent: LiveAgent) -> None:
    assert agent.alive()
    assert agent.call(lambda: agent.agent is not None and agent.agent.ready())


def exercise(
    schema: Any, data: st.DataObject, op: tuple[str, str], mode: GenerationMode, **kw: Any
) -> Any:
    method, path = op
    operation = schema[path][method]
    if "{" not in path and data.draw(st.integers(0, 3), label="skip") != 0:
        return None, None  # no parameters: a few requests say all (each needs a call anyway)
    case = data.draw(operation.as_strategy(generation_mode=mode), label="case")
    count("bad_inputs")
    count("server_errors", 0)  # measured: 0 unless a check finds one
    try:
        response = case.call_and_validate(timeout=TIMEOUT, **kw)
    except FailureGroup as e:
        count("server_errors", sum(isinstance(x, ServerError) for x in e.exceptions))
        raise
    return case, response


@pytest.mark.parametrize(("op", "mode"), CASES)
@SETTINGS
@given(data=st.data())
def test_with_the_token(
    agent: LiveAgent, token_schema: Any, op: tuple[str, str], mode: GenerationMode, data: Any
) -> None:
    exercise(token_schema, data, op, mode, base_url=agent.base_url, headers=AUTH)
    still_serving(agent)


@pytest.mark.parametrize(("op", "mode"), CASES)
@SETTINGS
@given(data=st.data())
def test_without_the_token(
    agent: LiveAgent, token_schema: Any, op: tuple[str, str], mode: GenerationMode, data: Any
) -> None:
    case, response = exercise(token_schema, data, op, mode, base_url=agent.base_url)
    if case is not None and case.operation.definition.raw.get("security"):
        assert response.status_code in (401, 404, 405), response.text  # never acted on
    still_serving(agent)


@pytest.mark.parametrize(("op", "mode"), CASES)
@SETTINGS
@given(data=st.data())
def test_no_token_configured(
    tokenless_agent: LiveAgent,
    tokenless_schema: Any,
    op: tuple[str, str],
    mode: GenerationMode,
    data: Any,
) -> None:
    case, response = exercise(
        tokenless_schema, data, op, mode, base_url=tokenless_agent.base_url, headers=AUTH
    )
    if case is not None and case.operation.definition.raw.get("security"):
        assert response.status_code in (403, 404, 405), response.text
    still_serving(tokenless_agent)


def test_the_status_with_ucmp_matches_the_served_schema(
    agent: LiveAgent, token_schema: Any
) -> None:
    """``services[].link_bandwidth`` (issue 14 item 3) is in the served document and the body
    conforms to it (every model forbids unknown properties)."""
    case = token_schema["/api/v1/status"]["GET"].Case()
    response = case.call_and_validate(base_url=agent.base_url, timeout=TIMEOUT)
    web = next(s for s in response.json()["services"] if s["name"] == "web")
    assert web["link_bandwidth"] == [
        {  # a local backend: link_bandwidth.capacity (default 1) x unit (default 125000)
            "vip": "10.99.0.1",
            "capacity": 1,
            "announced_capacity": 1,
            "bytes_per_second": 125000,
            "change_in_seconds": None,
        }
    ]
    dns = next(s for s in response.json()["services"] if s["name"] == "dns")
    assert dns["link_bandwidth"] == []


def test_the_checks_do_fail_on_a_5xx(agent: LiveAgent, token_schema: Any) -> None:
    """The harness can fail: a status endpoint that raises answers 500, schemathesis flags it."""
    assert agent.agent is not None
    real, real_json = agent.agent.status, agent.agent.status_json

    def broken() -> Any:
        raise RuntimeError("injected")

    async def broken_json() -> str:
        raise RuntimeError("injected")

    def inject() -> None:  # the endpoint builds the document with status_json (in steps)
        agent.agent.status = broken
        agent.agent.status_json = broken_json

    def restore() -> None:
        agent.agent.status = real
        agent.agent.status_json = real_json

    agent.call(inject)
    try:
        case = token_schema["/api/v1/status"]["GET"].Case()
        with pytest.raises(FailureGroup) as info:
            case.call_and_validate(base_url=agent.base_url, timeout=TIMEOUT)
        assert any(isinstance(e, ServerError) for e in info.value.exceptions)
    finally:
        agent.call(restore)


def test_the_agent_kept_routing(agent: LiveAgent, tmp_path: Path) -> None:
    """After the whole run: undrain, and the fake speaker holds the VIPs again."""
    import requests

    for path in ("/api/v1/undrain", "/api/v1/services/web/undrain", "/api/v1/services/dns/undrain"):
        r = requests.post(
            agent.base_url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=TIMEOUT
        )
        assert r.status_code == 200, r.text
    assert requests.get(agent.base_url + "/healthz", timeout=TIMEOUT).json() == {"ok": True}
    wanted_vips = {"10.99.0.1", "10.99.0.2"}

    def announced() -> set[str]:
        assert agent.speaker is not None
        return {
            str(r.prefix.network_address) for rs in agent.speaker.advertised().values() for r in rs
        }

    import time

    deadline = time.monotonic() + 30
    while agent.call(announced) != wanted_vips:
        assert time.monotonic() < deadline, agent.call(announced)
        time.sleep(0.05)
