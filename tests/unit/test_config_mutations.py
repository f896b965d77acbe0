"""Property: change ONE field of a valid config; it loads, or the CLI exits 2 naming that field.

Never a traceback, never exit 1: every input is a config the operator can fix from the message.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bgplb.cli import main
from bgplb.config import ConfigError, parse
from bgplb.config.issues import join_path

EXAMPLES = Path(__file__).parents[2] / "examples"
BASES = {
    name: (json.loads if name.endswith(".json") else yaml.safe_load)((EXAMPLES / name).read_text())
    for name in ("single-service.yaml", "dual-stack-pool.yaml", "seed-format.json")
}
Path_ = tuple[int | str, ...]

BAD_VALUES: list[object] = [
    None,
    True,
    -1,
    0,
    3.5,
    70000,
    2**40,
    "",
    "x",
    "x" * 300,
    "300.1.1.1",
    "10.0.0.1/24",
    "fd00::1",
    "10.7.7.7",
    [],
    [1, "a"],
    {},
    {"bogus": 1},
]
ERROR_LINE = re.compile(r"^(?P<path>[A-Za-z_][\w\[\]'.]*)?: ?.+$")


def walk(node: object, path: Path_ = ()) -> Iterator[tuple[Path_, object]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, (*path, i))


PATHS = {name: [p for p, _ in walk(data) if p] for name, data in BASES.items()}
DICTS = {name: [p for p, v in walk(data) if isinstance(v, dict)] for name, data in BASES.items()}


def at(data: Any, path: Path_) -> Any:
    for part in path:
        data = data[part]
    return data


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, Any, Path_, str]:
    name = draw(st.sampled_from(sorted(BASES)))
    data = copy.deepcopy(BASES[name])
    kind = draw(st.sampled_from(["replace", "replace", "unknown_key", "delete"]))
    if kind == "unknown_key":
        path = draw(st.sampled_from(DICTS[name]))
        at(data, path)["bogus_key"] = draw(st.sampled_from(BAD_VALUES))
        return name, data, (*path, "bogus_key"), kind
    path = draw(st.sampled_from(PATHS[name]))
    parent = at(data, path[:-1])
    if kind == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        kind = "replace"
        parent[path[-1]] = draw(st.sampled_from(BAD_VALUES))
    return name, data, path, kind


def check_config(name: str, data: Any) -> tuple[int, str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / name
        text = json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data)
        file.write_text(text)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["check-config", str(file)])
    return rc, out.getvalue(), err.getvalue()


# Cross-field rules whose message is attached to the other field by design: a real server
# changed to the wrong family leaves its VIP without one ("services[0].vips[1]: no real
# server of the VIP's family"). They must still be inside the same service.
CROSS_FIELD = ("no real server of the VIP's family",)


def related(error_path: str, mutated: str) -> bool:
    """The error names the mutated field, something inside it, or its owner."""
    owner = mutated.rsplit(".", 1)[0] if "." in mutated else mutated
    owner = re.sub(r"\[\d+\]$", "", owner) if owner == mutated else owner
    return error_path.startswith(owner) or mutated.startswith(error_path)


def names_the_field(line: str, mutated: str) -> bool:
    path, message = line.split(": ", 1)
    if related(path, mutated):
        return True
    item = re.match(r"^\w+\[\d+\]", mutated)
    return any(m in message for m in CROSS_FIELD) and bool(item) and path.startswith(item[0])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations())
def test_one_changed_field_loads_or_exits_2_naming_it(case: tuple[str, Any, Path_, str]) -> None:
    name, data, path, kind = case
    rc, out, err = check_config(name, data)
    assert "Traceback" not in out + err
    assert "cannot load the config" not in err  # the defensive catch-all never fires
    if rc == 0:
        assert out.splitlines()[-1].startswith("OK: ")
        return
    assert rc == 2, (rc, out, err)
    lines = err.splitlines()
    assert lines
    assert all(ERROR_LINE.match(line) for line in lines), lines
    mutated = join_path(path)
    assert any(names_the_field(line, mutated) for line in lines), (kind, mutated, lines)


def test_the_bases_are_valid() -> None:
    for name, data in BASES.items():
        assert check_config(name, data)[0] == 0, name


def test_related_is_strict_enough() -> None:
    assert related("services[0].ports[0].port", "services[0].ports[0].port")
    assert related("services[0].interface", "services[0].mode")
    assert related("peers", "peers[0]")
    assert not related("node.router_id", "services[0].mode")
    assert not related("services[1].name", "services[0].name")
    family = "services[0].vips[1]: no real server of the VIP's family (IPv6): ..."
    assert names_the_field(family, "services[0].real_servers[2].address")
    assert not names_the_field(family, "services[1].real_servers[2].address")
    assert not names_the_field("services[0].vips[1]: duplicate", "services[0].ports[0].port")


def every_single_mutation() -> Iterator[tuple[str, Any, Path_, str]]:
    for name, base in BASES.items():
        for path in DICTS[name]:
            data = copy.deepcopy(base)
            at(data, path)["bogus_key"] = 1
            yield name, data, (*path, "bogus_key"), "unknown_key"
        for path in PATHS[name]:
            if isinstance(at(base, path[:-1]), dict):
                data = copy.deepcopy(base)
                del at(data, path[:-1])[path[-1]]
                yield name, data, path, "delete"
            for value in BAD_VALUES:
                data = copy.deepcopy(base)
                at(data, path[:-1])[path[-1]] = value
                yield name, data, path, "replace"


def test_every_single_field_mutation_in_process() -> None:
    """The exhaustive version of the property, without the file round trip (fast)."""
    failures = []
    count = 0
    for _name, data, path, kind in every_single_mutation():
        count += 1
        try:
            parse(data)
        except ConfigError as e:
            lines = [str(i) for i in e.errors]
            if not any(names_the_field(line, join_path(path)) for line in lines):
                failures.append((kind, join_path(path), lines))
    assert count > 2500
    assert failures == []
