"""Fuzz what the agent reads from ExaBGP: any line -> an Ack, a StateEvent or Other, never an
exception (an exception out of the parser ends the relay reader, which restarts ExaBGP: one
odd line would flap every session). And acks, however they arrive, keep the FIFO consistent.

Seeds are real ExaBGP 5 output: the JSON encoder ExaBGP itself uses (exabgp.reactor.api.response
.json.JSON) renders the state/notification events, mutated as JSON and as text.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from exabgp.reactor.api.response.json import JSON
from exabgp.version import json as exabgp_json_version
from hypothesis import given
from hypothesis import strategies as st

from bgplb.bgp import events
from bgplb.bgp.channel import AckQueue, Pending
from bgplb.bgp.exabgp import ExaBGPSpeaker
from bgplb.config import Config
from bgplb.model import PeerState, Route, RouteAttributes
from tests.harness.figures import count, record_figures  # noqa: F401  (fixture)

from .fuzz_support import fuzz


class _Neighbor(dict[str, Any]):
    """What ExaBGP's encoder reads from a neighbor: items by name and a uid."""

    uid = "1"


def real_events(local: str, peer: str) -> list[str]:
    n = _Neighbor(
        {
            "local-address": local,
            "peer-address": peer,
            "local-as": 65001,
            "peer-as": 65000,
            "router-id": "10.0.1.2",
        }
    )
    enc = JSON(exabgp_json_version)
    return [
        enc.connected(n),
        enc.up(n),
        enc.down(n, "notification received (6,10)"),
        enc.down(
            n, "peer reset, message (closing connection) error(the TCP connection was closed)"
        ),
        enc.shutdown(),
    ]


SAMPLES = [
    *real_events("10.0.1.2", "10.0.1.1"),
    *real_events("fd00:1:0::2", "fd00:1:0::1"),
    "done",
    "error",
    "reload in progress",
    "",
]
DOCS = [json.loads(s) for s in SAMPLES if s.startswith("{")]


def test_the_samples_are_what_the_parser_expects() -> None:
    """The seeds are real: parsed as ExaBGP 5 writes them (so the mutations start from truth)."""
    parsed = [events.parse_line(s) for s in SAMPLES]
    assert parsed[:4] == [
        events.StateEvent("10.0.1.1", PeerState.CONNECTED),
        events.StateEvent("10.0.1.1", PeerState.UP),
        events.StateEvent("10.0.1.1", PeerState.DOWN, "notification received (6,10)"),
        events.StateEvent("10.0.1.1", PeerState.DOWN, parsed[3].reason),  # type: ignore[union-attr]
    ]
    assert parsed[6] == events.StateEvent("fd00:1::1", PeerState.UP)
    assert parsed[10:12] == [events.Ack(ok=True), events.Ack(ok=False)]
    assert isinstance(parsed[4], events.Other)


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        st.sampled_from(["up", "down", "connected", "state", "10.0.1.1", "fd00::1", "::", ""]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*path, k))
    return out


@st.composite
def json_mutations(draw: st.DrawFn) -> str:
    """A real event with 1-3 values replaced, keys deleted or added, dumped on one line."""
    doc = json.loads(json.dumps(draw(st.sampled_from(DOCS))))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            continue
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        op = draw(st.sampled_from(["replace", "delete", "add"]))
        if op == "replace":
            parent[path[-1]] = draw(json_values)
        elif op == "delete":
            del parent[path[-1]]
        else:
            parent[draw(st.text(max_size=8))] = draw(json_values)
    return json.dumps(doc, ensure_ascii=draw(st.booleans()))


@st.composite
def text_mutations(draw: st.DrawFn) -> str:
    """A real line cut, with characters inserted, deleted or replaced."""
    text = draw(st.sampled_from(SAMPLES))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["cut", "insert", "delete", "replace"]))
        if op == "cut":
            text = text[:i]
        elif op == "insert":
            text = text[:i] + draw(st.text(max_size=4)) + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + 1 :]
        else:
            text = text[:i] + draw(st.sampled_from('{}[]":,\\ 0e-')) + text[i + 1 :]
    return text


