"""bgp-lb doctor and the Go command line (issue 16 items 3+4): an agent started the Go way is
diagnosed against the config as its flags adjust it (status node.go_flags), the doctor takes
the Go flags itself, flags that differ from the agent's fail, the config.json default."""

from __future__ import annotations

import argparse
import copy
import io
import json
import threading
from collections.abc import Iterator
from http.server import HTTPServer
from pathlib import Path
from typing import Any

import pytest

from bgplb import doctor_cli
from bgplb.agent import Agent
from bgplb.bgp.fake import FakeSpeaker
from bgplb.cli import main
from bgplb.clock import FakeClock
from bgplb.config import load_config, parse_config
from bgplb.dataplane.fake import FakeDataplane
from bgplb.dataplane.prereq import check_prerequisites
from bgplb.doctor import Inputs, Level, Report, diagnose, effective_config, render
from bgplb.doctor_cli import choose_config, run_doctor, split_go_flags
from bgplb.eventlog import EventLog
from bgplb.gocompat import GoFlags
from bgplb.status import StatusResponse

from .test_doctor import HEALTHY, RAW, _Api
from .test_prereq import make_root

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed-format.json"


def go_status(
    *, ipvs_setup: bool = False, network_setup: bool = True, config: str = "/etc/bgp-lb/x.json"
) -> dict[str, Any]:
    """The healthy status of an agent started as ``bgp-lb -config X [flags]``."""
    d = copy.deepcopy(HEALTHY)
    d["node"]["go_flags"] = {
        "config": config,
        "network_setup": network_setup,
        "ipvs_setup": ipvs_setup,
        "metrics_address": ":8081",
        "log_level": "info",
    }
    if not network_setup:
        d["services"][0]["mode"] = "announce"
    return d


def fails(report: Report) -> list[tuple[str, str]]:
    return [(f.step, f.name) for f in report.findings if f.level is Level.FAIL]


def go_root(tmp_path: Path, *, dummy: bool = True) -> Path:
    """A node set up for the Go tool without -ipvs-setup: no IPVS in the kernel at all (no
    ip_vs module, no net.ipv4.vs.* sysctls), forwarding off; dummy and the ARP sysctls only
    when the node puts VIPs on a dummy link."""
    arp = {"net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.all.arp_announce": "2"}
    return make_root(
        tmp_path,
        loaded=("dummy",) if dummy else (),
        available=(),
        sysctls={**(arp if dummy else {}), "net.ipv4.ip_forward": "0"},
    )


# --------------------------------------------------------------------------- pure


def test_go_agent_without_ipvs_setup_is_diagnosed_without_ipvs() -> None:
    inp = Inputs(
        config_path="/etc/bgp-lb/x.json",
        config=parse_config(RAW),
        prerequisites=[],
        status=StatusResponse.model_validate(go_status()),
        api="http://127.0.0.1:9180",
    )
    eff = effective_config(inp)
    assert eff is not None
    assert eff.services[0].ports == ()  # the config the agent really runs
    report = diagnose(inp)
    assert report.ok, render(report)
    line = next(f for f in report.findings if f.name == "Go flags")
    assert line.step == "config"
    assert "-ipvs-setup=false" in line.detail
    assert "no IPVS virtual service" in line.detail
    svc = next(f for f in report.findings if f.step == "services")
    assert "no IPVS virtual service" in svc.detail
    assert "VIP and IPVS service" not in svc.detail


def test_agent_run_natively_has_no_go_line() -> None:
    inp = Inputs(
        config_path="/etc/bgp-lb/config.yaml",
        config=parse_config(RAW),
        prerequisites=[],
        status=StatusResponse.model_validate(HEALTHY),
    )
    assert effective_config(inp) == parse_config(RAW)
    assert not any(f.name == "Go flags" for f in diagnose(inp).findings)


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def api() -> Iterator[tuple[str, type[_Api]]]:
    handler = type("Handler", (_Api,), {})
    server = HTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def seed(tmp_path: Path) -> Path:
    """The Go tool's own config.json (one service, ports 80 and 443, peers .253/.254)."""
    path = tmp_path / "config.json"
    path.write_text(SEED.read_text())
    return path


