"""Reloads on the whole agent (fakes, fake clock): what a reload keeps, the probe guard, all or
nothing, the SIGHUP path and secrets (issue 13, items 1, 5 and 9)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from bgplb import logs
from bgplb.agent import _install_signals
from bgplb.bgp.fake import FakeSpeaker
from bgplb.config import Config
from bgplb.health.targets import ResolvedCheck
from bgplb.model import Decision, Reason
from bgplb.reload import probe_checks
from bgplb.status import ReloadResult

from .fixtures import EBGP_PEER, ebgp_peer, ipvs_service, port, real_server, tcp_check
from .test_agent import VIP, Harness, raw_config, write

WEB_CHECK = {"interval": 1.0, "fast_interval": 0.5, "timeout": 0.5, "rise": 2, "fall": 3}


class PortProber:
    """Fails every probe of a tcp check whose port is in ``dead``; counts probes by check."""

    def __init__(self) -> None:
        self.dead: set[int] = set()
        self.probes: dict[str, list[float]] = {}
        self.failures: dict[str, int] = {}
        self.now = lambda: 0.0

    async def probe(self, target: ResolvedCheck) -> str | None:
        self.probes.setdefault(str(target.key), []).append(self.now())
        if target.port in self.dead:
            self.failures[str(target.key)] = self.failures.get(str(target.key), 0) + 1
            return "connect: Connection refused"
        return None


def web_raw(tmp_path: Path, **check: Any) -> dict[str, Any]:
    raw = raw_config(tmp_path)
    raw["services"][0]["checks"] = [tcp_check("tcp", **{**WEB_CHECK, **check})]
    return raw


async def started(tmp_path: Path, **agent_kw: Any) -> Harness:
    h = Harness(tmp_path, web_raw(tmp_path), **agent_kw)
    prober = PortProber()
    prober.now = h.clock.now
    h.prober = prober  # type: ignore[assignment]
    h.agent = h.new_agent()
    await h.start()
    await h.until(lambda: VIP in h.announced())
    await h.clock.advance(3.0)
    return h


def prober(h: Harness) -> PortProber:
    assert isinstance(h.prober, PortProber)
    return h.prober


def reload_success(h: Harness) -> str:
    text = h.agent.metrics.exposition().decode()
    line = next(x for x in text.splitlines() if x.startswith("bgplb_config_reload_success "))
    return line.split()[1]


async def never_withdrawn(h: Harness, seconds: float) -> None:
    """Sample the announced set at every fake-time step of a pass (50 ms)."""
    for _ in range(int(seconds / 0.05)):
        await h.clock.advance(0.05)
        assert VIP in h.announced(), f"web withdrawn at {h.clock.now()}"


def vip_always_in_set_routes(h: Harness, mark: int) -> None:
    for e in h.log.events[mark:]:
        if e.kind == "set_routes":
            routes = e.detail.get(EBGP_PEER, ())
            assert any(r.prefix.network_address == VIP for r in routes), e


# --------------------------------------------------------------------------- item 1


async def test_timing_change_of_a_healthy_service_never_withdraws_it(tmp_path: Path) -> None:
    """The defect: interval/timeout changed -> the check restarted DOWN -> withdraw."""
    h = await started(tmp_path)
    write(h.path, web_raw(tmp_path, interval=0.5, timeout=0.3, fast_interval=0.2, rise=3, fall=2))
    mark = len(h.log.events)
    result = await h.agent.reload()
    assert result.ok
    assert result.changed_services == ["web"]
    await never_withdrawn(h, 5.0)
    vip_always_in_set_routes(h, mark)
    assert h.decision("web") == (Decision.ANNOUNCE, Reason.HEALTHY)
    status = h.agent.status()
    assert status.last_reload is not None
    assert status.last_reload.ok
    assert reload_success(h) == "1.0"
    await h.stop()


async def test_target_change_keeps_the_route_until_fall_failures(tmp_path: Path) -> None:
    h = await started(tmp_path)
    prober(h).dead.add(81)
    write(h.path, web_raw(tmp_path, port=81))
    key = "web/tcp"
    before = len(prober(h).probes[key])
    reloaded_at = h.clock.now()
    assert (await h.agent.reload()).ok
    withdrawn_at = None
    while withdrawn_at is None:
        await h.clock.advance(0.05)
        if VIP not in h.announced():
            withdrawn_at = h.clock.now()
        assert h.clock.now() - reloaded_at < 5.0, "never withdrawn"
    probes = prober(h).probes[key][before:]
    assert probes[0] - reloaded_at < 0.1  # probed at once
    assert prober(h).failures[key] == 3  # went down after exactly `fall` failures
    assert probes[1] - probes[0] == pytest.approx(0.5)  # at the fast interval
    assert withdrawn_at >= probes[2]
    assert h.decision("web") == (Decision.WITHDRAW, Reason.CHECK_FAILED)
    await h.stop()


async def test_a_target_change_that_passes_never_withdraws(tmp_path: Path) -> None:
    h = await started(tmp_path)
    write(h.path, web_raw(tmp_path, port=81))
    mark = len(h.log.events)
    assert (await h.agent.reload()).ok
    await never_withdrawn(h, 5.0)
    vip_always_in_set_routes(h, mark)
    await h.stop()


async def test_a_renamed_service_is_a_new_service(tmp_path: Path) -> None:
    h = await started(tmp_path)
    raw = web_raw(tmp_path)
    raw["services"][0]["name"] = "www"
    write(h.path, raw)
    result = await h.agent.reload()
    assert result.changed_services == ["www", "web"]
    await h.clock.advance(0.2)
    assert VIP not in h.announced()
    assert h.decision("www") == (Decision.WITHDRAW, Reason.STARTING)
    await h.until(lambda: VIP in h.announced(), limit=5.0)
    await h.stop()


# --------------------------------------------------------------------------- the probe guard


async def test_probe_reload_refuses_a_config_whose_changed_check_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = await started(tmp_path)
    prober(h).dead.add(81)
    before, specs = h.agent.config, dict(h.agent.health.specs())
    write(h.path, web_raw(tmp_path, port=81))
    caplog.clear()
    result = await h.agent.reload(probe=True)
    assert not result.ok
    assert result.probed_checks == 1
    assert [(f.check, f.error) for f in result.failed_checks] == [
        ("web/tcp", "connect: Connection refused")
    ]
    assert h.agent.config is before  # nothing switched
    assert dict(h.agent.health.specs()) == specs
    assert reload_success(h) == "0.0"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].getMessage() == "config_reload_failed"
    assert errors[0].exc_info is None
    status = h.agent.status().last_reload
    assert status is not None
    assert not status.ok
    assert status.errors == result.errors
    await never_withdrawn(h, 3.0)
    await h.stop()


async def test_probe_reload_probes_only_changed_checks_then_commits(tmp_path: Path) -> None:
    h = await started(tmp_path)
    raw = web_raw(tmp_path)
    raw["services"][1]["checks"] = [tcp_check("tcp", **WEB_CHECK)]  # api: a new check
    write(h.path, raw)
    assert (await h.agent.reload()).ok
    await h.clock.advance(5.0)
    raw["services"][1]["checks"] = [tcp_check("tcp", **{**WEB_CHECK, "port": 444})]
    write(h.path, raw)
    counts = {k: len(v) for k, v in prober(h).probes.items()}
    result = await h.agent.reload(probe=True)
    assert result.ok
    assert result.probed_checks == 1
    # probed by the guard (and, the target having changed, by the runner at once)
    assert len(prober(h).probes["api/tcp"]) > counts["api/tcp"]
    assert len(prober(h).probes["web/tcp"]) == counts["web/tcp"]  # unchanged: not probed
    assert h.agent.config.service("api") is not None
    await h.stop()


async def test_probe_budget_bounds_the_total_time() -> None:
    class Stuck:
        async def probe(self, target: ResolvedCheck) -> str | None:
            await asyncio.Event().wait()
            return None

    class Crashing:
        async def probe(self, target: ResolvedCheck) -> str | None:
            raise ValueError("bug")

    from bgplb.config import TcpCheck
    from bgplb.health.tracker import CheckKey

    check = TcpCheck(type="tcp", timeout=30.0, interval=60.0)
    specs = [
        ResolvedCheck(CheckKey("web", None, f"c{i}"), check, ipaddress.ip_address("127.0.0.1"), 1)
        for i in range(3)
    ]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    failed = await probe_checks(specs, Stuck(), budget=0.2)
    assert loop.time() - t0 < 1.0
    assert [f.error for f in failed] == ["not probed within 0.2s"] * 3
    failed = await probe_checks(specs[:1], Crashing())
    assert failed[0].error == "probe crashed: ValueError: bug"


# --------------------------------------------------------------------------- item 5: atomic


class FailingSpeaker(FakeSpeaker):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.fail_reconfigure = 0
        self.reconfigured: list[Config] = []

    async def reconfigure(self, config: Config) -> None:
        self.reconfigured.append(config)
        if self.fail_reconfigure > 0:
            self.fail_reconfigure -= 1
            raise RuntimeError("exabgp refused the reload")
        await super().reconfigure(config)


async def test_a_failed_speaker_reconfigure_leaves_the_old_config_in_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(tmp_path, web_raw(tmp_path))
    h.speaker = FailingSpeaker(h.log)
    h.agent = h.new_agent()
    await h.start()
    await h.until(lambda: VIP in h.announced())
    before = h.agent.config
    specs = dict(h.agent.health.specs())
    raw = web_raw(tmp_path, interval=2.0)
    raw["peers"].append(ebgp_peer("10.0.0.3", asn=65003))
    raw["services"].append(ipvs_service("new", vips=("10.99.0.3",), ports=(53,)))
    write(h.path, raw)
    h.speaker.fail_reconfigure = 1
    caplog.clear()
    result = await h.agent.reload()
    assert not result.ok
    assert result.errors == ["speaker: exabgp refused the reload"]
    assert h.agent.config is before
    assert dict(h.agent.health.specs()) == specs  # health did not switch
    assert h.speaker.reconfigured[-1] is before  # the speaker is back on the old peers
    assert set(h.speaker.states) == {p.key for p in before.peers}
    await h.clock.advance(2.0)
    assert h.agent.reconciler.last is not None
    assert "new" not in h.agent.reconciler.last.decisions  # nor the reconciler
    assert reload_success(h) == "0.0"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["config_reload_failed"]
    status = h.agent.status().last_reload
    assert status is not None
    assert not status.ok
    assert "exabgp refused" in status.errors[0]
    # the next reload of the same file succeeds and switches everything
    assert (await h.agent.reload()).ok
    assert h.agent.config.service("new") is not None
    await h.stop()


@pytest.mark.parametrize("how", ["deleted", "directory", "garbage"])
async def test_a_deleted_or_unreadable_file_is_a_clean_failed_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    h = await started(tmp_path)
    before = h.agent.config
    h.path.unlink()
    if how == "directory":
        h.path.mkdir()
    elif how == "garbage":
        h.path.write_bytes(b"\xff\xfe\x00")
    caplog.clear()
    result = await h.agent.reload()
    assert not result.ok
    assert result.errors
    assert h.agent.config is before
    assert all(r.exc_info is None for r in caplog.records)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "config_reload_failed"
    ]
    assert reload_success(h) == "0.0"
    await never_withdrawn(h, 2.0)
    await h.stop()


async def test_sighup_storm_is_serialized_and_a_crash_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = await started(tmp_path)
    running = 0
    most = 0
    calls = 0
    finished = 0
    gate = asyncio.Event()
    real = h.agent._reload

    async def slow(probe: bool) -> ReloadResult:
        nonlocal running, most, calls, finished
        running += 1
        calls += 1
        most = max(most, running)
        await gate.wait()
        try:
            return await real(probe)  # parses in a child process: real time, not the clock
        finally:
            running -= 1
            finished += 1

    h.agent._reload = slow  # type: ignore[method-assign]
    _install_signals(h.agent)
    loop = asyncio.get_running_loop()
    try:
        for _ in range(10):
            os.kill(os.getpid(), signal.SIGHUP)
            await asyncio.sleep(0.01)
        gate.set()
        await h.clock.advance(1.0)
        async with asyncio.timeout(60):
            while finished < calls or calls < 2:  # noqa: ASYNC110 - reloads in a child process
                await asyncio.sleep(0.05)
        for _ in range(20):  # a third reload, if one was wrongly queued, would start now
            await asyncio.sleep(0.01)
        assert most == 1  # serialized
        assert calls == 2  # one ran, one queued behind it; the rest were redundant

        async def crash(probe: bool = False) -> ReloadResult:
            raise RuntimeError("reload bug")

        h.agent.reload = crash  # type: ignore[method-assign]
        caplog.clear()
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(20):
            await asyncio.sleep(0.01)
        crashed = [r for r in caplog.records if r.getMessage() == "config_reload_crashed"]
        assert len(crashed) == 1
        assert "reload bug" in crashed[0].__dict__["error"]
    finally:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    await h.stop()


async def test_a_reload_abandoned_by_its_caller_still_completes(tmp_path: Path) -> None:
    h = await started(tmp_path)
    raw = web_raw(tmp_path)
    raw["services"].append(ipvs_service("new", vips=("10.99.0.3",), ports=(53,)))
    write(h.path, raw)
    task = asyncio.create_task(h.agent.reload())
    await asyncio.sleep(0)
    task.cancel()
    async with asyncio.timeout(60):  # the file is parsed in a child process: real time
        while h.agent.last_reload is None:  # noqa: ASYNC110 - a child process parses
            await asyncio.sleep(0.05)
    assert h.agent.config.service("new") is not None
    assert h.agent.last_reload is not None
    assert h.agent.last_reload.ok
    await h.stop()


# --------------------------------------------------------------------------- item 9: secrets


async def test_a_new_md5_secret_is_redacted_after_reload(tmp_path: Path) -> None:
    secret_file = tmp_path / "md5"
    secret_file.write_text("old-md5-secret\n")
    secret_file.chmod(0o600)
    raw = web_raw(tmp_path)
    raw["peers"][0]["md5_password_file"] = str(secret_file)
    h = Harness(tmp_path, raw)
    logs.clear_secrets()
    await h.start()
    assert logs.redact("key old-md5-secret") == "key ***"
    secret_file.write_text("rotated-md5-secret\n")
    raw["peers"][0]["hold_time"] = 30  # the peer changed: the speaker is reconfigured
    write(h.path, raw)
    assert (await h.agent.reload()).ok
    assert logs.redact("key rotated-md5-secret") == "key ***"
    await h.stop()
    logs.clear_secrets()


async def test_an_unreadable_md5_file_refuses_the_reload(tmp_path: Path) -> None:
    h = await started(tmp_path)
    before = h.agent.config
    raw = web_raw(tmp_path)
    raw["peers"][0]["md5_password_file"] = str(tmp_path / "missing")
    write(h.path, raw)
    result = await h.agent.reload()
    assert not result.ok
    assert "md5_password_file" in result.errors[0]
    assert h.agent.config is before
    await h.stop()


async def test_a_changed_target_port_of_real_servers_never_withdraws(tmp_path: Path) -> None:
    """The service's target port changed: every real server's checks get a new key (their
    ``address:port``); they are target changes of the old ones, not new DOWN checks."""

    def raw_with(target_port: int) -> dict[str, Any]:
        raw = raw_config(tmp_path)
        servers = [
            real_server(a, checks=[tcp_check("tcp", **WEB_CHECK)])
            for a in ("192.0.2.10", "192.0.2.11")
        ]
        raw["services"][0] = ipvs_service(
            "web",
            vips=(str(VIP),),
            ports=[port(80, target_port=target_port)],
            real_servers=servers,
        )
        return raw

    h = Harness(tmp_path, raw_with(8080))
    h.agent = h.new_agent()
    await h.start()
    await h.until(lambda: VIP in h.announced())
    await h.clock.advance(3.0)
    write(h.path, raw_with(8081))
    mark = len(h.log.events)
    assert (await h.agent.reload()).ok
    await never_withdrawn(h, 4.0)
    vip_always_in_set_routes(h, mark)
    targets = {k.target for k in h.agent.health.snapshot()}
    assert targets == {"192.0.2.10:8081", "192.0.2.11:8081"}
    await h.stop()
