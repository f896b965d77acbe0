"""Builds the API status from the agent's live parts: config, health, decisions, peers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from . import __version__
from .config import Config, ServiceConfig
from .health.tracker import CheckKey, CheckState
from .model import (
    CheckStatus,
    Decision,
    ObservedDataplane,
    PeerKey,
    PeerState,
    PeerStatus,
    Reason,
    RouteSet,
)
from .policy import ServiceDecision
from .status import (
    CheckStatusModel,
    NodeStatus,
    PeerStatusModel,
    PrerequisiteStatus,
    RealServerStatus,
    ServiceStatus,
    StatusResponse,
)

if TYPE_CHECKING:
    from .agent import Agent


def build_status(agent: Agent) -> StatusResponse:
    clock = agent.clock
    now, wall = clock.now(), clock.wall()
    config = agent.config
    last = agent.reconciler.last
    decisions: Mapping[str, ServiceDecision] = last.decisions if last else {}
    admin = agent.admin.state
    snapshot = agent.health.snapshot()
    advertised = agent.speaker.advertised()
    services = [
        _service(
            svc,
            decisions.get(svc.name),
            snapshot,
            advertised,
            last.observed if last else None,
            drained=svc.name in admin.drained,
            wall_offset=wall - now,
        )
        for svc in config.services
    ]
    node = NodeStatus(
        router_id=config.node.router_id,
        local_as=config.node.local_as,
        version=__version__,
        ready=agent.ready(),
        drained=admin.node_drained_at is not None,
        uptime=max(0.0, now - agent.started_at),
    )
    return StatusResponse(
        node=node,
        services=services,
        peers=_peers(config, agent.speaker.peers(), advertised),
        prerequisites=[
            PrerequisiteStatus(name=p.name, ok=p.ok, detail=p.detail, fix=p.fix)
            for p in agent.prerequisites
        ],
        last_reload=agent.last_reload,
    )


def _service(
    svc: ServiceConfig,
    decision: ServiceDecision | None,
    snapshot: Mapping[CheckKey, CheckState],
    advertised: RouteSet,
    observed: ObservedDataplane | None,
    *,
    drained: bool,
    wall_offset: float,
) -> ServiceStatus:
    checks = [
        _check(key, state, wall_offset)
        for key, state in sorted(snapshot.items())
        if key.service == svc.name
    ]
    routes = {
        peer: sorted(str(r.prefix) for r in rs if r.service == svc.name)
        for peer, rs in sorted(advertised.items())
    }
    return ServiceStatus(
        name=svc.name,
        mode=svc.mode,
        decision=decision.decision if decision else Decision.WITHDRAW,
        reason=decision.reason if decision else Reason.STARTING,
        detail=decision.detail if decision else "",
        vips=list(svc.vips),
        drained=drained,
        checks=checks,
        real_servers=_real_servers(svc, observed, checks),
        routes={peer: prefixes for peer, prefixes in routes.items() if prefixes},
    )


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
    svc: ServiceConfig, observed: ObservedDataplane | None, checks: Sequence[CheckStatusModel]
) -> list[RealServerStatus]:
    """Real servers as the kernel has them (weights), with their health from the checks."""
    if observed is None:
        return []
    vips = set(svc.vips)
    down = {c.target for c in checks if c.target is not None and c.status is CheckStatus.DOWN}
    seen: dict[tuple[str, int], RealServerStatus] = {}
    for rs in sorted(observed.owned.real_servers, key=lambda r: str(r.key)):  # v4 + v6 mix
        if rs.key.service.vip not in vips:
            continue
        ident = (str(rs.key.address), rs.key.port)
        healthy = str(rs.key) not in down
        prev = seen.get(ident)
        weight = rs.weight if prev is None else min(prev.weight, rs.weight)
        seen[ident] = RealServerStatus(
            address=rs.key.address, port=rs.key.port, weight=weight, healthy=healthy
        )
    return list(seen.values())


def _peers(
    config: Config, states: Mapping[PeerKey, PeerStatus], advertised: RouteSet
) -> list[PeerStatusModel]:
    out = []
    for peer in config.peers:
        st = states.get(peer.key)
        out.append(
            PeerStatusModel(
                address=peer.key,
                asn=peer.asn,
                type=peer.peer_type(config.node.local_as),
                state=st.state if st else PeerState.IDLE,
                reason=st.reason if st else "",
                routes_advertised=len(advertised.get(peer.key, ())),
            )
        )
    return out
