"""Rules that relate several fields or sections. Every rule runs; all problems are returned.

``check_config`` is pure (it runs inside :func:`bgplb.config.parse_config`);
``check_against_host`` compares the config with the host's links (the agent calls it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from typing import Literal

from ..model import ForwardMethod, PeerType, ServiceMode
from .bandwidth import link_bandwidth_issues
from .fields import GSHUT
from .issues import ConfigIssue
from .schema import AttributesConfig, Check, Config, PeerConfig, ServiceConfig

LOCAL_PREF_EBGP = "local_pref is not sent to eBGP peers (ExaBGP drops it; FRR ignores it)"


def check_config(config: Config) -> list[ConfigIssue]:
    """Every cross-field problem of an already field-validated config."""
    issues: list[ConfigIssue] = []
    for rule in (_node, _peers, _next_hops, _services_unique, _service_peers, _attributes):
        issues.extend(rule(config))
    for i, service in enumerate(config.services):
        p = f"services[{i}]"
        issues.extend(_mode(service, p))
        issues.extend(_ports(service, p))
        issues.extend(_backends(config, service, p))
        issues.extend(_checks(service, p))
        issues.extend(_pool(service, p))
        issues.extend(link_bandwidth_issues(service, p))
    return issues


def check_against_host(config: Config, link_kinds: Mapping[str, str]) -> list[ConfigIssue]:
    """Problems only the host can reveal. ``link_kinds``: link name -> kind ("dummy", "" ...)."""
    issues = []
    for i, s in enumerate(config.services):
        if s.mode is ServiceMode.IPVS and s.name in link_kinds and link_kinds[s.name] != "dummy":
            kind = link_kinds[s.name] or "non-dummy"
            issues.append(
                ConfigIssue(
                    f"services[{i}].name",
                    f"a {kind} link named {s.name!r} exists; the service name names the dummy "
                    "interface bgp-lb creates: rename the service",
                )
            )
        if s.mode is ServiceMode.ANNOUNCE and s.interface and s.interface not in link_kinds:
            issues.append(
                ConfigIssue(f"services[{i}].interface", f"no interface named {s.interface!r}")
            )
    return issues


# --------------------------------------------------------------------------- node and peers


def _node(config: Config) -> Iterator[ConfigIssue]:
    api = config.node.api
    if (api.metrics_listen is None) != (api.metrics_port is None):
        yield ConfigIssue(
            "node.api.metrics_listen" if api.metrics_listen is None else "node.api.metrics_port",
            "metrics_listen and metrics_port go together: set both or neither",
        )
    elif api.metrics_listen == api.listen and api.metrics_port == api.port:
        yield ConfigIssue("node.api.metrics_port", "same address and port as the API listener")


def _peers(config: Config) -> Iterator[ConfigIssue]:
    seen: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, int] = {}
    names: dict[str, int] = {}
    for i, peer in enumerate(config.peers):
        if peer.name is not None:
            if peer.name in names:
                yield ConfigIssue(
                    f"peers[{i}].name",
                    f"duplicate peer name {peer.name!r} (also peers[{names[peer.name]}])",
                )
            names.setdefault(peer.name, i)
        if peer.address in seen:
            yield ConfigIssue(
                f"peers[{i}].address",
                f"duplicate peer {peer.address} (also peers[{seen[peer.address]}])",
            )
        seen.setdefault(peer.address, i)
        if peer.local_address is not None and peer.local_address.version != peer.address.version:
            yield ConfigIssue(
                f"peers[{i}].local_address",
                f"{peer.local_address} is IPv{peer.local_address.version} but the peer "
                f"{peer.address} is IPv{peer.address.version}",
            )


def _next_hops(config: Config) -> Iterator[ConfigIssue]:
    """A VIP of the other family needs an explicit next hop of its family on that session
    (services announced to every peer; for a ``services[].peers`` list see below)."""
    vips = [(s.name, v) for s in config.services if s.peers is None for v in s.vips]
    for i, peer in enumerate(config.peers):
        for version, field in ((6, "next_hop_v6"), (4, "next_hop_v4")):
            if peer.address.version == version or getattr(peer, field) is not None:
                continue
            other = next(((n, v) for n, v in vips if v.version == version), None)
            if other is not None:
                yield ConfigIssue(
                    f"peers[{i}].{field}",
                    f"service {other[0]!r} announces IPv{version} VIP {other[1]} over this "
                    f"IPv{peer.address.version} session: set {field} (or add an IPv{version} peer "
                    "and keep this VIP off this one with services[].peers)",
                )


# --------------------------------------------------------------------------- services


def _services_unique(config: Config) -> Iterator[ConfigIssue]:
    names: dict[str, int] = {}
    vips: dict[object, str] = {}
    for i, s in enumerate(config.services):
        if s.name in names:
            yield ConfigIssue(
                f"services[{i}].name",
                f"duplicate service name {s.name!r} (also services[{names[s.name]}])",
            )
        names.setdefault(s.name, i)
        for k, vip in enumerate(s.vips):
            if vip in vips:
                yield ConfigIssue(
                    f"services[{i}].vips[{k}]", f"{vip} is already used by {vips[vip]}"
                )
            vips.setdefault(vip, f"services[{i}].vips[{k}] ({s.name!r})")


def carries(peer: PeerConfig, vip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``peer``'s session can carry ``vip``: same family, or an explicit next hop
    of the VIP's family (policy._next_hop sends nothing else)."""
    explicit = peer.next_hop_v4 if vip.version == 4 else peer.next_hop_v6
    return peer.address.version == vip.version or explicit is not None


