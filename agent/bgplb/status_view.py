"""Builds the API status from the agent's live parts: config, health, decisions, peers.

The parts come through :class:`StatusSource` (the agent is one), so this module does not
import the agent (which imports it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from . import __version__
from .bfd.base import Bfd, BfdSession
from .bgp.base import Speaker
from .clock import Clock
from .config import Config, ServiceConfig
from .cooperative import Steps, run_to_end
from .dataplane.prereq import Prerequisite
from .gocompat import GoFlags
from .health.tracker import CheckKey, CheckState
from .linkbw import VipBandwidth, VipKey, bandwidth_bytes
from .model import (
    CheckStatus,
    Decision,
    IPAddress,
    ObservedDataplane,
    PeerKey,
    PeerState,
    PeerStatus,
    RealServerSpec,
    Reason,
    RouteSet,
)
from .policy import ServiceDecision
from .pool import PoolView
from .reconciler import AdminSource, HealthSource, PassResult
from .statefile import FileHealth
from .status import (
    CheckStatusModel,
    GoFlagsStatus,
    KernelKnobStatus,
    NodeStatus,
    PeerStatusModel,
    PoolTableStatus,
    PrerequisiteStatus,
    ProcessStatus,
    RealServerStatus,
    ReloadStatus,
    ServiceStatus,
    StateFileStatus,
    StatusResponse,
    VipBandwidthStatus,
)
from .traffic import inbound_rates


class PassSource(Protocol):
    @property
    def last(self) -> PassResult | None: ...


class AdminView(AdminSource, Protocol):
    """``admin.AdminStore`` as the status reads it."""

    persisted: bool  # False: a drain/undrain in force is not yet on disk
    fail_safe: str | None  # why the agent drained the node itself


class ApiTokenLike(Protocol):
    """``api.ApiToken`` (api.py is imported only when serving)."""

    health: FileHealth
    value: bytes | None
    disabled: str  # why the mutating endpoints are disabled (when ``value`` is None)

    def load(self, path: Path | None) -> str | None: ...


class StatusSource(Protocol):
    """What the status is built from (``agent.Agent`` has these)."""

    @property
    def clock(self) -> Clock: ...
    @property
    def config(self) -> Config: ...
    @property
    def reconciler(self) -> PassSource: ...
    @property
    def admin(self) -> AdminView: ...
    @property
    def health(self) -> HealthSource: ...
    @property
    def speaker(self) -> Speaker: ...
    @property
    def bfd(self) -> Bfd | None: ...
    @property
    def started_at(self) -> float: ...
    @property
    def image_version(self) -> str: ...
    @property
    def prerequisites(self) -> Sequence[Prerequisite]: ...
    @property
    def api_token(self) -> ApiTokenLike | None: ...
    @property
    def last_reload(self) -> ReloadStatus | None: ...
    @property
    def go_flags(self) -> GoFlags | None: ...
    def ready(self) -> bool: ...
    def state_files(self) -> Mapping[str, FileHealth]: ...


def build_status(agent: StatusSource) -> StatusResponse:
    return run_to_end(status_steps(agent))


def status_steps(agent: StatusSource) -> Steps[StatusResponse]:
    """``build_status`` as a generator that yields after each service (status_document.py
    runs it with the loop getting a turn every ~2 ms). Every input is read before the first
    yield: the document is one moment's state even if a pass or a reload runs meanwhile."""
    clock = agent.clock
    now, wall = clock.now(), clock.wall()
    config = agent.config
    last = agent.reconciler.last
    decisions: Mapping[str, ServiceDecision] = last.decisions if last else {}
    admin = agent.admin.state
    snapshot = agent.health.snapshot()
    advertised = agent.speaker.advertised()
    node = NodeStatus(
        router_id=config.node.router_id,
        local_as=config.node.local_as,
        version=__version__,
        image_version=agent.image_version,
        ready=agent.ready(),
        drained=admin.node_drained_at is not None,
        uptime=max(0.0, now - agent.started_at),
        admin_persisted=agent.admin.persisted,
        drain_reason=agent.admin.fail_safe if admin.node_drained_at is not None else None,
        mutating_api=_mutating_api(agent),
        go_flags=_go_flags(agent.go_flags),
    )
    head = StatusResponse(
        node=node,
        peers=_peers(
            config,
            agent.speaker.peers(),
            advertised,
            agent.bfd.sessions() if agent.bfd is not None else {},
            last.held if last else {},
        ),
        prerequisites=[
            PrerequisiteStatus(name=p.name, ok=p.ok, detail=p.detail, fix=p.fix)
            for p in agent.prerequisites
        ],
        state_files=[
            StateFileStatus(
                file=name,
                path=str(h.path) if h.path is not None else None,
                ok=h.problem is None,
                problem=h.problem,
                errors=h.errors,
            )
            for name, h in agent.state_files().items()
        ],
        processes=_processes(agent.speaker),
        kernel_knobs=_kernel_knobs(agent),
        last_reload=agent.last_reload,
    )
    yield  # every input is read; the rest works on those snapshots (immutable)
    # grouped once: per service, each lookup below is then O(own items), not O(all)
    checks = _by_service(snapshot)
    yield
    routes = _routes_by_service(advertised)
    yield
    real_servers = _real_servers_by_vip(last.observed if last else None)
    counters = last.observed.service_counters if last else {}
    yield
    services: list[ServiceStatus] = []
    for svc in config.services:
        services.append(
            _service(
                svc,
                decisions.get(svc.name),
                checks.get(svc.name, []),
                routes.get(svc.name, {}),
                real_servers,
                inbound_rates(svc, counters),
                peers=[p.key for p in config.service_peers(svc)],
                pools=last.pools if last else (),
                drained=svc.name in admin.drained,
                wall_offset=wall - now,
                bandwidth=_bandwidth(svc, last.bandwidth if last else {}, now),
            )
        )
        yield
    return head.model_copy(update={"services": services})


