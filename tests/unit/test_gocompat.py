"""The Go bgp-lb's command line (issue 16 item 4): Go flag syntax, its defaults and errors
(exit 2), the config as the Go binary runs it, the old gauge."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from bgplb.admin import AdminState
from bgplb.cli import main
from bgplb.config import load_config
from bgplb.gocompat import (
    GO_DEFAULT_CONFIG,
    GoFlagError,
    GoFlags,
    adjust_config,
    is_go_command_line,
    parse_go_flags,
)
from bgplb.metrics import Metrics
from bgplb.model import Route, ServiceMode
from bgplb.policy import desired_state

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed-format.json"


def test_defaults_are_the_go_binarys() -> None:
    assert parse_go_flags([]) == GoFlags(
        config=GO_DEFAULT_CONFIG,
        log_level="info",
        network_setup=True,
        ipvs_setup=False,
        metrics_address=":8081",
    )
    assert GoFlags().metrics_listen == ("0.0.0.0", 8081)


@pytest.mark.parametrize(
    "argv",
    [
        ["-config", "/x.json"],
        ["--config", "/x.json"],
        ["-config=/x.json"],
        ["--config=/x.json"],
    ],
)
def test_value_flag_forms(argv: list[str]) -> None:
    assert parse_go_flags(argv).config == "/x.json"


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["-ipvs-setup"], True),
        (["--ipvs-setup"], True),
        (["-ipvs-setup=true"], True),
        (["-ipvs-setup=1"], True),
        (["-ipvs-setup=T"], True),
        (["--ipvs-setup=TRUE"], True),
        (["-ipvs-setup=false"], False),
        (["-ipvs-setup=0"], False),
        (["-ipvs-setup=F"], False),
        (["-ipvs-setup=False"], False),
    ],
)
def test_bool_flag_forms(argv: list[str], want: bool) -> None:
    assert parse_go_flags(argv).ipvs_setup is want


def test_bool_never_takes_the_next_argument() -> None:
    # Go: "-network-setup false" is -network-setup=true and then a positional "false"
    with pytest.raises(GoFlagError, match="unexpected argument 'false'"):
        parse_go_flags(["-network-setup", "false"])
    assert parse_go_flags(["-network-setup=false"]).network_setup is False


def test_full_command_line_and_last_one_wins() -> None:
    flags = parse_go_flags(
        [
            "-config", "/etc/bgp-lb/config.json", "--log-level=debug", "-network-setup",
            "-ipvs-setup", "-metrics-address", "127.0.0.1:9100", "-log-level", "warning",
        ]
    )  # fmt: skip
    assert flags == GoFlags("/etc/bgp-lb/config.json", "warning", True, True, "127.0.0.1:9100")
    assert flags.metrics_listen == ("127.0.0.1", 9100)
    assert parse_go_flags(["-metrics-address=[::1]:9100"]).metrics_listen == ("::1", 9100)
    assert parse_go_flags(["-metrics-address", "localhost:1"]).metrics_listen == ("127.0.0.1", 1)


def test_double_dash_ends_the_flags() -> None:
    assert parse_go_flags(["-ipvs-setup", "--"]).ipvs_setup is True


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["-log-level", "trace"], "unsupported log level"),
        (["-log-level=INFO"], "unsupported log level"),
        (["-config"], "flag needs an argument: -config"),
        (["-nope"], "flag provided but not defined: -nope"),
        (["-ipvs-setup=yes"], 'invalid boolean value "yes"'),
        (["---config=x"], "bad flag syntax"),
        (["-=x"], "bad flag syntax"),
        (["-metrics-address", "8081"], "missing port"),
        (["-metrics-address", ":http"], "bad port"),
        (["-metrics-address", ":0"], "port must be"),
        (["-metrics-address", "example.com:8081"], "host must be"),
        (["-config", "a.json", "extra"], "unexpected argument 'extra'"),
    ],
)
def test_errors(argv: list[str], error: str) -> None:
    with pytest.raises(GoFlagError, match=error):
        parse_go_flags(argv)


@pytest.mark.parametrize(
    "argv",
    [["-log-level", "trace"], ["-config"], ["-ipvs-setup=maybe"], ["--metrics-address=x"]],
)
def test_cli_errors_exit_2_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("bgp-lb: ")
    assert "-metrics-address ADDR" in err


def test_cli_bad_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "config.json"
    bad.write_text('{"bgp": {"peers": []}, "service": {}}')
    assert main(["-config", str(bad)]) == 2
    assert "bgp.peers" in capsys.readouterr().err


def test_only_go_flags_select_the_go_command_line() -> None:
    assert is_go_command_line(["-config", "x"])
    assert is_go_command_line(["--ipvs-setup=1"])
    assert is_go_command_line(["-log-level=info"])
    for argv in ([], ["run"], ["-h"], ["--help"], ["--version"], ["status", "--json"]):
        assert not is_go_command_line(argv)


# --------------------------------------------------------------------------- the config


def test_default_flags_dummy_and_vip_without_ipvs() -> None:
    cfg = adjust_config(load_config(SEED), parse_go_flags(["-config", str(SEED)]))
    svc = cfg.services[0]
    assert svc.mode is ServiceMode.IPVS
    assert svc.ports == ()
    d = desired_state(cfg, {}, AdminState(), 0.0).dataplane
    assert [link.name for link in d.links] == ["matchbox"]
    assert {(a.ifname, str(a.address)) for a in d.addresses} == {("matchbox", "10.88.2.1")}
    assert not d.services
    # the metrics-only listener; the admin API stays on loopback
    assert cfg.node.api.metrics_listen == ipaddress.ip_address("0.0.0.0")
    assert cfg.node.api.metrics_port == 8081
    assert cfg.node.api.listen == ipaddress.ip_address("127.0.0.1")


def test_ipvs_setup_keeps_the_virtual_services() -> None:
    cfg = adjust_config(load_config(SEED), parse_go_flags(["-ipvs-setup"]))
    d = desired_state(cfg, {}, AdminState(), 0.0).dataplane
    assert {(k.port, k.protocol) for k in d.service_keys()} == {(80, "tcp"), (443, "tcp")}


def test_network_setup_false_touches_no_interface_and_still_announces() -> None:
    cfg = adjust_config(load_config(SEED), parse_go_flags(["-network-setup=false"]))
    assert cfg.services[0].mode is ServiceMode.ANNOUNCE
    desired = desired_state(cfg, {}, AdminState(), 0.0)
    assert not desired.dataplane.links
    assert not desired.dataplane.addresses
    assert not desired.vips  # nothing in the kernel is required before announcing


def test_log_level_flag_wins_over_the_file() -> None:
    cfg = adjust_config(load_config(SEED), parse_go_flags(["-log-level", "debug"]))
    assert cfg.node.log.level == "debug"


# --------------------------------------------------------------------------- the gauge


def test_go_gauge_follows_the_announcement() -> None:
    cfg = load_config(SEED)
    m = Metrics(legacy_path_gauge=True)
    series = (
        'bgp_lb_path_advertisement{next_hop="10.88.0.200",prefix="10.88.2.1",prefix_length="32"}'
    )
    m.set_path_advertisement(cfg, {})
    assert f"{series} 0.0" in m.exposition().decode()
    route = Route(ipaddress.ip_network("10.88.2.1/32"), None, service="matchbox")
    m.set_path_advertisement(cfg, {"10.88.0.253": frozenset({route})})
    assert f"{series} 1.0" in m.exposition().decode()
    assert "bgp_lb_path_advertisement" not in Metrics().exposition().decode()


def test_require_vip_is_announce_mode_only() -> None:
    from bgplb.config import ConfigError, parse_config

    base = {
        "node": {"router_id": "10.0.0.1", "local_as": 65001},
        "peers": [{"address": "10.0.0.254", "asn": 65000}],
    }
    ok = {**base, "services": [{"name": "a", "vips": ["10.9.0.1"], "mode": "announce",
                                "require_vip": False}]}  # fmt: skip
    assert parse_config(ok).services[0].require_vip is False
    bad = {**base, "services": [{"name": "a", "vips": ["10.9.0.1"], "require_vip": False}]}
    with pytest.raises(ConfigError, match="require_vip"):
        parse_config(bad)
    needs_interface = {**base, "services": [{"name": "a", "vips": ["10.9.0.1"],
                                             "mode": "announce"}]}  # fmt: skip
    with pytest.raises(ConfigError, match="interface"):
        parse_config(needs_interface)


async def test_reload_applies_the_go_flags_again(tmp_path: Path) -> None:
    from .test_agent import Harness

    flags = parse_go_flags([])  # no -ipvs-setup: no virtual service, before and after reload
    h = Harness(tmp_path, config_adjust=lambda c: adjust_config(c, flags))
    h.agent.config = adjust_config(h.agent.config, flags)
    await h.start()
    result = await h.agent.reload()
    assert result.ok, result.errors
    assert all(s.ports == () for s in h.agent.config.services)
    assert h.agent.config.node.api.metrics_port == 8081
    await h.stop()


def test_help_among_the_go_flags_prints_the_usage_and_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["-config", "x.json", "-help"]) == 0
    assert "-ipvs-setup[=BOOL]" in capsys.readouterr().out
    assert main(["--log-level=info", "-h"]) == 0