def seed_status(config: Path, **flags: Any) -> dict[str, Any]:
    """A healthy status for the seed's config, started with the Go flags."""
    d = go_status(config=str(config), **flags)
    d["node"].update(router_id="10.88.0.200", local_as=65512)
    d["services"][0].update(
        name="matchbox",
        vips=["10.88.2.1"],
        routes={"10.88.0.253": ["10.88.2.1/32"], "10.88.0.254": ["10.88.2.1/32"]},
        peers=["10.88.0.253", "10.88.0.254"],
    )
    d["services"][0]["checks"] = [{"check": "http", "status": "up", "last_ok": True}]
    d["peers"] = [
        {"address": a, "asn": 65512, "type": "ibgp", "state": "up", "routes_advertised": 1}
        for a in ("10.88.0.253", "10.88.0.254")
    ]
    return d


def doctor(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["doctor", *argv])
    return code, capsys.readouterr().out


def test_go_agent_without_ipvs_setup_on_a_node_without_ipvs_exits_0(
    tmp_path: Path, api: tuple[str, type[_Api]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, handler = api
    cfg = seed(tmp_path)
    handler.body = json.dumps(seed_status(cfg)).encode()
    root = go_root(tmp_path)
    code, out = doctor([str(cfg), "--api", url, "--root", str(root)], capsys)
    assert code == 0, out
    assert "ip_vs" not in out  # no IPVS module or sysctl is looked for
    assert "ip_forward" not in out
    assert "FAIL" not in out
    assert "ok    Go flags: the running agent was started with the Go command line" in out
    # the same node diagnosed as if the agent ran the raw file: IPVS is missing
    raw = check_prerequisites(load_config(cfg), root)
    assert {p.name for p in raw if not p.ok} >= {"module ip_vs", "sysctl net.ipv4.ip_forward"}


def test_network_setup_false_no_vip_or_interface_failures(
    tmp_path: Path, api: tuple[str, type[_Api]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, handler = api
    cfg = seed(tmp_path)
    handler.body = json.dumps(seed_status(cfg, network_setup=False)).encode()
    root = go_root(tmp_path, dummy=False)  # nothing at all: no dummy, no ARP sysctls
    code, out = doctor(["--json", str(cfg), "--api", url, "--root", str(root)], capsys)
    data = json.loads(out)
    assert code == 0, out
    assert data["ok"] is True
    names = {f["name"] for f in data["findings"]}
    assert not {n for n in names if "dummy" in n or "arp" in n or "ip_vs" in n}
    svc = next(f for f in data["findings"] if f["step"] == "services")
    assert svc["level"] == "ok"
    assert "without a VIP looked for" in svc["detail"]
    line = next(f for f in data["findings"] if f["name"] == "Go flags")
    assert "announce only" in line["detail"]


def test_go_flags_given_to_the_doctor_while_the_agent_is_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = seed(tmp_path)
    root = go_root(tmp_path)
    code, out = doctor(
        ["-config", str(cfg), "--api", "http://127.0.0.1:9", "--root", str(root)], capsys
    )
    assert code == 1  # the agent is down
    assert "Go flags given to the doctor (the agent's status could not be read)" in out
    kernel = [line for line in out.splitlines() if "ip_vs" in line or "FAIL  module" in line]
    assert kernel == []  # without -ipvs-setup: no IPVS needed
    # -ipvs-setup given: now IPVS is needed, and missing on this node
    code, out = doctor(
        ["--api", "http://127.0.0.1:9", f"--config={cfg}", "--root", str(root), "-ipvs-setup"],
        capsys,
    )
    assert "FAIL  module ip_vs" in out


def test_flags_that_differ_from_the_running_agents_fail_with_a_fix(
    tmp_path: Path, api: tuple[str, type[_Api]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, handler = api
    cfg = seed(tmp_path)
    handler.body = json.dumps(seed_status(cfg)).encode()  # the agent: no -ipvs-setup
    root = go_root(tmp_path)
    code, out = doctor(
        ["-config", str(cfg), "-ipvs-setup", "--api", url, "--root", str(root)], capsys
    )
    assert code == 1
    assert "FAIL  Go flags: -ipvs-setup: given true, the agent false" in out
    assert f"fix: give the doctor the agent's flags (bgp-lb doctor -config {cfg}" in out
    assert "FAIL  module ip_vs" not in out  # diagnosed as the agent really runs
    # the same flags as the agent's: no failure
    code, out = doctor(["-config", str(cfg), "--api", url, "--root", str(root)], capsys)
    assert code == 0, out
    assert "ok    Go flags: the same as the running agent's" in out
    # another file than the agent's
    other = tmp_path / "other.json"
    other.write_text(cfg.read_text())
    code, out = doctor(["-config", str(other), "--api", url, "--root", str(root)], capsys)
    assert code == 1
    assert f"-config: given {other}, the agent {cfg}" in out


def test_go_flags_given_but_the_agent_runs_natively_fail(
    tmp_path: Path, api: tuple[str, type[_Api]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, handler = api
    cfg = seed(tmp_path)
    status = seed_status(cfg)
    status["node"].pop("go_flags")  # bgp-lb run
    handler.body = json.dumps(status).encode()
    code, out = doctor(["--json", "-config", str(cfg), "--api", url, "--root", "/x"], capsys)
    data = json.loads(out)
    bad = [f for f in data["findings"] if f["name"] == "Go flags"]
    assert [f["level"] for f in bad] == ["fail"]
    assert "'bgp-lb run'" in bad[0]["detail"]
    assert code == 1


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["-log-level=loud"], "unsupported log level"),
        (["-ipvs-setup=maybe"], "invalid boolean value"),
        (["/etc/x.yaml", "-ipvs-setup"], "give the file as -config FILE"),
        (["-network-setup", "false"], "give the file as -config FILE"),  # Go: a stray 'false'
    ],
)
def test_bad_go_flags_exit_2(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", *argv]) == 2
    assert error in capsys.readouterr().err


def test_split_go_flags_from_the_doctors_own() -> None:
    own, go = split_go_flags(
        ["--json", "-config", "/c.json", "--api", "http://x", "-network-setup=false",
         "--metrics-address", ":9100", "-ipvs-setup", "--log-level=debug"]
    )  # fmt: skip
    assert own == ["--json", "--api", "http://x"]
    assert go == [
        "-config", "/c.json", "-network-setup=false", "--metrics-address", ":9100",
        "-ipvs-setup", "--log-level=debug",
    ]  # fmt: skip


# --------------------------------------------------------------------------- the default file


def test_default_config_is_yaml_else_the_go_json() -> None:
    yaml_, json_ = "/etc/bgp-lb/config.yaml", "/etc/bgp-lb/config.json"
    assert choose_config(None, None, lambda p: p == json_) == (
        json_,
        f"no CONFIG given and no {yaml_}: the Go default",
    )
    assert choose_config(None, None, lambda p: True)[0] == yaml_
    assert choose_config(None, None, lambda p: False)[0] == yaml_  # and it says it is missing
    assert choose_config("/x.yaml", None, lambda p: True) == ("/x.yaml", "")
    assert choose_config(None, GoFlags(), lambda p: True) == (json_, "")  # -config's default


def test_cli_without_config_uses_config_json_when_only_that_exists(
    tmp_path: Path,
    api: tuple[str, type[_Api]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, handler = api
    cfg = seed(tmp_path)
    monkeypatch.setattr(doctor_cli, "YAML_DEFAULT", str(tmp_path / "config.yaml"))
    monkeypatch.setattr(doctor_cli, "GO_DEFAULT_CONFIG", str(cfg))
    handler.body = json.dumps(seed_status(cfg)).encode()
    code, out = doctor(["--api", url, "--root", str(go_root(tmp_path))], capsys)
    assert code == 0, out
    assert f"ok    {cfg}: 1 service(s), 2 peer(s) (no CONFIG given and no " in out
    assert "the Go default)" in out


def test_cli_args_namespace_without_go_flags_still_works(
    tmp_path: Path, api: tuple[str, type[_Api]]
) -> None:
    url, handler = api
    cfg = seed(tmp_path)
    handler.body = json.dumps(seed_status(cfg)).encode()
    args = argparse.Namespace(config=str(cfg), json=False, api=url, root=str(go_root(tmp_path)))
    out = io.StringIO()
    assert run_doctor(args, out) == 0, out.getvalue()


# --------------------------------------------------------------------------- the status


def test_status_says_how_the_agent_was_started(tmp_path: Path) -> None:
    cfg = seed(tmp_path)
    clock = FakeClock()
    log = EventLog(clock)

    def agent(go_flags: GoFlags | None) -> Agent:
        return Agent(
            load_config(cfg),
            dataplane=FakeDataplane(log, clock),
            speaker=FakeSpeaker(log),
            clock=clock,
            config_path=cfg,
            go_flags=go_flags,
        )

    assert agent(None).status().node.go_flags is None
    flags = GoFlags(config=str(cfg), ipvs_setup=True, metrics_address="127.0.0.1:9100")
    st = agent(flags).status()
    assert st.node.go_flags is not None
    assert st.node.go_flags.model_dump() == {
        "config": str(cfg),
        "network_setup": True,
        "ipvs_setup": True,
        "metrics_address": "127.0.0.1:9100",
        "log_level": "info",
    }
    # a relative -config is reported as the absolute path the agent reads
    rel = GoFlags(config="config.json")
    got = agent(rel).status().node.go_flags
    assert got is not None
    assert Path(got.config).is_absolute()
    assert got.config.endswith("/config.json")
    # and it round-trips through the JSON the API serves
    again = StatusResponse.model_validate_json(st.model_dump_json())
    assert again.node.go_flags == st.node.go_flags


def test_bgp_lb_status_prints_the_go_command_line(tmp_path: Path) -> None:
    from bgplb.client import print_status

    out = io.StringIO()
    print_status(StatusResponse.model_validate(go_status(config="/etc/bgp-lb/config.json")), out)
    lines = out.getvalue().splitlines()
    assert lines[1] == (
        "Go command line: -config /etc/bgp-lb/config.json -log-level info "
        "-network-setup=true -ipvs-setup=false -metrics-address :8081"
    )
    assert lines[2] == ""
    out = io.StringIO()
    print_status(StatusResponse.model_validate(HEALTHY), out)
    assert "Go command line" not in out.getvalue()
    assert out.getvalue().splitlines()[1] == ""


def test_help_says_how_the_go_flags_combine(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["doctor", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "[-ipvs-setup[=BOOL]]" in text
    assert "mix in any order with --json and --api" in text
    assert "/etc/bgp-lb/config.json if only that exists" in text


def test_another_file_than_the_go_agents_fails(
    tmp_path: Path, api: tuple[str, type[_Api]], capsys: pytest.CaptureFixture[str]
) -> None:
    """No Go flags given: a stale config.yaml read while the agent runs config.json."""
    url, handler = api
    cfg = seed(tmp_path)
    stale = tmp_path / "config.yaml"
    stale.write_text(cfg.read_text())
    handler.body = json.dumps(seed_status(cfg)).encode()
    root = str(go_root(tmp_path))
    code, out = doctor([str(stale), "--api", url, "--root", root], capsys)
    assert code == 1
    assert f"FAIL  config file: the agent runs {cfg}, the doctor read {stale}" in out
    assert f"fix: bgp-lb doctor {cfg}" in out
    code, out = doctor([str(cfg), "--api", url, "--root", root], capsys)
    assert code == 0, out