def _kernel_knobs(agent: StatusSource) -> list[KernelKnobStatus]:
    keeper = getattr(agent, "knobs", None)  # knobkeeper.KnobKeeper (None: not kept)
    if keeper is None:
        return []
    return [
        KernelKnobStatus(knob=k.knob, want=k.want, got=k.got, ok=k.ok, error=k.error)
        for k in keeper.states()
    ]


def _go_flags(flags: GoFlags | None) -> GoFlagsStatus | None:
    if flags is None:
        return None
    return GoFlagsStatus(
        config=os.path.abspath(flags.config),
        network_setup=flags.network_setup,
        ipvs_setup=flags.ipvs_setup,
        metrics_address=flags.metrics_address,
        log_level=flags.log_level,
    )


def _mutating_api(agent: StatusSource) -> str | None:
    token = agent.api_token
    if token is None:
        return None  # not serving (tests): nothing to say
    return None if token.value is not None else token.disabled


def _by_service(
    snapshot: Mapping[CheckKey, CheckState],
) -> dict[str, list[tuple[CheckKey, CheckState]]]:
    out: dict[str, list[tuple[CheckKey, CheckState]]] = {}
    for key, state in sorted(snapshot.items()):
        out.setdefault(key.service, []).append((key, state))
    return out


def _routes_by_service(advertised: RouteSet) -> dict[str, dict[PeerKey, list[str]]]:
    """Per service, per peer (in peer order), the sorted prefixes advertised."""
    out: dict[str, dict[PeerKey, list[str]]] = {}
    for peer, rs in sorted(advertised.items()):
        for r in rs:
            if r.service:
                out.setdefault(r.service, {}).setdefault(peer, []).append(str(r.prefix))
    for per_peer in out.values():
        for prefixes in per_peer.values():
            prefixes.sort()
    return out


RealServersByVip = dict[IPAddress, list[RealServerSpec]]


def _real_servers_by_vip(observed: ObservedDataplane | None) -> RealServersByVip | None:
    if observed is None:
        return None
    out: RealServersByVip = {}
    for rs in sorted(observed.owned.real_servers, key=lambda r: str(r.key)):  # v4 + v6 mix
        out.setdefault(rs.key.service.vip, []).append(rs)
    return out


