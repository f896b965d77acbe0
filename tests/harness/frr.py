"""FRR 8.4 routers in test namespaces (zebra + bgpd started directly, "method B").

Pitfalls baked in (docs in /work/shared/docs/frr-exabgp-lab.md): no ``exit`` lines in the
integrated frr.conf, prefix-lists and route-maps before ``router bgp``, ``no zebra nexthop
kernel enable`` (kernel nexthop groups lose members after a flap), the daemons run as user
``frr`` so their directory is frr-owned and 0755. Assertions read the KERNEL FIB.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .netns import Lab, alive, kill_pids, run, tempdir

FRR_BIN = Path("/usr/lib/frr")


@dataclass(frozen=True)
class Neighbor:
    address: str
    remote_as: int | str = "external"  # a number, "external" or "internal"
    password: str | None = None
    families: tuple[str, ...] = ("ipv4", "ipv6")


@dataclass
class Router:
    ns: str
    asn: int
    router_id: str
    neighbors: Sequence[Neighbor]
    directory: Path
    pids: dict[str, int] = field(default_factory=dict)
    command_timeout: float = 10.0  # per daemon start / vtysh call (raise it under TCG)
    zebra_args: tuple[str, ...] = ()  # more zebra options (the lab: --v6-rr-semantics)
    # (interval ms, multiplier): bfdd runs, a "bfd profile lb" and every neighbor uses it
    bfd: tuple[int, int] | None = None

    def config(self) -> str:
        lines = [
            "frr defaults traditional",
            f"hostname {self.ns}",
            f"log file {self.directory}/frr.log debugging",
            "log timestamp precision 6",
            "debug bgp neighbor-events",
            "no zebra nexthop kernel enable",
            # Route-map changes apply at once: with the default 5 s delay timer, bgpd applies
            # the route-maps of its start-up config a few seconds after start, as a policy
            # change: it sends every peer a ROUTE-REFRESH (by then the sessions are up) and
            # ExaBGP re-sends its routes, an UPDATE the tests would count as the LB's.
            "bgp route-map delay-timer 0",
            "ip prefix-list VIPS seq 10 permit 10.99.0.0/16 ge 32",
            "ipv6 prefix-list VIPS6 seq 10 permit fd00:99::/32 ge 128",
            "route-map LB-IN permit 10",
            " match ip address prefix-list VIPS",
            "route-map LB-IN6 permit 10",
            " match ipv6 address prefix-list VIPS6",
            "route-map DENY-ALL deny 10",
        ]
        if self.bfd is not None:  # the profile before "router bgp" (frr-exabgp-lab.md)
            interval, multiplier = self.bfd
            lines += [
                "bfd",
                " profile lb",
                f"  detect-multiplier {multiplier}",
                f"  receive-interval {interval}",
                f"  transmit-interval {interval}",
            ]
        lines += [
            f"router bgp {self.asn}",
            f" bgp router-id {self.router_id}",
            " bgp log-neighbor-changes",
            " no bgp ebgp-requires-policy",
            " no bgp network import-check",
            " bgp bestpath as-path multipath-relax",
        ]
        for n in self.neighbors:
            lines += [
                f" neighbor {n.address} remote-as {n.remote_as}",
                f" neighbor {n.address} timers 1 3",
                f" neighbor {n.address} timers connect 1",
                f" neighbor {n.address} advertisement-interval 0",
            ]
            if n.password:
                lines.append(f" neighbor {n.address} password {n.password}")
            if self.bfd is not None:
                lines += [f" neighbor {n.address} bfd", f" neighbor {n.address} bfd profile lb"]
        for fam, rmap in (("ipv4", "LB-IN"), ("ipv6", "LB-IN6")):
            lines += [
                f" address-family {fam} unicast",
                "  maximum-paths 8",
                "  maximum-paths ibgp 8",
            ]
            for n in self.neighbors:
                if fam in n.families:
                    lines += [
                        f"  neighbor {n.address} activate",
                        f"  neighbor {n.address} route-map {rmap} in",
                        f"  neighbor {n.address} route-map DENY-ALL out",
                    ]
                else:
                    lines.append(f"  no neighbor {n.address} activate")
            lines.append(" exit-address-family")
        return "\n".join(lines) + "\n"

    def daemons(self) -> tuple[str, ...]:
        """What start() runs, in this order: bfdd (when BFD is on) before bgpd reads its
        config, so bgpd's BFD registrations find it."""
        return ("zebra", "bfdd", "bgpd") if self.bfd else ("zebra", "bgpd")

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.directory, "frr", "frr")
        os.chmod(self.directory, 0o755)
        conf = self.directory / "frr.conf"
        conf.write_text(self.config())
        shutil.chown(conf, "frr", "frr")
        os.chmod(conf, 0o640)
        d = str(self.directory)
        for daemon in self.daemons():
            pidfile = self.directory / f"{daemon}.pid"
            with contextlib.suppress(FileNotFoundError):
                pidfile.unlink()
            argv = ["ip", "netns", "exec", self.ns, str(FRR_BIN / daemon), "-d", "-N", self.ns]
            argv += ["-F", "traditional", "-f", str(conf), "-i", str(pidfile)]
            argv += ["-z", f"{d}/zserv.api", "--vty_socket", d]
            if daemon == "zebra":
                argv += ["-s", "90000000", *self.zebra_args]
            if daemon == "bfdd":
                argv += ["--bfdctl", f"{d}/bfdd.sock"]
            run(*argv, timeout=self.command_timeout)
            self.pids[daemon] = _read_pid(pidfile, timeout=max(5.0, self.command_timeout))

    def vtysh_json_list(self, command: str) -> list[dict[str, object]]:
        out = json.loads(self.vtysh(command) or "[]")
        assert isinstance(out, list)
        return out

    def bfd_peers(self) -> dict[str, str]:
        """peer address -> BFD state as this router's bfdd sees it."""
        return {
            str(p["peer"]): str(p["status"]) for p in self.vtysh_json_list("show bfd peers json")
        }

    def stop(self) -> None:
        kill_pids([p for d, p in sorted(self.pids.items(), key=lambda x: x[0] != "bgpd")])
        self.pids.clear()

    def vtysh(self, *commands: str) -> str:
        argv = ["vtysh", "--vty_socket", str(self.directory)]
        for c in commands:
            argv += ["-c", c]
        return run(*argv, timeout=self.command_timeout)

    def vtysh_json(self, command: str) -> dict[str, object]:
        out = json.loads(self.vtysh(command) or "{}")
        assert isinstance(out, dict)
        return out

    def log(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return (self.directory / "frr.log").read_text(errors="replace")
        return ""

    def fib(self, prefix: str) -> list[str]:
        return fib(self.ns, prefix)

    def fib_count(self, family: int = 4) -> int:
        out = json.loads(
            run("ip", f"-{family}", "-n", self.ns, "-j", "route", "show", "proto", "bgp") or "[]"
        )
        return len(out)

    def peer_flaps(self, address: str) -> tuple[int, int]:
        """(sessions established, sessions dropped) since bgpd started: a flap moves both."""
        info = self.vtysh_json(f"show bgp neighbors {address} json").get(address, {})
        assert isinstance(info, dict)
        return int(info.get("connectionsEstablished", 0)), int(info.get("connectionsDropped", 0))

    def peer_uptime_ms(self, address: str) -> int:
        data = self.vtysh_json(f"show bgp neighbors {address} json")
        info = data.get(address, {})
        assert isinstance(info, dict)
        return int(info.get("bgpTimerUpMsec", 0)) if info.get("bgpState") == "Established" else 0


def _read_pid(path: Path, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(path.read_text().strip())
        time.sleep(0.02)
    raise RuntimeError(f"no pid file {path}")


def fib(ns: str, prefix: str) -> list[str]:
    """The next hops of ``prefix`` in the kernel FIB of ``ns`` (BGP routes only), sorted."""
    family = "-6" if ":" in prefix else "-4"
    out = json.loads(
        run("ip", family, "-n", ns, "-j", "route", "show", prefix, "proto", "bgp") or "[]"
    )
    hops: list[str] = []
    for r in out:
        if "gateway" in r:
            hops.append(r["gateway"])
        hops += [n["gateway"] for n in r.get("nexthops", []) if "gateway" in n]
    return sorted(hops)


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], within: float, interval: float = 0.005
) -> float:
    """Poll until ``predicate()`` is true; returns the seconds it took, fails after ``within``."""
    start = time.monotonic()
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return time.monotonic() - start
        if time.monotonic() - start > within:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


