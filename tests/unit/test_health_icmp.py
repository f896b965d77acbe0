"""ICMP echo: packet building/matching (pure), any/all logic, and real pings to loopback
with every method this host permits (the others are skipped with the reason)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import socket
import struct
import sys
from typing import Any

import pytest

from bgplb.config import IcmpCheck
from bgplb.health.checks import RealProber
from bgplb.health.icmp import (
    Pinger,
    PingMethod,
    checksum,
    echo_request,
    is_echo_reply,
    open_socket,
)
from bgplb.health.targets import ResolvedCheck
from bgplb.health.tracker import CheckKey
from bgplb.model import IPAddress

V4 = ipaddress.ip_address("127.0.0.1")
V6 = ipaddress.ip_address("::1")
TOKEN = b"0123456789abcdef"


def test_checksum_known_value() -> None:
    header = bytes.fromhex("0800000000010001")
    assert checksum(header) == 0xF7FD
    packet = echo_request(4, ident=1, seq=1, token=b"")
    assert packet == bytes.fromhex("0800f7fd00010001")
    assert checksum(packet) == 0  # a packet with its checksum sums to zero
    assert checksum(b"\x01") == 0xFEFF  # odd length is padded


def reply_of(request: bytes, version: int) -> bytes:
    return bytes([0 if version == 4 else 129]) + request[1:]


IP_HEADER = bytes.fromhex("45000024000000004001" + "0000" + "7f000001" + "7f000001")


@pytest.mark.parametrize(
    ("version", "method", "prefix"),
    [
        (4, PingMethod.RAW, IP_HEADER),
        (4, PingMethod.DGRAM, b""),
        (6, PingMethod.RAW, b""),
        (6, PingMethod.DGRAM, b""),
    ],
)
def test_reply_matching(version: int, method: PingMethod, prefix: bytes) -> None:
    request = echo_request(version, ident=0x1234, seq=7, token=TOKEN)
    reply = prefix + reply_of(request, version)
    assert is_echo_reply(reply, version, method, 0x1234, 7, TOKEN)
    assert not is_echo_reply(prefix + request, version, method, 0x1234, 7, TOKEN)  # our request
    assert not is_echo_reply(reply, version, method, 0x1234, 8, TOKEN)  # other sequence
    assert not is_echo_reply(reply, version, method, 0x1234, 7, b"x" * len(TOKEN))  # other token
    assert not is_echo_reply(reply[:-1], version, method, 0x1234, 7, TOKEN)  # truncated
    other_ident = is_echo_reply(reply, version, method, 0x4321, 7, TOKEN)
    assert other_ident is (method is PingMethod.DGRAM)  # the kernel rewrites it for DGRAM


def test_ipv6_request_leaves_the_checksum_to_the_kernel() -> None:
    request = echo_request(6, ident=1, seq=2, token=TOKEN)
    assert struct.unpack("!BBHHH", request[:8]) == (128, 0, 0, 1, 2)


class ScriptedPinger(Pinger):
    """Per-address outcome: None (answers) or an error, after ``delay`` seconds."""

    def __init__(self, outcome: dict[str, str | None], delay: dict[str, float]) -> None:
        super().__init__()
        self.outcome, self.delay = outcome, delay
        self.cancelled: list[str] = []

    async def _ping_one(
        self,
        address: IPAddress,
        timeout: float,  # noqa: ASYNC109
        source: IPAddress | None,
    ) -> str | None:
        try:
            await asyncio.sleep(self.delay.get(str(address), 0.0))
        except asyncio.CancelledError:
            self.cancelled.append(str(address))
            raise
        return self.outcome[str(address)]


A, B = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")


async def test_any_is_healthy_when_one_answers_and_stops_waiting() -> None:
    pinger = ScriptedPinger({"192.0.2.1": "no reply", "192.0.2.2": None}, {"192.0.2.1": 5.0})
    assert await pinger.ping([A, B], 1.0) is None
    assert pinger.cancelled == ["192.0.2.1"]


async def test_any_fails_when_none_answers() -> None:
    pinger = ScriptedPinger({"192.0.2.1": "no reply", "192.0.2.2": "unreachable"}, {})
    assert await pinger.ping([A, B], 1.0) == "192.0.2.1: no reply; 192.0.2.2: unreachable"


async def test_all_fails_when_one_does_not_answer() -> None:
    pinger = ScriptedPinger({"192.0.2.1": None, "192.0.2.2": "no reply"}, {})
    assert await pinger.ping([A, B], 1.0, require_all=True) == "192.0.2.2: no reply"
    pinger = ScriptedPinger({"192.0.2.1": None, "192.0.2.2": None}, {})
    assert await pinger.ping([A, B], 1.0, require_all=True) is None


async def test_source_of_the_other_family_is_an_error() -> None:
    assert await Pinger({4: PingMethod.RAW}).ping([V4], 1.0, source=V6) == (
        "127.0.0.1: source address ::1 is not IPv4"
    )


# --------------------------------------------------------------------------- real pings


def socket_refusal(version: int, method: PingMethod) -> str | None:
    """Why this process may not open the socket, or None."""
    try:
        open_socket(version, method).close()
    except OSError as exc:
        return f"{method} ICMPv{version} socket refused: {exc.strerror or exc}" + (
            " (gid outside net.ipv4.ping_group_range)" if method is PingMethod.DGRAM else
            " (needs CAP_NET_RAW)"
        )  # fmt: skip
    return None


def require(version: int, method: PingMethod) -> None:
    if method is PingMethod.EXEC:
        if shutil.which("ping") is None:
            pytest.skip("no ping binary")
        return
    reason = socket_refusal(version, method)
    if reason is not None:
        pytest.skip(reason)
    if version == 6 and not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize("method", list(PingMethod))
async def test_ping_ipv4_loopback(method: PingMethod) -> None:
    require(4, method)
    pinger = Pinger({4: method})
    assert await pinger.ping([V4], 1.0) is None
    two = [V4, ipaddress.ip_address("127.0.0.2")]
    assert await pinger.ping(two, 1.0, require_all=True) is None
    assert await pinger.ping([V4], 1.0, source=ipaddress.ip_address("127.0.0.3")) is None


@pytest.mark.parametrize("method", list(PingMethod))
async def test_ping_ipv6_loopback(method: PingMethod) -> None:
    require(6, method)
    if method is PingMethod.EXEC and not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    assert await Pinger({6: method}).ping([V6], 1.0) is None


async def test_many_concurrent_pings_get_their_own_replies() -> None:
    pinger = Pinger()
    if pinger.method(4) is PingMethod.EXEC:
        pytest.skip("no ICMP socket permitted (exec fallback is tested above)")
    results = await asyncio.gather(*(pinger.ping([V4], 1.0) for _ in range(50)))
    assert results == [None] * 50


def icmp(**kw: Any) -> ResolvedCheck:
    check = IcmpCheck.model_validate({"type": "icmp", **kw})
    return ResolvedCheck(CheckKey("dns", None, check.label), check)


async def test_real_prober_pings() -> None:
    prober = RealProber()
    method = Pinger().method(4)
    try:
        assert await prober.probe(icmp(addresses=["127.0.0.1"], timeout=1.0)) is None, method
    finally:
        await prober.close()


# --------------------------------------------------------------------------- in a private netns

NETNS_SETUP = (
    "ip link set lo up && ip link add bgplbt0 type veth peer name bgplbt1"
    " && ip link set bgplbt0 up && ip link set bgplbt1 up"
    " && ip addr add 10.9.9.1/24 dev bgplbt0"
    " && sysctl -qw net.ipv4.ping_group_range='0 2147483647'"
)
NETNS_SCRIPT = """
import asyncio, ipaddress, json
from bgplb.health.icmp import Pinger, PingMethod
ip = ipaddress.ip_address
async def main():
    out = {}
    for method in (PingMethod.DGRAM, PingMethod.RAW, PingMethod.EXEC):
        p = Pinger({4: method})
        out[method.value] = [
            await p.ping([ip("127.0.0.1")], 1.0),
            await p.ping([ip("10.9.9.9")], 0.3),  # on-link, nobody there: no reply
            await p.ping([ip("10.77.0.1")], 0.3),  # no route
            await p.ping([ip("10.9.9.9"), ip("127.0.0.1")], 0.3),
            await p.ping([ip("10.9.9.9"), ip("127.0.0.1")], 0.3, require_all=True),
        ]
    print(json.dumps(out))
asyncio.run(main())
"""


@pytest.mark.skipif(
    shutil.which("unshare") is None or shutil.which("ip") is None, reason="no unshare/ip"
)
async def test_every_method_in_a_private_netns() -> None:
    """DGRAM sockets (allowed there via the netns's own ping_group_range), RAW and EXEC,
    including unanswered and unroutable addresses. Needs root (unshare --net)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    proc = await asyncio.create_subprocess_exec(
        "unshare", "--net", "sh", "-c", f'{NETNS_SETUP} && exec "$0" -c "$1"',
        sys.executable, NETNS_SCRIPT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    results = json.loads(out)
    for method in ("dgram", "raw"):
        ok, silent, unroutable, any_of, all_of = results[method]
        assert ok is None, method
        assert silent == "10.9.9.9: no reply within 0.3s", method
        assert unroutable == "10.77.0.1: Network is unreachable", method
        assert any_of is None, method
        assert all_of == "10.9.9.9: no reply within 0.3s", method
    ok, silent, unroutable, any_of, all_of = results["exec"]
    assert ok is None
    assert silent == "10.9.9.9: timeout after 0.3s (process group killed)"
    assert unroutable is not None
    assert any_of is None
    assert all_of is not None
