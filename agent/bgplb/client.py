"""``bgp-lb status|drain|undrain|reload``: a small synchronous client of the agent's API.

The API address comes from ``--api``, else from ``--config`` (node.api.listen/port), else
``http://127.0.0.1:9180``; the token from ``--token-file``, else the config's
``node.api.token_file``. Exit codes: 0 ok, 1 the agent cannot be reached (or timed out,
or answered 5xx), 2 the agent refused the request (4xx: the JSON error is printed).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from .drainwatch import (
    DEFAULT_QUIET,
    DEFAULT_THRESHOLD,
    StillBusy,
    WatchSettings,
    announce_only,
    watch_traffic,
)
from .model import ServiceMode
from .status import PeerStatusModel, ServiceStatus, StatusResponse, VipBandwidthStatus

DEFAULT_API = "http://127.0.0.1:9180"
HTTP_TIMEOUT = 10.0  # seconds per request
WAIT_TIMEOUT = 300.0  # seconds `drain --wait` waits for the withdraw and the traffic (--timeout)
WAIT_POLL = 0.5

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_REFUSED = 2


class ClientError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Target:
    base: str
    token_file: str | None


def _url_host(listen: str) -> str:
    addr = ipaddress.ip_address(listen)
    if addr.is_unspecified:  # the agent listens everywhere: talk to it over loopback
        addr = ipaddress.ip_address("::1" if addr.version == 6 else "127.0.0.1")
    return f"[{addr}]" if addr.version == 6 else str(addr)


def resolve_target(args: argparse.Namespace) -> Target:
    base, token_file = args.api, args.token_file
    if args.config is not None:
        from .config import ConfigError, load_config

        try:
            api = load_config(args.config).node.api
        except ConfigError as err:
            raise ClientError(f"{args.config}: invalid config ({err})", EXIT_REFUSED) from None
        except OSError as err:
            raise ClientError(f"{args.config}: {err.strerror or err}", EXIT_REFUSED) from None
        base = base or f"http://{_url_host(str(api.listen))}:{api.port}"
        if token_file is None and api.token_file is not None:
            token_file = str(api.token_file)
    return Target((base or DEFAULT_API).rstrip("/"), token_file)


def _token(target: Target) -> str | None:
    if target.token_file is None:
        return None
    from .api import TokenError, load_token

    try:
        return load_token(target.token_file)
    except TokenError as err:
        raise ClientError(str(err), EXIT_REFUSED) from None


def request(target: Target, method: str, path: str, token: str | None = None) -> Any:
    """One API call; returns the decoded JSON body or raises :class:`ClientError`."""
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(target.base + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        body = _error_text(err)
        code = EXIT_REFUSED if 400 <= err.code < 500 else EXIT_FAILURE
        raise ClientError(f"{method} {path}: HTTP {err.code}: {body}", code) from None
    except urllib.error.URLError as err:
        raise ClientError(f"cannot reach the bgp-lb agent at {target.base}: {err.reason}") from None
    except TimeoutError:
        raise ClientError(f"the bgp-lb agent at {target.base} did not answer in time") from None
    except (OSError, ValueError) as err:
        raise ClientError(f"bad answer from the bgp-lb agent at {target.base}: {err}") from None


def _error_text(err: urllib.error.HTTPError) -> str:
    try:
        data = json.loads(err.read())
    except (OSError, ValueError):
        return err.reason if isinstance(err.reason, str) else "error"
    if isinstance(data, dict) and "errors" in data:  # a ReloadResult
        failed = data.get("failed_checks") or []
        lines = [str(e) for e in data["errors"]]
        lines += [f"check {f.get('check')} failed: {f.get('error')}" for f in failed]
        return "; ".join(lines) or "reload failed"
    if isinstance(data, dict) and "error" in data:
        detail = data.get("detail")
        return f"{data['error']}: {detail}" if detail else str(data["error"])
    return json.dumps(data)


# --------------------------------------------------------------------------- output


def _peer_reason(p: PeerStatusModel) -> str:
    """The session's reason, and for a peer with bfd set its BFD state and why its routes
    are held (``bfd_not_up``)."""
    parts = [p.reason] if p.reason else []
    if p.bfd is not None:
        parts.append(f"bfd {p.bfd}")
    if p.held:
        parts.append(f"held: {p.held}")
    return "; ".join(parts)


def _bandwidth_text(b: VipBandwidthStatus) -> str:
    """One VIP's UCMP state: capacity now, what is announced, a change the hold-down delays."""
    sent = f"{b.bytes_per_second} bytes/s" if b.bytes_per_second is not None else "withdrawn"
    text = f"capacity {b.capacity}, announced {b.announced_capacity} ({sent})"
    if b.change_in_seconds is not None:
        text += f", {b.capacity} in {b.change_in_seconds:.1f} s (hold_down)"
    return text


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def print_status(status: StatusResponse, out: TextIO) -> None:
    from .doctor_go import running_flags

    n = status.node
    out.write(
        f"node {n.router_id} AS{n.local_as} version {n.version} "
        f"{'ready' if n.ready else 'NOT READY'}{' DRAINED' if n.drained else ''} "
        f"up {n.uptime:.0f}s\n"
    )
    go = running_flags(status)
    if go is not None:  # started from the Go bgp-lb's command line
        out.write(f"Go command line: {go.command_line()}\n")
    out.write("\n")
    names = {p.address: p.name or p.address for p in status.peers}
    rows = [["SERVICE", "DECISION", "REASON", "VIPS", "CHECKS", "ANNOUNCED TO", "DETAIL"]]
    for s in status.services:
        up = sum(1 for c in s.checks if c.status == "up")
        rows.append(
            [
                s.name + (" (drained)" if s.drained else ""),
                str(s.decision),
                str(s.reason),
                ",".join(str(v) for v in s.vips),
                f"{up}/{len(s.checks)}",
                ",".join(names.get(peer, peer) for peer in s.routes) or "-",
                s.detail,
            ]
        )
    if len(rows) > 1:
        _table(rows, out)
    else:
        out.write("no services\n")
    for s in status.services:
        for b in s.link_bandwidth:
            out.write(f"ucmp {s.name} {b.vip}: {_bandwidth_text(b)}\n")
    out.write("\n")
    prow = [["PEER", "ASN", "TYPE", "STATE", "ROUTES", "NAME", "REASON"]]
    for p in status.peers:
        prow.append(
            [
                p.address,
                str(p.asn),
                str(p.type),
                str(p.state),
                str(p.routes_advertised),
                p.name or "-",
                _peer_reason(p),
            ]
        )
    if len(prow) > 1:
        _table(prow, out)
    else:
        out.write("no peers\n")
    bad = [q for q in status.prerequisites if not q.ok]
    for q in bad:
        out.write(
            f"\nprerequisite {q.name} FAILED: {q.detail}" + (f" (fix: {q.fix})" if q.fix else "")
        )
    if bad:
        out.write("\n")


