"""A real Prometheus (Debian's package) inside a test namespace, for the live checks.

``PromServer`` writes a config that scrapes the given targets every second through file_sd
(target labels ``node``), loads the alert rules with every ``for:`` shortened, keeps its TSDB
in a temporary directory, and is killed by pid. It listens on 127.0.0.1 of its namespace: the
port is free by construction (the namespace is new). Queries go through ``curl`` in the
namespace, like the validator and the renderer, which run there too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PORT = 19090
# Wait bounds are multiplied by this (tests/lab/vm.py sets 4 for the lab in the TCG VM).
SLOW = float(os.environ.get("BGPLB_SLOW", "1"))
RULE_FOR = "2s"
# Scrape every second, with a 1 s timeout; in the TCG lab (SLOW > 1) every 2 s with a 2 s
# timeout: a guest stall of just over a second failed one scrape there, `up` went to 0 and
# BgplbAgentDown turned pending while every agent was fine.
SCRAPE = "2s" if SLOW > 1 else "1s"


@dataclass
class PromServer:
    ns: str
    workdir: Path
    targets: dict[str, str]  # node name -> host:port
    rules: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{PORT}"

    def write_config(self) -> Path:
        sd = [{"targets": [t], "labels": {"node": n}} for n, t in sorted(self.targets.items())]
        (self.workdir / "targets.yml").write_text(yaml.safe_dump(sd))
        fast = re.sub(r"(?m)^(\s+for:) \S+$", rf"\1 {RULE_FOR}", self.rules.read_text())
        (self.workdir / "alerts.yml").write_text(fast)
        config = {
            "global": {
                "scrape_interval": SCRAPE,
                "evaluation_interval": "1s",
                "scrape_timeout": SCRAPE,
            },
            "rule_files": ["alerts.yml"],
            "scrape_configs": [
                {
                    "job_name": "bgplb",
                    "file_sd_configs": [{"files": ["targets.yml"], "refresh_interval": "1s"}],
                }
            ],
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self) -> None:
        config = self.write_config()
        argv = ["ip", "netns", "exec", self.ns, "prometheus", f"--config.file={config}"]
        argv += [f"--storage.tsdb.path={self.workdir / 'tsdb'}", "--storage.tsdb.retention.time=1h"]
        argv += [f"--web.listen-address=127.0.0.1:{PORT}", "--rules.alert.resend-delay=1s"]
        argv += ["--log.level=warn"]
        with (self.workdir / "prometheus.log").open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self.started_at = time.monotonic()
        # cold start over 9p in the TCG guest can take a minute
        self.wait(lambda: self.curl("/-/ready") is not None, 60, "ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return (self.workdir / "prometheus.log").read_text(errors="replace")
        return ""

    def curl(self, path: str) -> str | None:
        argv = ["ip", "netns", "exec", self.ns, "curl", "-sf", "--max-time", str(5 * SLOW)]
        try:
            res = subprocess.run(
                [*argv, self.url + path],
                capture_output=True,
                text=True,
                timeout=10 * SLOW,
                check=False,
            )
        except subprocess.TimeoutExpired:  # a loaded TCG guest: try again
            return None
        return res.stdout if res.returncode == 0 else None

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self.curl("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if body is None:
            raise RuntimeError(f"query failed: {expr}\n{self.log()}")
        out = json.loads(body)
        assert out["status"] == "success", out
        result = out["data"]["result"]
        assert isinstance(result, list)
        return result

    def alerts(self, state: str = "firing") -> list[dict[str, str]]:
        """Labels of the alerts in ``state`` (from /api/v1/alerts)."""
        body = self.curl("/api/v1/alerts")
        assert body is not None, self.log()
        return [a["labels"] for a in json.loads(body)["data"]["alerts"] if a["state"] == state]

    def count(self, expr: str) -> int:
        """How many series ``expr`` returns now."""
        return len(self.query(expr))

    def firing(self, alertname: str, **labels: str) -> bool:
        return any(
            a["alertname"] == alertname and all(a.get(k) == v for k, v in labels.items())
            for a in self.alerts("firing")
        )

    def active(self, alertname: str) -> bool:
        """Pending or firing."""
        return any(
            a["alertname"] == alertname for s in ("firing", "pending") for a in self.alerts(s)
        )

    def wait(self, predicate: Any, within: float, what: str) -> float:
        """Poll ``predicate`` every 0.2 s; records and returns the seconds since start."""
        within *= SLOW
        deadline = time.monotonic() + within
        while not predicate():
            if time.monotonic() > deadline:
                active: list[dict[str, str]] | str = "unknown (no answer)"
                with contextlib.suppress(AssertionError):
                    active = [a for s in ("pending", "firing") for a in self.alerts(s)]
                raise AssertionError(
                    f"{what}: not within {within} s; alerts: {active}\n{self.log()[-3000:]}"
                )
            time.sleep(0.2)
        took = time.monotonic() - self.started_at
        self.timings[what] = round(took, 1)
        return took

    def run_in_ns(
        self, *argv: str | Path, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        cmd = ["ip", "netns", "exec", self.ns, *[str(a) for a in argv]]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout * SLOW, check=False
        )