def _service_peers(config: Config) -> Iterator[ConfigIssue]:
    """``services[].peers`` names known, distinct peers; each listed peer carries at least
    one of the service's VIPs and each VIP reaches at least one listed peer."""
    by_name = {p.name: p for p in config.peers if p.name is not None}
    known = ", ".join(repr(n) for n in by_name) or "none: no peer has a name"
    for i, s in enumerate(config.services):
        if s.peers is None:
            continue
        p = f"services[{i}]"
        listed: dict[str, int] = {}
        for k, name in enumerate(s.peers):
            peer = by_name.get(name)
            if name in listed:
                yield ConfigIssue(
                    f"{p}.peers[{k}]",
                    f"peer {name!r} listed twice (also {p}.peers[{listed[name]}])",
                )
            elif peer is None:
                yield ConfigIssue(f"{p}.peers[{k}]", _unknown_peer(config, name, known))
            elif not any(carries(peer, vip) for vip in s.vips):
                version = 6 if peer.address.version == 4 else 4
                yield ConfigIssue(
                    f"{p}.peers[{k}]",
                    f"peer {name!r} ({peer.address}) cannot carry any VIP of this service: "
                    f"they are all IPv{version} and the session is IPv{peer.address.version} "
                    f"without next_hop_v{version}",
                )
            listed.setdefault(name, k)
        chosen = [by_name[n] for n in listed if n in by_name]
        if len(chosen) < len(listed):
            continue  # unknown names: said above
        for k, vip in enumerate(s.vips):
            if not any(carries(peer, vip) for peer in chosen):
                yield ConfigIssue(
                    f"{p}.vips[{k}]",
                    f"IPv{vip.version} VIP {vip} reaches none of the service's peers "
                    f"({', '.join(repr(n) for n in listed)}): list an IPv{vip.version} peer "
                    f"or set next_hop_v{vip.version} on one of them",
                )


def _unknown_peer(config: Config, name: str, known: str) -> str:
    text = f"unknown peer {name!r} (peer names: {known})"
    by_address = next((j for j, peer in enumerate(config.peers) if str(peer.address) == name), None)
    if by_address is not None:
        text += f"; peers are listed by name: set peers[{by_address}].name"
    return text


def _mode(s: ServiceConfig, p: str) -> Iterator[ConfigIssue]:
    if s.mode is ServiceMode.ANNOUNCE:
        if s.interface is None and s.require_vip:
            yield ConfigIssue(f"{p}.interface", "required in announce mode (e.g. lo)")
        for field in ("ports", "real_servers"):
            if getattr(s, field):
                yield ConfigIssue(
                    f"{p}.{field}", "announce mode has no IPVS: remove it (or use mode: ipvs)"
                )
    else:
        if not s.require_vip:
            yield ConfigIssue(
                f"{p}.require_vip",
                "only used in announce mode: ipvs mode puts the VIP on its dummy",
            )
        if s.interface is None:
            return
        yield ConfigIssue(
            f"{p}.interface",
            "only used in announce mode; in ipvs mode the VIP goes on a dummy interface named "
            "after the service",
        )


