"""bgp-lb doctor (issue 16 item 3): the pure report from canned status documents, the CLI
against a stub API, the exit codes."""

from __future__ import annotations

import argparse
import copy
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from bgplb.cli import main
from bgplb.config import ConfigIssue, parse_config
from bgplb.dataplane.prereq import Prerequisite
from bgplb.doctor import Inputs, Level, Report, diagnose, render
from bgplb.doctor_cli import run_doctor
from bgplb.status import StatusResponse

HEALTHY = json.loads((Path(__file__).parent / "data" / "doctor-status-healthy.json").read_text())
RAW = {
    "node": {"router_id": "10.0.0.1", "local_as": 65001},
    "peers": [{"address": "10.0.0.254", "asn": 65000}, {"address": "10.0.0.253", "asn": 65001}],
    "services": [{"name": "web", "vips": ["10.99.0.1"], "ports": [{"port": 80}]}],
}
OK_PREREQ = [Prerequisite("module ip_vs", True, "loaded", "")]


def doc(**changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(HEALTHY)
    d.update(changes)
    return d


def run(status: dict[str, Any] | None, **kw: Any) -> Report:
    base: dict[str, Any] = {
        "config_path": "/etc/bgp-lb/config.yaml",
        "config": parse_config(RAW),
        "prerequisites": OK_PREREQ,
        "status": StatusResponse.model_validate(status) if status is not None else None,
        "api": "http://127.0.0.1:9180",
    }
    base.update(kw)
    return diagnose(Inputs(**base))


def fails(report: Report) -> list[tuple[str, str]]:
    return [(f.step, f.name) for f in report.findings if f.level is Level.FAIL]


def test_healthy_node_passes_every_step_in_order() -> None:
    report = run(HEALTHY)
    assert report.ok, render(report)
    steps = [f.step for f in report.findings]
    order = ["config", "kernel", "agent", "processes", "sessions", "services", "checks"]
    assert [s for s in dict.fromkeys(steps)] == [*order, "acknowledged"]
    text = render(report)
    assert "doctor: all good" in text
    assert "image 2026.12.1" in text


def test_invalid_config_fails_with_the_field_and_a_fix() -> None:
    report = run(HEALTHY, config=None, config_issues=[ConfigIssue("peers[0].asn", "bad")])
    assert ("config", "/etc/bgp-lb/config.yaml: peers[0].asn") in fails(report)
    f = next(f for f in report.findings if f.step == "config")
    assert "check-config" in f.fix


def test_kernel_prerequisite_fails_with_check_nodes_fix() -> None:
    bad = [Prerequisite("module ip_vs", False, "not loaded", "modprobe ip_vs")]
    report = run(HEALTHY, prerequisites=bad)
    f = next(f for f in report.findings if f.step == "kernel")
    assert f.level is Level.FAIL
    assert f.fix == "modprobe ip_vs"


def test_agent_unreachable_skips_the_rest() -> None:
    report = run(None, status_error="cannot reach the bgp-lb agent: refused")
    assert not report.ok
    agent = next(f for f in report.findings if f.step == "agent")
    assert agent.level is Level.FAIL
    assert "systemctl status bgp-lb" in agent.fix
    rest = [f for f in report.findings if f.step in ("processes", "sessions", "acknowledged")]
    assert rest
    assert all(f.level is Level.SKIP for f in rest)


def test_exabgp_not_running() -> None:
    report = run(doc(processes=[{"name": "exabgp", "running": False, "restarts": 3}]))
    assert ("processes", "exabgp") in fails(report)
    assert "3 restart(s)" in render(report)


def test_bfdd_wanted_by_the_config_but_not_reported_fails() -> None:
    class Bfd:
        enabled = True

    class Peer:
        bfd = Bfd()

    class Cfg:
        peers = [Peer()]
        services: list[object] = []

    report = run(HEALTHY, config=Cfg())
    assert ("processes", "bfdd") in fails(report)
    # without BFD in the config, bfdd is not looked for
    assert not any(f.name == "bfdd" for f in run(HEALTHY).findings)


def test_session_not_established_says_why_and_how() -> None:
    d = doc()
    d["peers"][0].update(state="idle", reason="Connection refused", routes_advertised=0)
    d["services"][0]["routes"].pop("10.0.0.254")
    report = run(d)
    assert fails(report) == [("sessions", "peer 10.0.0.254")]
    f = next(f for f in report.findings if f.name == "peer 10.0.0.254")
    assert "Connection refused" in f.detail
    assert "remote-as 65001" in f.fix
    d["peers"][0]["state"] = "connected"
    f = next(f for f in run(d).findings if f.name == "peer 10.0.0.254")
    assert "TCP is up" in f.fix


@pytest.mark.parametrize(
    ("reason", "fix"),
    [("vip_missing", "ip -br addr"), ("ipvs_missing", "ipvsadm -Ln"), ("dataplane_conflict", "")],
)
def test_vip_or_ipvs_missing(reason: str, fix: str) -> None:
    d = doc()
    d["services"][0].update(decision="withdraw", reason=reason, routes={})
    report = run(d)
    assert ("services", "service web 10.99.0.1") in fails(report)
    f = next(f for f in report.findings if f.step == "services")
    assert fix in f.fix
    assert ("acknowledged", "service web") in fails(report)


def test_failing_check_shows_its_last_error() -> None:
    d = doc()
    d["services"][0].update(decision="withdraw", reason="check_failed", routes={})
    d["services"][0]["checks"] = [
        {"check": "tcp", "status": "down", "last_ok": False, "failures": 3,
         "last_error": "connect 10.0.0.1:80: Connection refused"}
    ]  # fmt: skip
    report = run(d)
    f = next(f for f in report.findings if f.step == "checks")
    assert f.level is Level.FAIL
    assert "Connection refused" in f.detail
    assert "3 failure" in f.detail


def test_route_not_acknowledged_by_the_speaker() -> None:
    d = doc()
    d["services"][0]["routes"] = {"10.0.0.253": ["10.99.0.1/32"]}
    report = run(d)
    assert fails(report) == [("acknowledged", "service web -> 10.0.0.254")]


def test_drained_node_warns_but_passes() -> None:
    d = doc()
    d["node"].update(drained=True, drain_reason="node.start_drained: ...")
    d["services"][0].update(decision="withdraw", reason="node_draining", routes={})
    report = run(d)
    assert report.ok
    warn = [f for f in report.findings if f.level is Level.WARN]
    assert any("undrain --all" in f.fix for f in warn)


def test_bad_state_file_and_kernel_knob_fail() -> None:
    d = doc(
        state_files=[{"file": "admin", "ok": False, "problem": "disk full", "errors": 1}],
        kernel_knobs=[{"knob": "net.ipv4.vs.sloppy_tcp", "want": "1", "got": "0", "ok": False}],
    )
    assert set(fails(run(d))) == {
        ("agent", "state file admin"),
        ("kernel", "knob net.ipv4.vs.sloppy_tcp"),
    }


# --------------------------------------------------------------------------- the CLI


class _Api(BaseHTTPRequestHandler):
    body = b"{}"

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/api/v1/status" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(type(self).body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api() -> Iterator[tuple[str, type[_Api]]]:
    handler = type("Handler", (_Api,), {})
    server = HTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def cli_args(config: Path, api: str, json_out: bool) -> argparse.Namespace:
    return argparse.Namespace(config=str(config), json=json_out, api=api, root="/nonexistent")


def test_cli_json_and_exit_codes(tmp_path: Path, api: tuple[str, type[_Api]]) -> None:
    url, handler = api
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(RAW))
    handler.body = json.dumps(HEALTHY).encode()
    out = io.StringIO()
    code = run_doctor(cli_args(cfg, url, True), out)
    data = json.loads(out.getvalue())
    # the kernel step reads /nonexistent: its prerequisites fail, nothing else does
    assert {f["step"] for f in data["findings"] if f["level"] == "fail"} == {"kernel"}
    assert code == 1
    assert data["ok"] is False
    bad = doc()
    bad["peers"][1]["state"] = "down"
    handler.body = json.dumps(bad).encode()
    out = io.StringIO()
    assert run_doctor(cli_args(cfg, url, False), out) == 1
    assert "FAIL  peer 10.0.0.253" in out.getvalue()


def test_cli_agent_down(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(RAW))
    out = io.StringIO()
    assert run_doctor(cli_args(cfg, "http://127.0.0.1:9", False), out) == 1
    assert "cannot reach the bgp-lb agent" in out.getvalue()


def test_subcommand_is_wired(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["doctor", str(tmp_path / "missing.yaml"), "--api", "http://127.0.0.1:9"])
    assert code == 1
    assert "FAIL" in capsys.readouterr().out


async def test_agent_status_lists_the_speaker_process(tmp_path: Path) -> None:
    from .test_agent import Harness

    h = Harness(tmp_path)
    await h.start()
    assert [(p.name, p.running) for p in h.agent.status().processes] == [("exabgp", True)]
    await h.stop()
    assert [(p.name, p.running) for p in h.agent.status().processes] == [("exabgp", False)]