def pid_alive(pid: int) -> bool:
    return alive(pid)


def send_signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


# --------------------------------------------------------------------------- fixtures

R1_AS = 65000
LB_AS = 65001
R2_AS = 65002


@dataclass
class BgpLab:
    """r1 (FRR, AS 65000) with lbN (N = 1..n_lbs) on veths: r1 10.0.N.1 / fd00:N::1,
    lbN 10.0.N.2 / fd00:N::2. r1 peers with every lb over v4 and with lb1 over v6 too.
    With ``routers=2`` a second router r2 (FRR, AS 65002; iBGP: AS 65000) has its own veth
    to every lb (lbN's eth1): r2 10.1.N.1 / fd01:N::1, lbN 10.1.N.2 / fd01:N::2; r2 peers
    with every lb over v4 (both families)."""

    lab: Lab
    router: Router
    lb_ns: list[str]
    lb_as: int
    workdir: Path
    r2: Router | None = None

    @staticmethod
    def r2_v4(n: int) -> str:
        return f"10.1.{n}.1"

    @staticmethod
    def lb_v4_r2(n: int) -> str:
        """lbN's address on its link to r2."""
        return f"10.1.{n}.2"

    @staticmethod
    def r1_v4(n: int) -> str:
        return f"10.0.{n}.1"

    @staticmethod
    def lb_v4(n: int) -> str:
        return f"10.0.{n}.2"

    @staticmethod
    def r1_v6(n: int) -> str:
        return f"fd00:{n}::1"

    @staticmethod
    def lb_v6(n: int) -> str:
        return f"fd00:{n}::2"


