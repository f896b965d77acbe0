"""Pure: a service's health verdict from its checks' states (policy.py decides with it).

A service check that never came up is *starting*, one that went down *failed*; in pool mode
the node waits until every real-server check has settled; in ipvs mode fewer than
``min_healthy`` real servers up withdraws (or is still *starting* if none has had a verdict).
"""

from __future__ import annotations

from .config import ServiceConfig
from .health.targets import real_server_target
from .health.tracker import CheckKey, CheckState, HealthSnapshot
from .model import CheckStatus, Reason, ServiceMode


def never_up(state: CheckState | None) -> bool:
    return state is None or (state.status is not CheckStatus.UP and state.changed_at is None)


def is_up(state: CheckState | None) -> bool:
    return state is not None and state.status is CheckStatus.UP


def service_health(svc: ServiceConfig, states: HealthSnapshot) -> tuple[Reason, str]:
    failed: list[str] = []
    starting: list[str] = []
    for check in svc.checks:
        state = states.get(CheckKey(svc.name, None, check.label))
        if never_up(state):
            starting.append(check.label)
        elif not is_up(state):
            failed.append(check.label)
    if failed:
        return Reason.CHECK_FAILED, ", ".join(failed)
    if starting:
        return Reason.STARTING, ", ".join(starting)
    if svc.preserve_connections:
        unsettled = unsettled_checks(svc, states)
        if unsettled:
            return Reason.POOL_SETTLING, (
                f"{len(unsettled)} real-server checks not settled yet "
                f"(pool mode waits for all): {', '.join(unsettled[:3])}"
            )
    if svc.mode is ServiceMode.IPVS and svc.real_servers:
        up = 0
        all_new = True
        for rs in svc.real_servers:
            rs_states = [
                states.get(CheckKey(svc.name, real_server_target(svc, rs), c.label))
                for c in rs.checks
            ]
            if all(is_up(s) for s in rs_states):
                up += 1 if rs.weight > 0 else 0
            elif not all(never_up(s) for s in rs_states if not is_up(s)):
                all_new = False
        if up < svc.min_healthy:
            reason = Reason.STARTING if all_new else Reason.BELOW_MIN_HEALTHY
            return reason, f"{up}/{len(svc.real_servers)} real servers up (min {svc.min_healthy})"
    return Reason.HEALTHY, ""


def unsettled_checks(svc: ServiceConfig, states: HealthSnapshot) -> list[str]:
    """Real-server checks still in their initial state: no rise/fall decision yet (never
    changed, and fewer than ``fall`` failures in a row). A pool-mode node announces only when
    there are none, so its weights, hence its Maglev table, equal the other nodes'."""
    out: list[str] = []
    for rs in svc.real_servers:
        target = real_server_target(svc, rs)
        for check in rs.checks:
            state = states.get(CheckKey(svc.name, target, check.label))
            settled = state is not None and (
                state.changed_at is not None
                or state.status is CheckStatus.UP
                or state.failures >= check.fall
            )
            if not settled:
                out.append(f"{target}/{check.label}")
    return out