def _ports(s: ServiceConfig, p: str) -> Iterator[ConfigIssue]:
    seen: dict[tuple[int, str], int] = {}
    for k, port in enumerate(s.ports):
        key = (port.port, str(port.protocol))
        if key in seen:
            yield ConfigIssue(
                f"{p}.ports[{k}]",
                f"duplicate port {port.protocol}/{port.port} (also ports[{seen[key]}])",
            )
        seen.setdefault(key, k)
    if s.real_servers and not s.ports:
        yield ConfigIssue(f"{p}.real_servers", "real servers need ports to forward")


def _backends(config: Config, s: ServiceConfig, p: str) -> Iterator[ConfigIssue]:
    if s.mode is not ServiceMode.IPVS or not s.ports:
        return
    if not s.real_servers:
        yield from _local_backend(config, s, p)
        return
    addrs: dict[tuple[object, int | None], int] = {}
    for j, rs in enumerate(s.real_servers):
        rp = f"{p}.real_servers[{j}]"
        if rs.address.is_loopback or rs.address.is_unspecified or rs.address.is_multicast:
            yield ConfigIssue(
                f"{rp}.address",
                f"{rs.address} is not a valid IPVS target (IPVS cannot forward wire traffic to "
                "loopback; use the node's own address)",
            )
        if (rs.address, rs.port) in addrs:
            yield ConfigIssue(
                rp, f"duplicate real server (also real_servers[{addrs[rs.address, rs.port]}])"
            )
        addrs.setdefault((rs.address, rs.port), j)
        if rs.forward is not ForwardMethod.MASQ:
            for k, port in enumerate(s.ports):
                target = rs.port or port.target
                if target != port.port:
                    yield ConfigIssue(
                        f"{rp}.port" if rs.port else f"{p}.ports[{k}].target_port",
                        f"{rs.forward} forwarding cannot change the port: service port "
                        f"{port.port} -> real server port {target}",
                    )
    for k, vip in enumerate(s.vips):
        if not any(rs.address.version == vip.version for rs in s.real_servers):
            yield ConfigIssue(
                f"{p}.vips[{k}]",
                f"no real server of the VIP's family (IPv{vip.version}): IPVS masq cannot mix "
                "families; add one or move the VIP to another service",
            )
    if s.min_healthy > len(s.real_servers):
        yield ConfigIssue(
            f"{p}.min_healthy",
            f"{s.min_healthy} is more than the {len(s.real_servers)} real servers",
        )


def _local_backend(config: Config, s: ServiceConfig, p: str) -> Iterator[ConfigIssue]:
    node = config.node
    if any(v.version == 4 for v in s.vips) and node.local_backend_v4.is_loopback:
        field = "backend_v4" if node.backend_v4 else "router_id"
        yield ConfigIssue(
            f"node.{field}",
            f"{node.local_backend_v4} is a loopback address and service {s.name!r} forwards to "
            "the node itself: IPVS cannot forward wire traffic to loopback; set node.backend_v4",
        )
    for k, vip in enumerate(s.vips):
        if vip.version == 6 and node.backend_v6 is None:
            yield ConfigIssue(
                f"{p}.vips[{k}]",
                f"IPv6 VIP {vip} forwards to the node itself: "
                "set node.backend_v6 (or real_servers)",
            )
    if node.backend_v6 is not None and node.backend_v6.is_loopback:
        yield ConfigIssue("node.backend_v6", "::1 is not a valid IPVS target (loopback)")
    if s.min_healthy > 1:
        yield ConfigIssue(
            f"{p}.min_healthy", f"{s.min_healthy} is more than the 1 backend (the node itself)"
        )


def _check_names(checks: tuple[Check, ...], p: str) -> Iterator[ConfigIssue]:
    seen: dict[str, int] = {}
    for k, check in enumerate(checks):
        if check.label in seen:
            first = f"{p.rsplit('.', 1)[-1]}[{seen[check.label]}]"
            yield ConfigIssue(
                f"{p}[{k}].name",
                f"duplicate check name {check.label!r} (also {first}): "
                "give checks of the same type distinct names",
            )
        seen.setdefault(check.label, k)