def build_bgp_lab(
    workdir: Path,
    n_lbs: int = 2,
    ibgp: bool = False,
    password: str | None = None,
    routers: int = 1,
    bfd: tuple[int, int] | None = None,
) -> BgpLab:
    assert routers in (1, 2)
    lab = Lab()
    r2: Router | None = None
    try:
        r1 = lab.add_ns("r1")
        lbs = []
        for n in range(1, n_lbs + 1):
            ns = lab.add_ns(f"lb{n}")
            lab.link(
                r1,
                f"lb{n}",
                ns,
                "eth0",
                [f"{BgpLab.r1_v4(n)}/24", f"{BgpLab.r1_v6(n)}/64"],
                [f"{BgpLab.lb_v4(n)}/24", f"{BgpLab.lb_v6(n)}/64"],
            )
            lbs.append(ns)
        remote: int | str = "internal" if ibgp else "external"
        neighbors = [Neighbor(BgpLab.lb_v4(n), remote, password) for n in range(1, n_lbs + 1)]
        neighbors.append(Neighbor(BgpLab.lb_v6(1), remote, password, families=("ipv6",)))
        router = Router(r1, R1_AS, "10.0.0.1", neighbors, workdir / "frr-r1", bfd=bfd)
        router.start()
        if routers == 2:
            ns2 = lab.add_ns("r2")
            for n, ns in enumerate(lbs, start=1):
                lab.link(
                    ns2,
                    f"lb{n}",
                    ns,
                    "eth1",
                    [f"{BgpLab.r2_v4(n)}/24", f"fd01:{n}::1/64"],
                    [f"{BgpLab.lb_v4_r2(n)}/24", f"fd01:{n}::2/64"],
                )
            neighbors2 = [
                Neighbor(BgpLab.lb_v4_r2(n), remote, password) for n in range(1, n_lbs + 1)
            ]
            r2 = Router(ns2, R1_AS if ibgp else R2_AS, "10.0.0.2", neighbors2, workdir / "frr-r2")
            r2.start()
    except BaseException:
        lab.close()  # kills every process in its namespaces: the routers too
        raise
    return BgpLab(lab, router, lbs, R1_AS if ibgp else LB_AS, workdir, r2)


def close_bgp_lab(bl: BgpLab) -> None:
    try:
        if bl.r2 is not None:
            bl.r2.stop()
        bl.router.stop()
    finally:
        bl.lab.close()
        shutil.rmtree(bl.workdir, ignore_errors=True)


@pytest.fixture
def bgp_lab_factory() -> Iterator[Callable[..., BgpLab]]:
    """``bgp_lab_factory(n_lbs=2, ibgp=False, password=None, routers=1, bfd=None)``;
    always torn down. ``bfd=(interval_ms, multiplier)``: r1 runs bfdd with that profile."""
    made: list[BgpLab] = []

    def make(**kw: object) -> BgpLab:
        workdir = tempdir("frr")
        os.chmod(workdir, 0o755)  # the FRR daemons run as user frr
        bl = build_bgp_lab(workdir, **kw)  # type: ignore[arg-type]
        made.append(bl)
        return bl

    yield make
    for bl in made:
        close_bgp_lab(bl)
