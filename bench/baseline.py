"""The baseline: ExaBGP 5's bundled healthcheck, one process per service, as measured in
/work/shared/docs/exabgp-healthcheck-baseline.md (same flags, same ExaBGP, same FRR r1)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.frr import BgpLab
from tests.harness.netns import kill_pids, tempdir

from .lab import PY

# Scenario B ("tuned", interval 1) and C ("aggressive", interval 0.1) of the baseline doc.
TIMING_B = "--interval 1 --fast-interval 0.2 --rise 2 --fall 2 --timeout 1"
TIMING_C = "--interval 0.1 --fast-interval 0.1 --rise 1 --fall 1 --timeout 1"


@dataclass
class HealthcheckService:
    name: str
    vip: str  # address, announced as /32
    url: str


@dataclass
class ExaBGPHealthcheck:
    """ExaBGP in lbN with one ``exabgp healthcheck`` process per service."""

    bl: BgpLab
    n: int
    services: list[HealthcheckService]
    timing: str
    workdir: Path = field(default_factory=lambda: tempdir("bench-exa"))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def ns(self) -> str:
        return self.bl.lb_ns[self.n - 1]

    @property
    def log_path(self) -> Path:
        return self.workdir / "exabgp.log"

    def config(self) -> str:
        lines = []
        for s in self.services:
            cmd = f"curl -sf --max-time 1 {s.url}"
            lines += [
                f"process {s.name} {{",
                f"    run {PY} -m exabgp healthcheck --name {s.name} --no-syslog"
                f' --cmd "{cmd}" --ip {s.vip}/32 --no-ip-setup --withdraw-on-down {self.timing};',
                "    encoder text;",
                "}",
            ]
        names = " ".join(s.name for s in self.services)
        lines += [
            f"neighbor {self.bl.r1_v4(self.n)} {{",
            f"    router-id {self.bl.lb_v4(self.n)}; local-address {self.bl.lb_v4(self.n)};",
            f"    local-as {self.bl.lb_as}; peer-as {self.bl.router.asn}; hold-time 3;",
            "    family { ipv4 unicast; }",
            f"    api {{ processes [ {names} ]; }}",
            "}",
        ]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        conf = self.workdir / "exabgp.conf"
        conf.write_text(self.config())
        env = dict(os.environ)
        env.update(
            exabgp_daemon_user="root",
            exabgp_api_cli="false",
            exabgp_log_destination="stdout",
        )
        argv = ["ip", "netns", "exec", self.ns, str(PY.parent / "exabgp"), "server", str(conf)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def stop(self) -> None:
        if self.proc is None:
            return
        from .lab import tree

        pids = tree(self.proc.pid)
        kill_pids(pids)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.proc = None