# --------------------------------------------------------------------------- commands


def _wait_withdrawn(
    target: Target,
    service: str | None,
    out: TextIO,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    deadline: float,
    timeout: float,
) -> list[ServiceStatus]:
    """Poll the status until the service (every service: None) is withdrawn; return them."""
    while True:
        status = StatusResponse.model_validate(request(target, "GET", "/api/v1/status"))
        found = status.services if service is None else [status.service(service)]
        services = [s for s in found if s is not None]
        if len(services) < len(found):
            raise ClientError(f"service {service} disappeared from the agent", EXIT_REFUSED)
        if all(s.decision == "withdraw" for s in services):
            out.write("withdrawn\n")
            return services
        if clock() >= deadline:
            raise ClientError(f"still announced after {timeout:g} s")
        sleep(WAIT_POLL)


def _drain_wait(
    args: argparse.Namespace,
    target: Target,
    service: str | None,
    out: TextIO,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> None:
    """``drain --wait``: the withdraw, then (ipvs mode) the inbound traffic reaching ~0."""
    timeout = float(getattr(args, "timeout", None) or WAIT_TIMEOUT)
    deadline = clock() + timeout
    services = _wait_withdrawn(target, service, out, sleep, clock, deadline, timeout)
    announce_only([s.name for s in services if s.mode != ServiceMode.IPVS], out)
    settings = WatchSettings(
        threshold=float(getattr(args, "threshold", DEFAULT_THRESHOLD)),
        quiet=float(getattr(args, "quiet", DEFAULT_QUIET)),
    )
    try:
        watch_traffic(
            lambda path: request(target, "GET", path),
            [s.name for s in services if s.mode == ServiceMode.IPVS],
            out,
            settings=settings,
            deadline=deadline,
            clock=clock,
            sleep=sleep,
        )
    except StillBusy as e:
        raise ClientError(f"{e} ({timeout:g} s after the drain)") from None


def run_client_command(
    args: argparse.Namespace,
    out: TextIO | None = None,
    err: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """The ``status``, ``drain``, ``undrain`` and ``reload`` subcommands."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        target = resolve_target(args)
        cmd: str = args.command
        if cmd == "status":
            data = request(target, "GET", "/api/v1/status")
            if getattr(args, "json", False):
                out.write(json.dumps(data, indent=2) + "\n")
            else:
                print_status(StatusResponse.model_validate(data), out)
        elif cmd in ("drain", "undrain"):
            service = None if args.all else args.service
            path = (
                f"/api/v1/{cmd}"
                if service is None
                else f"/api/v1/services/{urllib.parse.quote(service, safe='')}/{cmd}"
            )
            request(target, "POST", path, _token(target))
            out.write(f"{cmd}ed {service or 'node'}\n")
            if cmd == "drain" and getattr(args, "wait", False):
                _drain_wait(args, target, service, out, sleep, clock)
        elif cmd == "reload":
            probe = bool(getattr(args, "probe", False))
            path = "/api/v1/reload?probe=true" if probe else "/api/v1/reload"
            result = request(target, "POST", path, _token(target))
            changed = ", ".join(result.get("changed_services", [])) or "none"
            probed = f"; {result.get('probed_checks', 0)} changed check(s) probed" if probe else ""
            out.write(f"reloaded; changed services: {changed}{probed}\n")
        else:
            raise ClientError(f"unknown command {cmd}", EXIT_REFUSED)
    except ClientError as e:
        err.write(f"bgp-lb {args.command}: {e}\n")
        return e.code
    return EXIT_OK