lines = st.one_of(
    json_mutations(),
    text_mutations(),
    st.text(),
    st.binary().map(lambda b: b.decode("utf-8", errors="replace")),  # as the relay reader does
)


def assert_well_formed(event: events.Event) -> None:
    if isinstance(event, events.StateEvent):
        assert str(ipaddress.ip_address(event.peer)) == event.peer
        assert event.state in (PeerState.CONNECTED, PeerState.UP, PeerState.DOWN)
        assert isinstance(event.reason, str)
        assert event.reason == "" or event.state is PeerState.DOWN
    elif isinstance(event, events.Ack):
        assert isinstance(event.ok, bool)
    else:
        assert isinstance(event, events.Other)
        assert isinstance(event.text, str)


@fuzz(300)
@given(lines)
def test_any_line_parses_to_an_event(line: str) -> None:
    count("bad_inputs")
    event = events.parse_line(line)
    assert_well_formed(event)
    if isinstance(event, events.Ack):
        assert line.strip() in ("done", "error")


@fuzz(100)
@given(st.sampled_from(DOCS), st.ip_addresses(), st.sampled_from(["up", "down", "connected"]))
def test_any_peer_address_spelling_is_normalized(doc: Any, address: Any, state: str) -> None:
    count("bad_inputs")
    doc = json.loads(json.dumps(doc))
    if doc.get("type") != "state":
        return
    spelled = address.exploded if int(address) % 2 else str(address).upper()
    doc["neighbor"]["address"]["peer"] = spelled
    doc["neighbor"]["state"] = state
    event = events.parse_line(json.dumps(doc))
    assert isinstance(event, events.StateEvent)
    assert event.peer == str(address)


@pytest.mark.parametrize(
    "line",
    [
        # nested deeper than Python's recursion limit: json.loads raises RecursionError,
        # which is no ValueError and escaped the parser (the relay reader died with it)
        '{"type": "state", "neighbor": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"type": "state", "neighbor": {"address": {"peer": "10.0.1.1"}, "state": "down", '
        '"reason": ' + "[" * 5000 + "]" * 5000 + "}}",
        "{" + '"a":{' * 50_000 + "}" * 50_001,
        '{"type": "state", "neighbor": {"address": {"peer": "1' + "1" * 10_000 + '"}}}',
        '{"n": ' + "9" * 100_000 + "}",  # int longer than Python's int string limit
        "\x00done",
        "done\r",
        "{" * 1_000_000,
    ],
    ids=["deep-list", "deep-reason", "deep-dict", "long-address", "huge-int", "nul", "cr", "brace"],
)
def test_hostile_lines(line: str) -> None:
    count("bad_inputs")
    assert_well_formed(events.parse_line(line))


# --------------------------------------------------------------------------- the ack FIFO

ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(1, 4), st.booleans()),
        st.tuples(st.just("ack"), st.booleans(), st.just(False)),
        st.tuples(st.just("forget"), st.just(0), st.just(False)),
    ),
    max_size=40,
)


@fuzz(100)
@given(ops)
async def test_acks_in_any_order_keep_the_fifo_consistent(
    script: list[tuple[str, Any, bool]],
) -> None:
    """Acks with nothing outstanding, acks after the channel was forgotten, errors: the queue
    never raises, pops strictly in write order, ``idle`` is set exactly when it is empty, and
    every waiting caller gets exactly one answer (the ack's, or False when forgotten)."""
    count("bad_inputs")
    queue = AckQueue()
    loop = asyncio.get_running_loop()
    model: list[Pending] = []
    n = 0
    for op, arg, wait in script:
        if op == "write":
            items = []
            for _ in range(arg):
                reply = loop.create_future() if wait else None
                items.append(Pending(f"cmd {n}", "10.0.1.1", None, reply))
                n += 1
            queue.extend(items)
            model += items
        elif op == "ack":
            item = queue.ack(arg)
            if not model:
                assert item is None
            else:
                expected = model.pop(0)
                assert item is expected
                assert expected.reply is None or expected.reply.result() is arg
        else:
            queue.forget()
            for item in model:
                assert item.reply is None or item.reply.result() is False
            model = []
        assert len(queue) == len(model)
        assert queue.idle.is_set() == (not model)
    for item in model:
        assert item.reply is None or not item.reply.done()


