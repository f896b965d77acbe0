"""Fuzz the config loader: any document, any text, any file -> a ``Config`` or a
``ConfigError``, never another exception (a reload must answer 400, never crash or 500).

Inputs: arbitrary JSON-like trees; the valid examples (examples/) and every case of
tests/unit/configs/errors.yaml mutated in several places at once (values replaced by arbitrary
trees, keys removed or added, list items appended), also round-tripped through YAML/JSON text;
arbitrary text and bytes, decoded as YAML and as JSON, and written to files on disk.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from bgplb.config import Config, ConfigError, load_config, parse_config, read_config_data
from bgplb.config.loader import MAX_BYTES, decode
from tests.harness.figures import count, record_figures  # noqa: F401  (fixture)

from .fuzz_support import fuzz

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"
CASES = yaml.safe_load((Path(__file__).parent / "configs" / "errors.yaml").read_text())


def _seeds() -> list[Any]:
    seeds: list[Any] = [
        yaml.safe_load((EXAMPLES / n).read_text())
        for n in ("single-service.yaml", "dual-stack-pool.yaml")
    ]
    seeds.append(json.loads((EXAMPLES / "seed-format.json").read_text()))
    for case in CASES["cases"]:
        data = {k: v for k, v in case.items() if k != "error"}
        for key, value in CASES["defaults"].items():
            data.setdefault(key, value)
        seeds.append(data)
    return seeds


SEEDS = _seeds()
KEYS = [
    "node",
    "peers",
    "services",
    "name",
    "vips",
    "ports",
    "checks",
    "type",
    "port",
    "address",
    "asn",
    "router_id",
    "local_as",
    "api",
    "listen",
    "token_file",
    "state_dir",
    "runtime_dir",
    "interval",
    "timeout",
    "fast_interval",
    "rise",
    "fall",
    "path",
    "host",
    "command",
    "addresses",
    "real_servers",
    "attributes",
    "healthy",
    "draining",
    "degraded",
    "communities",
    "mode",
    "weight",
    "target_port",
    "protocol",
    "scheduler",
    "persistence",
    "on_down",
    "min_healthy",
    "hold_time",
    "local_address",
    "md5_password_file",
    "next_hop_v4",
    "next_hop_v6",
    "bgp",
    "local",
    "routerID",
    "as",
    "service",
    "ip",
    "prefixLength",
    "servicePort",
    "targetLocalPort",
    "httphealthcheck",
    "scheme",
    "expected_status",
    "body_match",
]
TRICKY = [
    "10.0.0.1", "fd00::1", "10.0.0.1/32", "10.0.0.1/24", "0.0.0.0", "::", "::ffff:10.0.0.1",
    "fe80::1%eth0", "255.255.255.255/0", "http", "https", "tcp", "udp", "icmp", "exec", "web",
    "65535:0", "65535:0:1", "1:2:3:4", "/", "-1", "1e400", "nan", "inf", "-inf", "a" * 16,
    "x\r\ny", "x\x00y", "\ud800", "x\udfffy", "\u202e", "9" * 5000, "1_000", "0x10", "true",
    "~", "null", "*", "&a", "!!python/object:os.system", "${HOME}", "{}", "[]",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(TRICKY),
)
trees = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=10), st.integers(), st.none()),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=20,
)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*path, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    """A seed config changed in 1-4 places: replace, delete, or add (key or list item)."""
    data = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_paths(data)))
        op = draw(st.sampled_from(["replace", "delete", "add"]))
        if not path:
            if op == "replace":
                data = draw(trees)
            continue
        parent = data
        for k in path[:-1]:
            parent = parent[k]
        if op == "replace":
            parent[path[-1]] = draw(trees)
        elif op == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)))] = draw(trees)
        else:
            parent.append(draw(trees))
    return data


def outcome(load: Callable[[], Config]) -> Config | ConfigError:
    try:
        return load()
    except ConfigError as err:
        return err


def must_be_config_or_error(result: Config | ConfigError) -> None:
    """The property: a Config, or a ConfigError whose every issue renders as UTF-8 text."""
    if isinstance(result, ConfigError):
        assert result.errors, "a ConfigError with no issue"
        for issue in result.errors:
            str(issue).encode("utf-8")  # printable on any terminal/log, no traceback
    else:
        assert isinstance(result, Config)


def must_parse_or_refuse(data: object) -> None:
    must_be_config_or_error(outcome(lambda: parse_config(data)))


def must_decode_or_refuse(text: str, json_only: bool) -> None:
    try:
        data = decode(text, "fuzz.json" if json_only else "fuzz.yaml", json_only=json_only)
    except ConfigError:
        return
    must_parse_or_refuse(data)


# --------------------------------------------------------------------------- decoded data


@fuzz(200)
@given(trees)
def test_any_json_like_tree(data: object) -> None:
    count("bad_inputs")
    must_parse_or_refuse(data)


@fuzz(300)
@given(mutated())
def test_mutated_example_configs(data: object) -> None:
    count("bad_inputs")
    must_parse_or_refuse(data)


@fuzz(150)
@given(mutated(), st.booleans())
def test_mutated_configs_as_yaml_and_json_text(data: object, as_json: bool) -> None:
    count("bad_inputs")
    text = json.dumps(data, default=str) if as_json else yaml.safe_dump(data, allow_unicode=False)
    must_decode_or_refuse(text, json_only=as_json)


# --------------------------------------------------------------------------- text and bytes

yaml_bits = st.sampled_from(
    [
        "node:", "  router_id: 10.0.0.1", "peers: []", "services:", "- name: web", "  vips: [",
        "&a [*a]", "*a", "!!binary AAAA", "!!python/name:os.system", "? [a, b]\n: 1", "%YAML 1.1",
        "---", "...", '"\\ud800"', '"\\U0010ffff"', "\t", "{a: 1, a: 2}", "<<: *a", "- - - -",
        "[" * 200, "{" * 200, "'", '"', "|", ">-", "#", "\x00", "\ufeff", "\x85", "\u2028",
    ]
)  # fmt: skip
yaml_texts = st.lists(st.one_of(yaml_bits, st.text(max_size=12)), max_size=12).map("\n".join)


@fuzz(200)
@given(st.one_of(st.text(), yaml_texts, st.binary().map(lambda b: b.decode("latin-1"))))
def test_any_text_as_yaml_and_json(text: str) -> None:
    count("bad_inputs")
    must_decode_or_refuse(text, json_only=False)
    must_decode_or_refuse(text, json_only=True)


BILLION_LAUGHS = "a: &a [x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5_000,
        "services: &a [*a]\nnode: &n {router_id: 10.0.0.1, local_as: 1, x: *n}\n",
        "{a: " * 5_000,
        "- " * 5_000 + "x",
        '{"a": ' * 100_000,
        "&a [" + "*a, " * 1000 + "]",
        BILLION_LAUGHS,
    ],
)  # fmt: skip
def test_deep_or_exploding_documents(text: str) -> None:
    count("bad_inputs")
    must_decode_or_refuse(text, json_only=False)
    must_decode_or_refuse(text, json_only=True)


def test_lone_surrogate_escape_is_a_config_error(tmp_path: Path) -> None:
    """YAML "\\ud800" (and JSON) decode to a lone surrogate: pydantic's error rendering then
    raised UnicodeEncodeError, a traceback out of load_config (a reload answered 500)."""
    for name, text in [
        ("a.yaml", 'node: {router_id: "\\ud800", local_as: 65001}\npeers: []\n'),
        ("b.json", '{"node": {"router_id": "10.0.0.1", "local_as": 65001}, "\\udc00": 1}'),
        ("c.yaml", 'node: {router_id: 10.0.0.1, local_as: 1}\nservices: [{name: "w\\ud800"}]\n'),
    ]:  # fmt: skip
        count("bad_inputs")
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        messages = [str(e) for e in info.value.errors]
        assert any("not valid Unicode" in m for m in messages), messages
    count("bad_inputs")
    with pytest.raises(ConfigError) as info:
        parse_config(
            {"node": {"router_id": "10.0.0.1", "local_as": 1}, "services": [{"name": "\udfff"}]}
        )
    assert str(info.value.errors[0]).startswith("services[0].name: ")


# --------------------------------------------------------------------------- files on disk


@fuzz(80)
@given(
    st.one_of(
        st.binary(max_size=2000), yaml_texts.map(lambda t: t.encode("utf-8", "surrogatepass"))
    ),
    st.sampled_from([".yaml", ".json", ".yml", ""]),
)
def test_any_file_contents(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes, suffix: str
) -> None:
    count("bad_inputs")
    path = tmp_path_factory.mktemp("f") / f"config{suffix}"
    path.write_bytes(raw)
    must_be_config_or_error(outcome(lambda: load_config(path)))


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe\x00n\x00o\x00d\x00e",  # UTF-16
        b"node:\n  router_id: \xc3\x28\n",  # invalid UTF-8
        bytes(range(256)) * 4,  # binary
        b"\x00" * 1000,
        b"# " + b"x" * (MAX_BYTES + 10),  # huge
        b"services: [" + b"{name: x}, " * 2_000 + b"]",  # many items
    ],
    ids=["utf16", "bad-utf8", "binary", "nul", "huge", "many-items"],
)
def test_bad_files_are_config_errors(tmp_path: Path, raw: bytes) -> None:
    count("bad_inputs")
    path = tmp_path / "config.yaml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError):
        load_config(path)


@pytest.mark.parametrize("kind", ["directory", "fifo-missing", "nul-in-name", "unreadable"])
def test_unreadable_paths_are_config_errors(tmp_path: Path, kind: str) -> None:
    count("bad_inputs")
    if kind == "directory":
        path = tmp_path
    elif kind == "fifo-missing":
        path = tmp_path / "missing.yaml"
    elif kind == "nul-in-name":
        path = tmp_path / "a\x00b.yaml"
    else:
        if os.geteuid() == 0:
            pytest.skip("root reads a mode-000 file")
        path = tmp_path / "secret.yaml"
        path.write_text("node: {}\n")
        path.chmod(0)
    with pytest.raises(ConfigError):
        read_config_data(path)
