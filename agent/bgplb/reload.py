"""A reload prepared before anything switches: ``Agent.reload`` then commits it all or nothing.

:func:`prepare_reload` loads and validates the new file, runs the host checks the agent runs at
start, reads the peers' MD5 secret files (and registers them, and the API token, for log
redaction: a rotated secret is redacted from the reload on), renders the speaker's config
without writing it and, for a ``probe`` reload, probes every changed or new check once. Any
problem raises :class:`ReloadRefused`; nothing here changes the running agent.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import Config, ConfigError, ConfigIssue
from .config.offloop import load_config_async
from .cooperative import Steps, run_cooperatively, run_to_end
from .health.checks import Prober
from .health.runner import BACKSTOP
from .health.targets import ResolvedCheck, resolve_checks
from .health.tracker import CheckKey
from .logs import log_event, register_secret
from .metrics import Metrics
from .status import FailedCheck, ReloadResult, ReloadStatus

log = logging.getLogger("bgplb.agent")  # the agent's events

PROBE_CONCURRENCY = 64  # probes of a probe reload in flight at once
PROBE_BUDGET = 20.0  # seconds for all of them (the API waits 30 s for a reload)
SOCKET_PATH_MAX = 100  # bytes of a unix socket path (the speaker's relay socket)

HostIssues = Callable[[Config], Awaitable[list[ConfigIssue]]]


class ReloadRefused(Exception):
    """The new config cannot be committed; ``errors`` say why."""

    def __init__(
        self, errors: Sequence[str], failed: Sequence[FailedCheck] = (), probed: int = 0
    ) -> None:
        super().__init__("; ".join(errors))
        self.errors = list(errors)
        self.failed = list(failed)
        self.probed = probed


@dataclass(frozen=True)
class PreparedReload:
    config: Config
    changed_services: list[str]
    checks: Mapping[CheckKey, ResolvedCheck]  # resolve_checks(config): the switch uses them
    probed_checks: int = 0


def changed_services(old: Config, new: Config) -> list[str]:
    """Services added or changed, then services removed (a renamed one is both). Linear: one
    name index per side (``Config.service`` per name was 0.3 s on the loop at 1,000)."""
    return run_to_end(changed_services_steps(old, new))


def changed_services_steps(old: Config, new: Config) -> Steps[list[str]]:
    """:func:`changed_services` as steps (a deep comparison per service: ~7-10 ms at 1,000
    in one go; cooperative.py)."""
    before = {s.name: s for s in old.services}
    after = {s.name: s for s in new.services}
    changed = []
    for svc in new.services:
        yield
        if before.get(svc.name) != svc:
            changed.append(svc.name)
    return sorted(changed) + sorted(s.name for s in old.services if s.name not in after)


def changed_checks(
    current: Mapping[CheckKey, ResolvedCheck], new: Mapping[CheckKey, ResolvedCheck]
) -> list[ResolvedCheck]:
    """The new config's checks that are new or differ in any field (target or timing)."""
    return [spec for key, spec in new.items() if current.get(key) != spec]


async def prepare_reload(
    path: Path,
    current: Config,
    current_checks: Mapping[CheckKey, ResolvedCheck],
    prober: Prober,
    *,
    host_issues: HostIssues | None = None,
    probe: bool = False,
    adjust: Callable[[Config], Config] | None = None,
) -> PreparedReload:
    try:
        new = await load_config_async(path)  # parsed off the event loop
    except ConfigError as err:
        raise ReloadRefused([str(e) for e in err.errors]) from None
    if adjust is not None:  # the Go command line's flags (gocompat.adjust_config)
        new = adjust(new)
    if host_issues is not None:
        try:
            issues = await host_issues(new)
        except OSError as exc:
            issues = [ConfigIssue("", f"cannot list the host's links: {exc}")]
        if issues:
            raise ReloadRefused([str(i) for i in issues])
    # Each piece below is a few ms at 1,000 services: a turn of the loop between them keeps
    # the loop lag down (issue 13 item 8); the switch itself (agent.py) is what is left.
    secrets = speaker_secrets(new)
    for secret in secrets:
        register_secret(secret)
    await asyncio.sleep(0)
    checks = resolve_checks(new)
    await asyncio.sleep(0)
    probed = 0
    if probe:
        specs = changed_checks(current_checks, checks)
        probed = len(specs)
        failed = await probe_checks(specs, prober)
        if failed:
            errors = [f"{len(failed)} of {probed} changed check(s) failed their probe"]
            raise ReloadRefused(errors, failed, probed)
    changed = await run_cooperatively(changed_services_steps(current, new))
    return PreparedReload(new, changed, checks, probed)


def speaker_secrets(config: Config) -> list[str]:
    """The MD5 secrets of ``config``'s peers, after rendering the speaker's config with them
    (not written): what ``speaker.reconfigure`` would fail on is found before anything
    switches."""
    from .bgp import render
    from .bgp.exabgp import SOCKET_NAME

    socket = config.node.runtime_dir / SOCKET_NAME
    if len(str(socket)) > SOCKET_PATH_MAX:
        raise ReloadRefused([f"node.runtime_dir: too long for a unix socket: {socket}"])
    try:
        secrets = render.read_secrets(config)
        render.render(config, [sys.executable, "-m", "bgplb.bgp.relay", str(socket)], secrets)
    except ValueError as exc:  # RenderError, or a secret that is not UTF-8
        raise ReloadRefused([f"peers: {exc}"]) from None
    return sorted(set(secrets.values()))


async def probe_checks(
    specs: Sequence[ResolvedCheck],
    prober: Prober,
    *,
    concurrency: int = PROBE_CONCURRENCY,
    budget: float = PROBE_BUDGET,
) -> list[FailedCheck]:
    """Probe each check once (``concurrency`` at a time, each bounded by its timeout, all by
    ``budget``); the failures, in config order. A check not probed in time has failed."""
    gate = asyncio.Semaphore(concurrency)

    async def one(spec: ResolvedCheck) -> str | None:
        async with gate:
            try:
                async with asyncio.timeout(spec.timeout + BACKSTOP):
                    return await prober.probe(spec)
            except TimeoutError:
                return f"timeout after {spec.timeout:g}s (prober overran)"
            except Exception as exc:
                return f"probe crashed: {type(exc).__name__}: {exc}"

    tasks = [asyncio.create_task(one(s), name=f"reload probe {s.key}") for s in specs]
    if not tasks:
        return []
    done, pending = await asyncio.wait(tasks, timeout=budget)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    failed = []
    for spec, task in zip(specs, tasks, strict=True):
        error = task.result() if task in done else f"not probed within {budget:g}s"
        if error is not None:
            failed.append(FailedCheck(check=str(spec.key), error=error))
    return failed


def reload_outcome(result: ReloadResult, metrics: Metrics, wall: float) -> ReloadStatus:
    """A reload ended (committed or refused): its metric, its log line, its status."""
    metrics.config_reloaded(result.ok, wall)
    if result.ok:
        log_event(
            log,
            "config_reloaded",
            changed_services=result.changed_services,
            probed_checks=result.probed_checks,
        )
    else:
        failed = [f"{f.check}: {f.error}" for f in result.failed_checks]
        log_event(
            log,
            "config_reload_failed",
            level=logging.ERROR,
            errors=result.errors,
            failed_checks=failed,
        )
    return ReloadStatus(ok=result.ok, at=wall, errors=result.errors)
