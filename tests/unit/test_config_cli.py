"""check-config / print-config through the real CLI entry: exit codes and output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bgplb.cli import main

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.*"))

GOOD = """\
node:
  router_id: 10.0.0.10
  local_as: 65001
peers:
  - address: 10.0.0.1
    asn: 65000
services:
  - name: web
    vips: [10.9.0.1]
    ports: [{port: 80, target_port: 8080}]
    checks:
      - type: exec
        argv: [/bin/true]
        env: {API_TOKEN: hunter2, MODE: fast}
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_passes_check_config(
    capsys: pytest.CaptureFixture[str], example: Path
) -> None:
    rc, out, err = run(capsys, "check-config", str(example))
    assert (rc, err) == (0, "")
    assert out.splitlines()[-1].startswith("OK: ")


def test_check_config_ok(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, err = run(capsys, "check-config", write(tmp_path, GOOD))
    assert (rc, out, err) == (0, "OK: 1 service, 1 peer\n", "")


def test_check_config_prints_every_error_and_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = GOOD.replace("vips: [10.9.0.1]", "vips: [10.0.0.1/24]").replace("asn: 65000", "asn: 0")
    rc, out, err = run(capsys, "check-config", write(tmp_path, bad))
    assert rc == 2
    assert out == ""
    assert err.splitlines() == [
        "peers[0].asn: Input should be greater than or equal to 1 (got 0)",
        "services[0].vips[0]: 10.0.0.1/24 is not a host address",
    ]


@pytest.mark.parametrize(
    ("text", "name", "expected"),
    [
        ("node: [\n  router_id: 1\n", "c.yaml", "c.yaml: line 3: "),
        ("node: {a: 1\n", "c.yaml", "c.yaml: line 2: "),
        ("node: 1\nnode: 2\n", "c.yaml", "c.yaml: line 2: duplicate key 'node'"),
        ('{"node": 1, "node": 2}', "c.json", "c.json: duplicate key 'node'"),
        ("[" * 100000, "c.json", "c.json: nested too deeply"),
        ("[" * 100000, "c.yaml", "c.yaml: "),
        ('{"node": }', "c.json", "c.json: line 1: Expecting value (column 10)"),
        ("- 1\n- 2\n", "c.yaml", "the top level must be a mapping of keys, not a list"),
        ("", "c.yaml", "the config is empty"),
        ("just text", "c.yaml", "the top level must be a mapping of keys, not a str"),
        ("\tnode: 1", "c.yaml", "c.yaml: line 1: "),
    ],
)
def test_syntax_errors_name_the_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, name: str, expected: str
) -> None:
    rc, _out, err = run(capsys, "check-config", write(tmp_path, text, name))
    assert rc == 2
    assert "Traceback" not in err
    assert expected in err


def test_missing_file_and_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, _out, err = run(capsys, "check-config", str(tmp_path / "nope.yaml"))
    assert (rc, err) == (2, f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory\n")
    rc, _out, err = run(capsys, "print-config", str(tmp_path))
    assert rc == 2
    assert "cannot read" in err


def test_binary_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    rc, _out, err = run(capsys, "check-config", str(path))
    assert rc == 2
    assert "not UTF-8 text" in err


def test_missing_secret_files_are_reported_at_load(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = tmp_path / "empty.md5"
    empty.write_text("")
    text = GOOD.replace(
        "asn: 65000",
        f"asn: 65000\n    md5_password_file: {tmp_path / 'r1.md5'}\n"
        f"  - address: 10.0.0.2\n    asn: 65000\n    md5_password_file: {empty}",
    )
    rc, _out, err = run(capsys, "check-config", write(tmp_path, text))
    assert rc == 2
    missing = tmp_path / "r1.md5"
    assert err.splitlines() == [
        f"peers[0].md5_password_file: {missing}: cannot read: No such file or directory",
        f"peers[1].md5_password_file: {empty}: the file is empty",
    ]


def test_print_config_shows_only_what_was_set(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc, out, err = run(capsys, "print-config", write(tmp_path, GOOD))
    assert (rc, err) == (0, "")
    data = yaml.safe_load(out)
    assert data["node"] == {"router_id": "10.0.0.10", "local_as": 65001}
    assert data["services"][0]["ports"] == [{"port": 80, "target_port": 8080}]


def test_print_config_effective_fills_defaults_and_redacts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc, out, _err = run(
        capsys, "print-config", "--effective", "--format", "json", write(tmp_path, GOOD)
    )
    assert rc == 0
    data = json.loads(out)
    assert data["node"]["api"] == {
        "listen": "127.0.0.1",
        "port": 9180,
        "token_file": None,
        "metrics_listen": None,
        "metrics_port": None,
    }
    assert data["peers"][0]["hold_time"] == 9
    check = data["services"][0]["checks"][0]
    assert (check["interval"], check["fast_interval"], check["timeout"]) == (1.0, 0.25, 0.8)
    assert (check["rise"], check["fall"]) == (3, 2)
    assert check["env"] == {"API_TOKEN": "<redacted>", "MODE": "fast"}
    assert data["services"][0]["ports"][0]["scheduler"] == "wlc"
    assert "hunter2" not in out


def test_print_config_yaml_round_trips(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = GOOD.replace("API_TOKEN: hunter2, ", "")
    rc, out, _err = run(capsys, "print-config", "--effective", write(tmp_path, text))
    assert rc == 0
    again = write(tmp_path, out, "again.yaml")
    rc, out2, _err = run(capsys, "print-config", "--effective", again)
    assert (rc, out2) == (0, out)


def test_print_config_of_the_seed_format_says_what_it_chose(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    seed = json.loads((Path(__file__).parents[2] / "examples" / "seed-format.json").read_text())
    del seed["service"]["httphealthcheck"]
    rc, out, _err = run(
        capsys, "print-config", "--effective", write(tmp_path, json.dumps(seed), "s.json")
    )
    assert rc == 0
    assert out.startswith("# converted from the original bgp-lb (seed) JSON format\n")
    assert "# note: service: no health check configured" in out
    check = yaml.safe_load(out)["services"][0]["checks"][0]
    assert (check["type"], check["addresses"], check["require"]) == (
        "icmp",
        ["1.1.1.1", "8.8.8.8"],
        "any",
    )
    rc, out, err = run(capsys, "print-config", "--format", "json", str(tmp_path / "s.json"))
    assert rc == 0
    json.loads(out)
    assert "note: service: no health check configured" in err
    rc, out, _err = run(capsys, "check-config", str(tmp_path / "s.json"))
    assert rc == 0
    assert "note: service: no health check configured" in out
