"""Fate sharing, restarts, reloads and MD5 of ExaBGPSpeaker against a real FRR."""

# These tests drive processes and files with blocking calls on purpose (short, local).
# ruff: noqa: ASYNC220, ASYNC221, ASYNC240

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bgplb.model import PeerState, Route, RouteAttributes
from tests.harness.agent_proc import RouteMonitor
from tests.harness.frr import BgpLab, pid_alive, wait_until
from tests.harness.netns import tempdir

from .conftest import SpeakerFactory, lb_peers, make_config

pytestmark = pytest.mark.bgp

VIP = ipaddress.ip_network("10.99.0.1/32")
REPO = Path(__file__).resolve().parents[2]


async def test_agent_sigkill_withdraws_and_leaves_no_exabgp(bgp_lab_factory) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    rundir = tempdir("run")
    config = make_config(Path(rundir), bl.lb_v4(1), bl.lb_as, lb_peers(bl, 1))
    argv = [sys.executable, "-m", "tests.harness.speaker_child", config.model_dump_json()]
    argv += [bl.lb_ns[0], bl.r1_v4(1), str(VIP)]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=REPO, text=True)
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 20)
        exabgp_pid = json.loads(line)["exabgp_pid"]
        await wait_until(lambda: bl.router.fib(str(VIP)) == [bl.lb_v4(1)], 15)
        # Timed from the router kernel's own route event, not by polling `ip route` (a poll
        # costs a process start: on a busy host that alone is tens of ms of error).
        with RouteMonitor(bl.router.ns) as fib_events:
            killed = time.time()
            child.kill()
            polled = await wait_until(lambda: bl.router.fib(str(VIP)) == [], 2, interval=0.002)
            await asyncio.sleep(0.1)  # let the monitor's reader catch up
        deleted = fib_events.deleted_at(str(VIP), killed)
        took = min(polled, deleted - killed) if deleted is not None else polled
        print(f"agent SIGKILL -> VIP gone from the router FIB in {took * 1000:.0f} ms")
        assert took < 0.150
        await wait_until(lambda: not pid_alive(exabgp_pid), 3)
        left = subprocess.run(["ip", "netns", "pids", bl.lb_ns[0]], capture_output=True, text=True)
        assert left.stdout.split() == [], "a process was left in the node's namespace"
    finally:
        child.kill()
        child.wait(5)
        if child.stdout is not None:
            child.stdout.close()
        shutil.rmtree(rundir, ignore_errors=True)


async def test_exabgp_killed_is_restarted_with_current_routes(
    bgp_lab_factory, speaker_factory: SpeakerFactory
) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    speaker, _ = await speaker_factory(bl, 1)
    peer = bl.r1_v4(1)
    drained = Route(VIP, None, RouteAttributes(communities=("65535:0",), med=77))
    await speaker.set_routes({peer: frozenset({Route(VIP, None)})})
    await wait_until(lambda: bl.router.fib(str(VIP)) == [bl.lb_v4(1)], 15)
    await speaker.set_routes({peer: frozenset({drained})})  # the current attributes
    old = speaker.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    await wait_until(lambda: bl.router.fib(str(VIP)) == [], 2)
    assert speaker.peers()[peer].state is not PeerState.UP or speaker.pid != old
    took = await wait_until(lambda: bl.router.fib(str(VIP)) == [bl.lb_v4(1)], 10)
    print(f"ExaBGP SIGKILL -> restarted, route back in {took:.2f}s")
    assert speaker.restarts() == 1
    assert speaker.pid not in (None, old)
    data = bl.router.vtysh_json(f"show bgp ipv4 unicast {VIP} json")
    path = data["paths"][0]  # type: ignore[index]
    assert path["metric"] == 77  # FRR calls MED "metric"
    assert "graceful-shutdown" in path["community"]["string"]
    await wait_until(lambda: speaker.peers()[peer].state is PeerState.UP, 5)
    assert speaker.advertised() == {peer: frozenset({drained})}


async def test_frr_restart_routes_come_back(
    bgp_lab_factory, speaker_factory: SpeakerFactory
) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    speaker, _ = await speaker_factory(bl, 1)
    peer = bl.r1_v4(1)
    await speaker.set_routes({peer: frozenset({Route(VIP, None)})})
    await wait_until(lambda: bl.router.fib(str(VIP)) == [bl.lb_v4(1)], 15)
    pid = speaker.pid
    bl.router.stop()
    await wait_until(lambda: speaker.peers()[peer].state is PeerState.DOWN, 10)
    assert speaker.advertised() == {}
    bl.router.start()
    took = await wait_until(lambda: bl.router.fib(str(VIP)) == [bl.lb_v4(1)], 20)
    print(f"FRR restarted -> route back in {took:.2f}s")
    assert speaker.pid == pid
    assert speaker.restarts() == 0