def _checks(s: ServiceConfig, p: str) -> Iterator[ConfigIssue]:
    yield from _check_names(s.checks, f"{p}.checks")
    targets = sorted({port.target for port in s.ports})
    owners = [(f"{p}.checks", s.checks, None)] + [
        (f"{p}.real_servers[{j}].checks", rs.checks, rs.port) for j, rs in enumerate(s.real_servers)
    ]
    for owner, checks, fixed_port in owners:
        if owner != f"{p}.checks":
            yield from _check_names(checks, owner)
        for k, check in enumerate(checks):
            if check.timeout >= check.interval:
                yield ConfigIssue(
                    f"{owner}[{k}].timeout",
                    f"{check.timeout:g} s must be shorter than the interval ({check.interval:g} s)",
                )
            port = getattr(check, "port", False)
            if port is None and fixed_port is None and len(targets) != 1:
                why = "the service has no ports" if not targets else f"target ports {targets}"
                yield ConfigIssue(
                    f"{owner}[{k}].port", f"required: no single port to default to ({why})"
                )


def _pool(s: ServiceConfig, p: str) -> Iterator[ConfigIssue]:
    """preserve_connections (pool mode): every LB node must build the same Maglev table and a
    node that receives a flow mid-way must forward it (docs/forwarding.md "Pool mode")."""
    if not s.preserve_connections:
        return
    pc = f"{p}.preserve_connections"
    if s.mode is not ServiceMode.IPVS:
        yield ConfigIssue(pc, "needs mode ipvs (pool mode is an IPVS Maglev table)")
        return
    if not s.real_servers:
        yield ConfigIssue(
            f"{p}.real_servers",
            "preserve_connections needs a shared pool of real_servers: the local backend "
            "differs per node, so a flow moved to another node cannot keep its backend",
        )
    for j, rs in enumerate(s.real_servers):
        if rs.forward is ForwardMethod.MASQ:
            yield ConfigIssue(
                f"{p}.real_servers[{j}].forward",
                "masq is refused with preserve_connections: replies must bypass the LB node "
                "(dr or tunnel), or a flow moved to another node loses its NAT state",
            )
    if s.unhealthy_real_server == "remove":
        yield ConfigIssue(
            f"{p}.unhealthy_real_server",
            "remove is refused with preserve_connections: removing a real server reshuffles "
            "the Maglev table (flows move to other servers); weight0 keeps its slots",
        )
    for k, port in enumerate(s.ports):
        if port.scheduler != "mh":
            yield ConfigIssue(
                f"{p}.ports[{k}].scheduler",
                f"{port.scheduler} with preserve_connections: pool mode needs mh (Maglev "
                "hashing gives every node the same choice); leave scheduler unset or set mh",
            )


# --------------------------------------------------------------------------- attributes

State = Literal["healthy", "degraded", "draining"]


def _attributes(config: Config) -> Iterator[ConfigIssue]:
    for i, s in enumerate(config.services):
        types = {peer.peer_type(config.node.local_as) for peer in config.service_peers(s)}
        for state in ("healthy", "degraded", "draining"):
            attrs: AttributesConfig | None = getattr(s.attributes, state)
            if attrs is not None:
                yield from _silent(
                    attrs,
                    state,
                    types,
                    config.node.same_as_fleet,
                    f"services[{i}].attributes.{state}",
                )


def _silent(
    attrs: AttributesConfig, state: str, types: set[PeerType], same_as: bool, p: str
) -> Iterator[ConfigIssue]:
    if attrs.local_pref is not None and PeerType.EBGP in types:
        yield ConfigIssue(f"{p}.local_pref", LOCAL_PREF_EBGP)
    if attrs.as_path_prepend and PeerType.IBGP in types:
        yield ConfigIssue(
            f"{p}.as_path_prepend",
            "as_path_prepend toward an iBGP peer: the peer sees its own AS in the path and "
            "drops the route as a loop",
        )
    med_only = attrs.med is not None and not (
        attrs.as_path_prepend or attrs.communities or attrs.large_communities or attrs.local_pref
    )
    if state != "healthy" and med_only and PeerType.EBGP in types and not same_as:
        yield ConfigIssue(
            f"{p}.med",
            f"a MED-only {state} attribute set does nothing toward eBGP peers: MED is only "
            "compared between paths from the same neighbour AS. Add as_path_prepend or "
            f"community {GSHUT}, or set node.same_as_fleet if every LB uses this AS",
        )
