"""An http check's ``host`` becomes the probe's Host header (and the TLS server name): one
line of visible ASCII, refused with a field path otherwise (check-config exits 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bgplb.cli import main
from bgplb.config import ConfigError, HttpCheck, parse_config

PATH = "services[0].checks[0].host"


def with_host(host: str, kind: str = "http") -> dict[str, Any]:
    return {
        "node": {"router_id": "10.0.0.10", "local_as": 65001},
        "peers": [{"address": "10.0.0.1", "asn": 65000}],
        "services": [
            {
                "name": "web",
                "vips": ["10.9.0.1"],
                "ports": [{"port": 80}],
                "checks": [{"type": kind, "host": host}],
            }
        ],
    }


def errors(host: str, kind: str = "http") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(with_host(host, kind))
    return [str(e) for e in info.value.errors]


@pytest.mark.parametrize(
    ("host", "code"),
    [
        ("a\r\nX-Evil: 1", "000D"),
        ("web\n", "000A"),
        ("a\tb", "0009"),
        ("a\x00b", "0000"),
        ("a\x7fb", "007F"),
        ("a\x85X-Evil: 1", "0085"),  # NEL: a line break to str.splitlines, a C1 control
        ("a\u2028b", "2028"),  # LINE SEPARATOR
        ("a\u200bb", "200B"),  # zero-width space: invisible in logs and configs
        ("a\u202eb", "202E"),  # right-to-left override
    ],
)
def test_control_characters_are_refused(host: str, code: str) -> None:
    assert errors(host) == [
        f"{PATH}: contains a control character (U+{code}): a Host header is one line"
    ]
    assert errors(host, "https") == errors(host)


@pytest.mark.parametrize(
    "host", ["exa mple.com", "bücher.de", "a/b", "a@b", "ex.com:99999", "ex.com:", "[::1"]
)
def test_what_is_not_a_host_header_is_refused(host: str) -> None:
    (error,) = errors(host)
    assert error.startswith(f"{PATH}: '{host}' is not a valid Host header (")


@pytest.mark.parametrize(
    "host",
    [
        "",
        "example.com",
        "example.com:8080",
        "10.0.0.1",
        "[2001:db8::1]",
        "[2001:db8::1]:443",
        "xn--bcher-kva.de",
        "under_score.example",
        "localhost",
    ],
)
def test_host_headers_are_accepted(host: str) -> None:
    check = parse_config(with_host(host)).services[0].checks[0]
    assert isinstance(check, HttpCheck)
    assert check.host == host


def test_check_config_names_the_field_and_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(with_host("a\x85X-Evil: 1")))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{PATH}: contains a control character (U+0085)" in err
    assert len(err.strip().splitlines()) == 1