async def test_reconfigure_adding_a_peer_does_not_flap_the_other(
    bgp_lab_factory, speaker_factory: SpeakerFactory
) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    speaker, config = await speaker_factory(bl, 1)
    v4, v6 = bl.r1_v4(1), bl.r1_v6(1)
    vip6 = ipaddress.ip_network("fd00:99::1/128")
    routes = {v4: frozenset({Route(VIP, None)}), v6: frozenset({Route(vip6, None)})}
    await speaker.set_routes(routes)
    await wait_until(lambda: bl.router.fib(str(VIP)) == [bl.lb_v4(1)], 15)
    await asyncio.sleep(1.1)
    up_before = bl.router.peer_uptime_ms(bl.lb_v4(1))
    assert up_before >= 1000
    log_before = bl.router.log().count("ADJCHANGE")
    assert log_before >= 1  # the log does record session changes
    flaps_before = bl.router.peer_flaps(bl.lb_v4(1))
    new = make_config(config.node.runtime_dir, bl.lb_v4(1), bl.lb_as, lb_peers(bl, 1, v6=True))
    await speaker.reconfigure(new)
    await speaker.set_routes(routes)
    took = await wait_until(lambda: bl.router.fib(str(vip6)) == [bl.lb_v6(1)], 10)
    print(f"reconfigure: new v6 peer's route in the FIB after {took * 1000:.0f} ms")
    await asyncio.sleep(1.0)
    assert bl.router.peer_uptime_ms(bl.lb_v4(1)) >= up_before + 1000
    assert bl.router.peer_flaps(bl.lb_v4(1)) == flaps_before
    adj = [x for x in bl.router.log().split("\n") if "ADJCHANGE" in x][log_before:]
    assert all(bl.lb_v4(1) not in x for x in adj), adj
    assert speaker.restarts() == 0


async def test_md5(
    bgp_lab_factory, speaker_factory: SpeakerFactory, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    secret = "Right-Secret-4711"
    bl: BgpLab = bgp_lab_factory(n_lbs=2, password=secret)
    keydir = tempdir("key")
    try:
        good, bad = keydir / "good", keydir / "bad"
        for path, text in ((good, secret), (bad, "Wrong-Secret-0815")):
            path.write_text(text + "\n")
            path.chmod(0o600)
        s1, c1 = await speaker_factory(bl, 1, peers=lb_peers(bl, 1, md5_password_file=str(good)))
        s2, c2 = await speaker_factory(bl, 2, peers=lb_peers(bl, 2, md5_password_file=str(bad)))
        await s1.set_routes({bl.r1_v4(1): frozenset({Route(VIP, None)})})
        await s2.set_routes({bl.r1_v4(2): frozenset({Route(VIP, None)})})
        await wait_until(lambda: bl.router.fib(str(VIP)) == [bl.lb_v4(1)], 15)
        await asyncio.sleep(4)
        assert bl.router.fib(str(VIP)) == [bl.lb_v4(1)]
        status = s2.peers()[bl.r1_v4(2)]
        print(f"wrong key: {status}")
        assert status.state is not PeerState.UP
        assert "md5" in status.reason.lower()
        assert s1.peers()[bl.r1_v4(1)].reason == ""
        # the secret: in no log line, in no file others can read
        assert secret not in caplog.text
        for rundir in (c1.node.runtime_dir, c2.node.runtime_dir):
            assert stat.S_IMODE(rundir.stat().st_mode) == 0o700
            for f in rundir.iterdir():
                if f.is_file():
                    assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f
        for pid in (s1.pid, s2.pid):
            assert secret not in Path(f"/proc/{pid}/cmdline").read_text()
    finally:
        for p in keydir.iterdir():
            p.unlink()
        keydir.rmdir()


async def test_stop_withdraws_then_closes(bgp_lab_factory, speaker_factory: SpeakerFactory) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    speaker, _ = await speaker_factory(bl, 1)
    await speaker.set_routes({bl.r1_v4(1): frozenset({Route(VIP, None)})})
    await wait_until(lambda: bl.router.fib(str(VIP)) == [bl.lb_v4(1)], 15)
    pid = speaker.pid
    assert pid is not None
    t0 = time.monotonic()
    await speaker.stop()
    took = time.monotonic() - t0
    print(f"stop(): withdraw + ExaBGP exit in {took:.2f}s")
    assert bl.router.fib(str(VIP)) == []
    assert not pid_alive(pid)
    assert took < 5
    assert speaker.advertised() == {}
