"""One small config per error: the exact ``path: reason`` line the operator sees."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from bgplb.config import ConfigError, ExecCheck, parse_config

HEAD = """
node: {router_id: 10.0.0.10, local_as: 65001, backend_v6: "fd00::10"}
peers: [{address: 10.0.0.1, asn: 65000}]
"""


def errors(text: str, head: str = HEAD) -> list[str]:
    data = yaml.safe_load(textwrap.dedent(head) + textwrap.dedent(text))
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return [str(e) for e in info.value.errors]


CASES_FILE = Path(__file__).parent / "configs" / "errors.yaml"
_CASES = yaml.safe_load(CASES_FILE.read_text())


def _case_config(case: dict[str, Any]) -> dict[str, Any]:
    data = {k: v for k, v in case.items() if k != "error"}
    for key, value in _CASES["defaults"].items():
        data.setdefault(key, value)
    return data


@pytest.mark.parametrize("case", _CASES["cases"], ids=[c["error"][:50] for c in _CASES["cases"]])
def test_error(case: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_case_config(case))
    found = [str(e) for e in info.value.errors]
    assert any(e.startswith(case["error"]) for e in found), found


def test_the_cases_file_has_one_case_per_error() -> None:
    messages = [c["error"] for c in _CASES["cases"]]
    assert len(messages) == len(set(messages)) > 50


def test_every_problem_is_reported_not_just_the_first() -> None:
    found = errors(
        """
        services:
          - {name: a, vips: [10.0.0.1/24], ports: [{port: 0}]}
          - {name: a, vips: [10.9.0.1], mode: announce}
          - {name: b, vips: [10.9.0.1], ports: [{port: 80}, {port: 80}]}
        """
    )
    # field errors stop before the cross-checks: fix those first, then the rest is reported
    assert found == [
        "services[0].vips[0]: 10.0.0.1/24 is not a host address",
        "services[0].ports[0].port: Input should be greater than or equal to 1 (got 0)",
    ]
    found = errors(
        """
        services:
          - {name: a, vips: [10.0.0.1], ports: [{port: 80}]}
          - {name: a, vips: [10.9.0.1], mode: announce}
          - {name: b, vips: [10.9.0.1], ports: [{port: 80}, {port: 80}]}
        """
    )
    assert found == [
        "services[1].name: duplicate service name 'a' (also services[0])",
        "services[2].vips[0]: 10.9.0.1 is already used by services[1].vips[0] ('a')",
        "services[1].interface: required in announce mode (e.g. lo)",
        "services[2].ports[1]: duplicate port tcp/80 (also ports[0])",
    ]


def config(peer_asn: int = 65000, services: list[dict[str, Any]] | None = None, **node: Any) -> Any:
    return {
        "node": {"router_id": "10.0.0.10", "local_as": 65001, **node},
        "peers": [{"address": "10.0.0.1", "asn": peer_asn, "next_hop_v6": "fd00::10"}],
        "services": services or [],
    }


def announce(vips: list[str], **kw: Any) -> dict[str, Any]:
    return {"name": "a", "vips": vips, "mode": "announce", "interface": "lo", **kw}


def test_local_pref_and_prepend_are_fine_toward_the_matching_peer_type() -> None:
    local_pref = announce(["10.9.0.1"], attributes={"draining": {"local_pref": 0}})
    prepend = announce(["10.9.0.1"], attributes={"draining": {"as_path_prepend": 2}})
    med = announce(["10.9.0.1"], attributes={"draining": {"med": 500}})
    parse_config(config(peer_asn=65001, services=[local_pref]))
    parse_config(config(peer_asn=65000, services=[prepend]))
    parse_config(config(peer_asn=65000, services=[med], same_as_fleet=True))


def test_vip_forms() -> None:
    cfg = parse_config(config(services=[announce(["10.9.0.1", "10.9.0.2/32", "2001:db8::1/128"])]))
    assert [str(v) for v in cfg.services[0].vips] == ["10.9.0.1", "10.9.0.2", "2001:db8::1"]


def test_well_known_communities_are_accepted() -> None:
    names = ["no-export", "65535:0", "graceful-shutdown", "NOPEER"]
    cfg = parse_config(
        config(services=[announce(["10.9.0.1"], attributes={"healthy": {"communities": names}})])
    )
    communities = cfg.services[0].attributes.healthy.communities
    assert communities == ("no-export", "65535:0", "65535:0", "nopeer")


def test_exec_argv_and_env_may_hold_newlines_and_tabs() -> None:
    check = {"type": "exec", "argv": ["/bin/sh", "-c", "a\n\tb"], "env": {"X": "1\n2"}}
    cfg = parse_config(config(services=[announce(["10.9.0.1"], checks=[check])]))
    (parsed,) = cfg.services[0].checks
    assert isinstance(parsed, ExecCheck)
    assert parsed.argv[2] == "a\n\tb"