def _service(
    svc: ServiceConfig,
    decision: ServiceDecision | None,
    snapshot: Sequence[tuple[CheckKey, CheckState]],
    routes: Mapping[PeerKey, list[str]],
    real_servers: RealServersByVip | None,
    rates: dict[str, int],
    *,
    peers: list[str],
    pools: Sequence[PoolView] = (),
    drained: bool,
    wall_offset: float,
    bandwidth: list[VipBandwidthStatus],
) -> ServiceStatus:
    checks = [_check(key, state, wall_offset) for key, state in snapshot]
    return ServiceStatus(
        name=svc.name,
        mode=svc.mode,
        decision=decision.decision if decision else Decision.WITHDRAW,
        reason=decision.reason if decision else Reason.STARTING,
        detail=decision.detail if decision else "",
        vips=list(svc.vips),
        drained=drained,
        checks=checks,
        real_servers=_real_servers(svc, real_servers, checks),
        routes=dict(routes),
        peers=peers,
        inbound_packets_per_second=rates,
        pool_tables=[
            PoolTableStatus(
                vip=v.key.vip,
                port=v.key.port,
                protocol=str(v.key.protocol),
                order_ok=v.order_ok,
                fingerprint=v.fingerprint,
            )
            for v in pools
            if v.service == svc.name
        ],
        link_bandwidth=bandwidth,
    )


def _bandwidth(
    svc: ServiceConfig, vips: Mapping[VipKey, VipBandwidth], now: float
) -> list[VipBandwidthStatus]:
    """UCMP per VIP of ``svc`` as the last pass left it (none without link_bandwidth)."""
    if svc.link_bandwidth is None:
        return []
    out = []
    for vip in svc.vips:
        bw = vips.get((svc.name, vip))
        if bw is None:  # no pass since the service (or the VIP) came
            continue
        out.append(
            VipBandwidthStatus(
                vip=vip,
                capacity=bw.capacity,
                announced_capacity=bw.held,
                bytes_per_second=bandwidth_bytes(svc, bw.held) if bw.held else None,
                change_in_seconds=max(0.0, bw.due - now) if bw.due is not None else None,
            )
        )
    return out


def _check(key: CheckKey, state: CheckState, wall_offset: float) -> CheckStatusModel:
    last = state.last
    return CheckStatusModel(
        check=key.check,
        target=key.target,
        status=state.status,
        last_ok=last.ok if last else None,
        last_latency_seconds=last.latency if last else None,
        last_error=last.error if last else None,
        last_time=last.time + wall_offset if last else None,
        successes=state.successes,
        failures=state.failures,
    )


def _real_servers(
    svc: ServiceConfig, by_vip: RealServersByVip | None, checks: Sequence[CheckStatusModel]
) -> list[RealServerStatus]:
    """Real servers as the kernel has them (weights), with their health from the checks."""
    if by_vip is None:
        return []
    mine = [rs for vip in dict.fromkeys(svc.vips) for rs in by_vip.get(vip, ())]
    down = {c.target for c in checks if c.target is not None and c.status is CheckStatus.DOWN}
    seen: dict[tuple[str, int], RealServerStatus] = {}
    for rs in sorted(mine, key=lambda r: str(r.key)):  # v4 + v6 mix, as before
        ident = (str(rs.key.address), rs.key.port)
        healthy = str(rs.key) not in down
        prev = seen.get(ident)
        weight = rs.weight if prev is None else min(prev.weight, rs.weight)
        seen[ident] = RealServerStatus(
            address=rs.key.address, port=rs.key.port, weight=weight, healthy=healthy
        )
    return list(seen.values())


def _peers(
    config: Config,
    states: Mapping[PeerKey, PeerStatus],
    advertised: RouteSet,
    bfd: Mapping[PeerKey, BfdSession],
    held: Mapping[PeerKey, str],
) -> list[PeerStatusModel]:
    out = []
    for peer in config.peers:
        st = states.get(peer.key)
        session = bfd.get(peer.key)
        out.append(
            PeerStatusModel(
                address=peer.key,
                name=peer.name,
                asn=peer.asn,
                type=peer.peer_type(config.node.local_as),
                state=st.state if st else PeerState.IDLE,
                reason=st.reason if st else "",
                routes_advertised=len(advertised.get(peer.key, ())),
                bfd=session.state if session is not None else None,
                bfd_detail=session.detail if session is not None else "",
                held=held.get(peer.key, ""),
            )
        )
    return out


def _processes(speaker: Speaker) -> list[ProcessStatus]:
    """ExaBGP's process, when the speaker says whether it runs (``running``; bfdd joins
    here once BFD exists: the doctor reads this list)."""
    running = getattr(speaker, "running", None)
    if not isinstance(running, bool):
        return []
    pid = getattr(speaker, "pid", None)
    return [
        ProcessStatus(
            name="exabgp",
            running=running,
            pid=pid if running and isinstance(pid, int) else None,
            restarts=speaker.restarts(),
        )
    ]
