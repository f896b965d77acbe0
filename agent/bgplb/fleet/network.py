"""A node's ``network`` -> cloud-init network-config, version 2 (netplan style) or version 1 (the
one Proxmox writes).

Version 2's default routes are ``gateway4``/``gateway6``, not routes: cloud-init 22.4 (Debian 12)
refuses ``to: default`` and turns ``to: ::/0`` into ``::/64`` (checked with its own parser and
networkd renderer)."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from .schema import NetworkSpec

NetworkVersion = Literal[1, 2]


def network_config(spec: NetworkSpec, version: NetworkVersion) -> dict[str, Any]:
    return _v2(spec) if version == 2 else _v1(spec)


def _v2(spec: NetworkSpec) -> dict[str, Any]:
    ethernets: dict[str, Any] = {}
    for n, iface in enumerate(spec.interfaces):
        eth: dict[str, Any] = {}
        if iface.mac:
            eth["match"] = {"macaddress": iface.mac}
            eth["set-name"] = iface.name
        if iface.mtu:
            eth["mtu"] = iface.mtu
        eth["dhcp4"] = iface.dhcp4
        eth["dhcp6"] = iface.dhcp6
        if iface.addresses:
            eth["addresses"] = [str(a) for a in iface.addresses]
        if iface.gateway4 is not None:
            eth["gateway4"] = str(iface.gateway4)
        if iface.gateway6 is not None:
            eth["gateway6"] = str(iface.gateway6)
        if iface.routes:
            eth["routes"] = [{"to": str(r.to), "via": str(r.via)} for r in iface.routes]
        if n == 0 and (spec.nameservers or spec.search):
            eth["nameservers"] = _nameservers(spec, "addresses")
        ethernets[iface.name] = eth
    return {"version": 2, "ethernets": ethernets}


def _v1(spec: NetworkSpec) -> dict[str, Any]:
    config: list[dict[str, Any]] = []
    for iface in spec.interfaces:
        phys: dict[str, Any] = {"type": "physical", "name": iface.name}
        if iface.mac:
            phys["mac_address"] = iface.mac
        if iface.mtu:
            phys["mtu"] = iface.mtu
        subnets: list[dict[str, Any]] = []
        if iface.dhcp4:
            subnets.append({"type": "dhcp4"})
        if iface.dhcp6:
            subnets.append({"type": "dhcp6"})
        first: dict[int, dict[str, Any]] = {}
        for addr in iface.addresses:
            subnet: dict[str, Any] = {
                "type": "static" if addr.version == 4 else "static6",
                "address": str(addr),
            }
            first.setdefault(addr.version, subnet)
            subnets.append(subnet)
        for gw in (iface.gateway4, iface.gateway6):
            if gw is not None:
                first[gw.version]["gateway"] = str(gw)
        for route in iface.routes:
            target = first.get(route.to.version)
            if target is None:  # a route of a family without a static address: its own subnet
                target = {"type": "static" if route.to.version == 4 else "static6"}
                subnets.append(target)
                first[route.to.version] = target
            target.setdefault("routes", []).append(_v1_route(route.to, str(route.via)))
        phys["subnets"] = subnets
        config.append(phys)
    if spec.nameservers or spec.search:
        config.append({"type": "nameserver", **_nameservers(spec, "address")})
    return {"version": 1, "config": config}


def _v1_route(to: ipaddress.IPv4Network | ipaddress.IPv6Network, via: str) -> dict[str, Any]:
    if to.version == 4:
        return {"network": str(to.network_address), "netmask": str(to.netmask), "gateway": via}
    return {"network": str(to.network_address), "prefix": to.prefixlen, "gateway": via}


def _nameservers(spec: NetworkSpec, key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if spec.nameservers:
        out[key] = [str(a) for a in spec.nameservers]
    if spec.search:
        out["search"] = list(spec.search)
    return out