# --------------------------------------------------------------------------- the real speaker

JUNK_EXABGP = Path(__file__).resolve().parents[1] / "harness" / "junk_exabgp.py"
PEER = "10.0.1.1"
HOSTILE = [
    b'{"type": "state", "neighbor": ' + b"[" * 5000 + b"]" * 5000 + b"}",  # RecursionError
    b"\xff\xfe\x00garbage",
    b"{" * 60_000,  # just under the relay reader's 64 KiB line limit
]


async def until(pred: Callable[[], bool]) -> None:
    while not pred():  # noqa: ASYNC110 - polling the speaker's state is the point
        await asyncio.sleep(0.02)


def _junk(line: str) -> bytes | None:
    """One line as bytes (any text, lone surrogates too), or None if it would be a real ack or
    state event: those are not junk, they change the speaker's state as they should."""
    raw = line.replace("\n", " ").encode("utf-8", "surrogatepass")
    event = events.parse_line(raw.decode("utf-8", errors="replace"))
    return None if isinstance(event, events.Ack | events.StateEvent) else raw


@fuzz(3)
@given(st.lists(lines, min_size=20, max_size=60))
async def test_junk_from_exabgp_never_restarts_the_speaker(batch: list[str]) -> None:
    """The real ExaBGPSpeaker, its real relay and unix socket: a fake ExaBGP writes junk lines
    before the session events and before every ack. The speaker must not restart ExaBGP, and
    routes still go out and are acked."""
    base = Path(tempfile.mkdtemp(prefix="fz", dir="/tmp"))  # short: a unix socket path
    try:
        junk = [j for j in map(_junk, batch) if j is not None] + HOSTILE
        count("bad_inputs", len(junk))
        (base / "junk").write_bytes(b"\n".join(junk))
        os.environ["FAKE_EXABGP_JUNK"] = str(base / "junk")
        os.environ["FAKE_EXABGP_LOG"] = str(base / "commands.log")
        speaker = ExaBGPSpeaker(exabgp=[sys.executable, str(JUNK_EXABGP)], backoff_initial=0.05)
        config = Config.model_validate(
            {
                "node": {"router_id": "10.0.1.2", "local_as": 65001, "runtime_dir": str(base)},
                "peers": [{"address": PEER, "asn": 65000}],
            }
        )
        await speaker.start(config, lambda: None)
        try:
            async with asyncio.timeout(60):
                await until(lambda: speaker.peers()[PEER].state is PeerState.UP)
                want = frozenset(
                    Route(ipaddress.ip_network(f"10.99.0.{i}/32"), None, RouteAttributes())
                    for i in range(1, 6)
                )
                await speaker.set_routes({PEER: want})
                log = base / "commands.log"
                await until(lambda: log.exists() and len(log.read_text().splitlines()) >= 5)
                await until(
                    lambda: speaker.commands_failed > 0 or speaker.advertised().get(PEER) == want
                )
            assert speaker.restarts() == 0
            assert speaker.commands_failed == 0
            assert speaker.advertised()[PEER] == want
        finally:
            await speaker.stop()
    finally:
        os.environ.pop("FAKE_EXABGP_JUNK", None)
        os.environ.pop("FAKE_EXABGP_LOG", None)
        shutil.rmtree(base, ignore_errors=True)
