"""Kernel knobs of pool mode and connection sync (issue 15 items 2 and 4): the config, the
pure desired knobs, the keeper against fakes, the /proc adapter, check-node, status, metrics."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink.generic import ipvs as genl

from bgplb.admin import AdminStore
from bgplb.agent import Agent
from bgplb.bgp.fake import FakeSpeaker
from bgplb.clock import FakeClock
from bgplb.config import Config, ConfigError, parse_config
from bgplb.dataplane.fake import FakeDataplane
from bgplb.dataplane.ipvsknobs import daemon_attrs, decode_daemon, knobmsg
from bgplb.dataplane.knobs import (
    AMEMTHRESH,
    CONNTRACK,
    DROP_ENTRY,
    SLOPPY_SCTP,
    SLOPPY_TCP,
    IpvsTimeouts,
    SyncDaemon,
    SyncRole,
    desired_knobs,
)
from bgplb.dataplane.knobsfake import KERNEL_TIMEOUTS, FakeIpvsKnobs, FakeSysctls
from bgplb.dataplane.prereq import check_prerequisites
from bgplb.dataplane.sysctl import ProcSysctls, SysctlError
from bgplb.eventlog import EventLog
from bgplb.knobkeeper import KnobKeeper
from bgplb.metrics import Metrics
from bgplb.reconciler import Reconciler

from .fixtures import StaticHealth, config, ipvs_service, real_server

POOL_SYSCTLS = {
    SLOPPY_TCP: 0,
    SLOPPY_SCTP: 0,
    CONNTRACK: 1,
    AMEMTHRESH: 1024,
    DROP_ENTRY: 0,
}
SYNC = {"interface": "sync0", "sync_id": 7}


def pool(**node: Any) -> Config:
    svc = ipvs_service(
        "web",
        real_servers=[real_server("10.0.5.1", forward="dr")],
        preserve_connections=True,
    )
    return config(svc, **node)


def plain(**node: Any) -> Config:
    return config(ipvs_service("web"), **node)


def errors_of(data: dict[str, Any]) -> list[str]:
    base: dict[str, Any] = {"router_id": "10.0.0.10", "local_as": 65001}
    node: dict[str, Any] = {**base, **data}
    with pytest.raises(ConfigError) as e:
        parse_config({"node": node, "peers": [{"address": "10.0.0.1", "asn": 1}]})
    return [str(i) for i in e.value.errors]


# --------------------------------------------------------------------------- config


def test_node_knob_sections_are_validated() -> None:
    assert any("node.ipvs.tcp_timeout" in e for e in errors_of({"ipvs": {"tcp_timeout": 0}}))
    assert any("node.ipvs.drop_entry" in e for e in errors_of({"ipvs": {"drop_entry": 4}}))
    assert any("node.ipvs.bogus" in e for e in errors_of({"ipvs": {"bogus": 1}}))
    bad_if = errors_of({"connection_sync": {"interface": "way-too-long-ifname0"}})
    assert any("node.connection_sync.interface" in e and "interface name" in e for e in bad_if)
    assert any(
        "node.connection_sync.sync_id" in e
        for e in errors_of({"connection_sync": {"interface": "e0", "sync_id": 256}})
    )
    unicast = errors_of({"connection_sync": {"interface": "e0", "group": "10.0.0.1"}})
    assert any("node.connection_sync.group" in e and "multicast" in e for e in unicast)
    assert any(
        "node.connection_sync.maxlen" in e
        for e in errors_of({"connection_sync": {"interface": "e0", "maxlen": 100}})
    )
    assert any("node.connection_sync.interface" in e for e in errors_of({"connection_sync": {}}))


def test_connection_sync_defaults() -> None:
    sync = plain(connection_sync={"interface": "sync0"}).node.connection_sync
    assert sync is not None
    assert (sync.sync_id, str(sync.group), sync.port, sync.ttl, sync.maxlen) == (
        0,
        "224.0.0.81",
        8848,
        1,
        None,
    )
    v6 = plain(connection_sync={"interface": "sync0", "group": "ff02::81"}).node.connection_sync
    assert v6 is not None
    assert v6.group.version == 6


def test_preserve_connections_defaults_to_off() -> None:
    assert plain().services[0].preserve_connections is False


# --------------------------------------------------------------------------- desired


def test_no_knobs_without_pool_mode_ipvs_or_sync() -> None:
    assert desired_knobs(plain()).empty


def test_pool_mode_wants_sloppy_no_conntrack_and_bounded_defaults() -> None:
    knobs = desired_knobs(pool())
    assert dict(knobs.sysctls) == {
        SLOPPY_TCP: 1,
        SLOPPY_SCTP: 1,
        CONNTRACK: 0,
        AMEMTHRESH: 32768,
        DROP_ENTRY: 1,
    }
    assert knobs.timeouts == IpvsTimeouts(tcp=300, tcp_fin=60, udp=300)
    assert knobs.daemons == ()


def test_node_ipvs_alone_sets_only_timeouts_and_memory_defense() -> None:
    knobs = desired_knobs(plain(ipvs={"tcp_timeout": 600, "amemthresh": 4096, "drop_entry": 3}))
    assert dict(knobs.sysctls) == {AMEMTHRESH: 4096, DROP_ENTRY: 3}
    assert knobs.timeouts == IpvsTimeouts(tcp=600, tcp_fin=60, udp=300)


def test_connection_sync_wants_a_master_and_a_backup() -> None:
    knobs = desired_knobs(plain(connection_sync={**SYNC, "maxlen": 1472}))
    assert [d.role for d in knobs.daemons] == [SyncRole.MASTER, SyncRole.BACKUP]
    assert {
        (d.interface, d.sync_id, str(d.group), d.port, d.ttl, d.maxlen) for d in knobs.daemons
    } == {("sync0", 7, "224.0.0.81", 8848, 1, 1472)}


def test_a_daemon_matches_any_kernel_maxlen_unless_configured() -> None:
    want = desired_knobs(plain(connection_sync=SYNC)).daemons[0]
    kernel = SyncDaemon(want.role, "sync0", 7, want.group, 8848, 1, maxlen=1472)
    assert want.matches(kernel)
    assert not SyncDaemon(want.role, "sync0", 7, want.group, 8848, 1, 9000).matches(kernel)
    assert not want.matches(SyncDaemon(want.role, "sync0", 8, want.group, 8848, 1, 1472))


# --------------------------------------------------------------------------- the netlink message


def test_the_daemon_attributes_round_trip_through_the_nla_classes() -> None:
    genl.ipvsmsg()  # pyroute2's own class compiled first, as the dataplane does at start
    for group in ("224.0.0.81", "ff02::81"):
        d = SyncDaemon(SyncRole.BACKUP, "sync0", 9, ipaddress.ip_address(group), 9000, 3, 1500)
        msg = knobmsg()
        msg["cmd"] = 9
        msg["version"] = 1
        msg["attrs"] = [("IPVS_CMD_ATTR_DAEMON", daemon_attrs(d))]
        msg.encode()
        back = knobmsg(msg.data)
        back.decode()
        assert decode_daemon(back) == d
    # the port goes big-endian on the wire (the kernel reads it with nla_get_be16)
    assert b"\x23\x28" in msg.data  # 9000


# --------------------------------------------------------------------------- the keeper


def rig(values: dict[str, int] | None = None) -> tuple[KnobKeeper, FakeSysctls, FakeIpvsKnobs]:
    sysctls = FakeSysctls(POOL_SYSCTLS if values is None else values)
    ipvs = FakeIpvsKnobs()
    return KnobKeeper(sysctls, ipvs), sysctls, ipvs


async def test_pool_mode_sets_every_knob_and_reads_it_back() -> None:
    keeper, sysctls, ipvs = rig()
    await keeper.reconcile(pool())
    assert sysctls.values == {
        SLOPPY_TCP: 1,
        SLOPPY_SCTP: 1,
        CONNTRACK: 0,
        AMEMTHRESH: 32768,
        DROP_ENTRY: 1,
    }
    assert ipvs.current == IpvsTimeouts(300, 60, 300)
    assert all(s.ok and s.error is None for s in keeper.states())
    assert {s.knob for s in keeper.states()} == {*POOL_SYSCTLS, "ipvs.timeouts"}
    writes = len(sysctls.writes)
    await keeper.reconcile(pool())  # level-triggered: nothing to do, nothing written
    assert len(sysctls.writes) == writes
    assert ipvs.calls.count("set_timeouts") == 1


async def test_a_config_without_knobs_touches_nothing() -> None:
    keeper, sysctls, ipvs = rig()
    await keeper.reconcile(plain())
    assert sysctls.writes == []
    assert ipvs.calls == []
    assert keeper.states() == []


async def test_drift_is_repaired_on_the_next_pass() -> None:
    keeper, sysctls, ipvs = rig()
    await keeper.reconcile(pool())
    sysctls.values[SLOPPY_TCP] = 0  # someone ran sysctl -w
    ipvs.current = KERNEL_TIMEOUTS
    await keeper.reconcile(pool())
    assert sysctls.values[SLOPPY_TCP] == 1
    assert ipvs.current == IpvsTimeouts(300, 60, 300)


async def test_drop_entry_automatic_mode_flipped_by_the_kernel_is_not_drift() -> None:
    keeper, sysctls, _ = rig()
    await keeper.reconcile(pool())
    sysctls.values[DROP_ENTRY] = 2  # the kernel turned the defense on (low memory)
    before = len(sysctls.writes)
    await keeper.reconcile(pool())
    assert len(sysctls.writes) == before
    assert next(s for s in keeper.states() if s.knob == DROP_ENTRY).ok


async def test_leaving_pool_mode_restores_what_was_there() -> None:
    keeper, sysctls, ipvs = rig()
    await keeper.reconcile(pool())
    await keeper.reconcile(plain())
    assert sysctls.values == POOL_SYSCTLS
    assert ipvs.current == KERNEL_TIMEOUTS
    assert keeper.states() == []
    calls = len(ipvs.calls)
    await keeper.reconcile(plain())  # nothing of ours left: no kernel call
    assert len(ipvs.calls) == calls


async def test_a_failed_sysctl_is_a_state_a_count_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    keeper, sysctls, _ = rig()
    sysctls.fail[SLOPPY_TCP] = errno.EACCES
    caplog.set_level(logging.WARNING, "bgplb.knobkeeper")
    for _ in range(3):
        await keeper.reconcile(pool())
    state = next(s for s in keeper.states() if s.knob == SLOPPY_TCP)
    assert not state.ok
    assert state.error is not None
    assert "/proc/sys/net/ipv4/vs/sloppy_tcp" in state.error
    assert "EACCES" in state.error
    assert keeper.errors[SLOPPY_TCP] == 3
    failed = [r for r in caplog.records if "kernel_knob_failed" in r.getMessage()]
    assert len(failed) == 1
    # the others were set all the same
    assert sysctls.values[SLOPPY_SCTP] == 1
    assert sysctls.values[CONNTRACK] == 0


async def test_ip_vs_not_loaded_is_reported_not_raised() -> None:
    keeper, _, ipvs = rig(values={})
    ipvs.fail["timeouts"] = errno.ENOENT
    await keeper.reconcile(pool())
    states = {s.knob: s for s in keeper.states()}
    assert not states["ipvs.timeouts"].ok
    assert "ENOENT" in (states["ipvs.timeouts"].error or "")
    assert not states[SLOPPY_TCP].ok
    assert "ENOENT" in (states[SLOPPY_TCP].error or "")


class HangingSysctls(FakeSysctls):
    async def read(self, key: str) -> int:
        await asyncio.sleep(3600)
        return 0


async def test_a_hung_kernel_call_is_bounded() -> None:
    keeper = KnobKeeper(HangingSysctls(), FakeIpvsKnobs(), timeout=0.05)
    await asyncio.wait_for(keeper.reconcile(pool()), 5)
    assert keeper.errors["knobs"] == 1


async def test_sync_starts_master_and_backup() -> None:
    keeper, _, ipvs = rig()
    await keeper.reconcile(plain(connection_sync=SYNC))
    assert set(ipvs.running) == {SyncRole.MASTER, SyncRole.BACKUP}
    assert keeper.daemon_up() == {"master": True, "backup": True}
    assert ipvs.calls.count("start_daemon") == 2
    await keeper.reconcile(plain(connection_sync=SYNC))
    assert ipvs.calls.count("start_daemon") == 2  # running as configured: left alone


async def test_a_missing_or_different_daemon_is_restarted() -> None:
    keeper, _, ipvs = rig()
    await keeper.reconcile(plain(connection_sync=SYNC))
    del ipvs.running[SyncRole.BACKUP]  # e.g. ipvsadm --stop-daemon backup
    await keeper.reconcile(plain(connection_sync=SYNC))
    assert SyncRole.BACKUP in ipvs.running
    await keeper.reconcile(plain(connection_sync={**SYNC, "sync_id": 8}))
    assert {d.sync_id for d in ipvs.running.values()} == {8}
    assert ipvs.calls.count("stop_daemon") == 2


async def test_removing_connection_sync_stops_the_daemons() -> None:
    keeper, _, ipvs = rig()
    await keeper.reconcile(plain(connection_sync=SYNC))
    await keeper.reconcile(plain())
    assert ipvs.running == {}
    assert keeper.daemon_up() == {}
    assert keeper.states() == []


async def test_a_daemon_that_cannot_start_is_down_with_its_error() -> None:
    keeper, _, ipvs = rig()
    await keeper.reconcile(plain(connection_sync={**SYNC, "interface": "nosuch0"}))
    assert keeper.daemon_up() == {"master": False, "backup": False}
    master = next(s for s in keeper.states() if s.knob == "sync.master")
    assert "ENODEV" in (master.error or "")
    ipvs.interfaces.add("nosuch0")  # the link appears: the next pass starts them
    await keeper.reconcile(plain(connection_sync={**SYNC, "interface": "nosuch0"}))
    assert keeper.daemon_up() == {"master": True, "backup": True}


async def test_stop_at_exit_stops_only_our_daemons() -> None:
    keeper, _, ipvs = rig()
    await keeper.stop()
    assert "stop_daemon" not in ipvs.calls
    await keeper.reconcile(plain(connection_sync=SYNC))
    await keeper.stop()
    assert ipvs.running == {}


async def test_daemons_left_running_are_adopted_and_stopped_on_removal() -> None:
    keeper, _, ipvs = rig()
    await keeper.reconcile(plain(connection_sync=SYNC))
    survivor = KnobKeeper(FakeSysctls(), ipvs)  # a restart with keep_dataplane_on_exit
    await survivor.reconcile(plain(connection_sync=SYNC))
    assert ipvs.calls.count("start_daemon") == 2
    await survivor.reconcile(plain())
    assert ipvs.running == {}


# --------------------------------------------------------------------------- the /proc adapter


async def test_proc_sysctls_reads_writes_and_names_the_file(tmp_path: Path) -> None:
    vs = tmp_path / "proc/sys/net/ipv4/vs"
    vs.mkdir(parents=True)
    (vs / "sloppy_tcp").write_text("0\n")
    proc = ProcSysctls(tmp_path)
    assert await proc.read(SLOPPY_TCP) == 0
    await proc.write(SLOPPY_TCP, 1)
    assert (vs / "sloppy_tcp").read_text() == "1\n"
    with pytest.raises(SysctlError) as e:
        await proc.read(SLOPPY_SCTP)
    assert e.value.code == errno.ENOENT
    assert str(vs / "sloppy_sctp") in str(e.value)
    assert "ENOENT" in str(e.value)


async def test_a_burst_of_passes_looks_once_per_interval_unless_the_config_changed() -> None:
    clock = FakeClock()
    ipvs = FakeIpvsKnobs()
    keeper = KnobKeeper(FakeSysctls(POOL_SYSCTLS), ipvs, clock=clock, min_interval=1.0)
    cfg = pool()
    for _ in range(5):
        await keeper.reconcile(cfg)
    assert ipvs.calls.count("timeouts") == 2  # one look: read, set, read back
    await clock.advance(1.0)
    await keeper.reconcile(cfg)
    assert ipvs.calls.count("timeouts") == 3
    await keeper.reconcile(pool())  # a reload: another config object, looked at at once
    assert ipvs.calls.count("timeouts") == 4


# --------------------------------------------------------------------------- check-node


def _root(tmp_path: Path, values: dict[str, int]) -> Path:
    root = tmp_path / "root"
    for key, value in values.items():
        path = root / "proc/sys" / key.replace(".", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")
    return root


def test_check_node_reports_each_pool_sysctl_with_its_value_and_fix(tmp_path: Path) -> None:
    found = {p.name: p for p in check_prerequisites(pool(), _root(tmp_path, POOL_SYSCTLS))}
    for key, want in {SLOPPY_TCP: 1, SLOPPY_SCTP: 1, CONNTRACK: 0, AMEMTHRESH: 32768}.items():
        p = found[f"sysctl {key}"]
        assert not p.ok
        assert f"want {want}" in p.detail
        assert f"sysctl -w {key}={want}" in p.fix
        assert "agent sets it" in p.fix
    good = {**POOL_SYSCTLS, SLOPPY_TCP: 1, SLOPPY_SCTP: 1, CONNTRACK: 0, AMEMTHRESH: 32768}
    good[DROP_ENTRY] = 2  # automatic mode, currently on
    found = {p.name: p for p in check_prerequisites(pool(), _root(tmp_path / "b", good))}
    assert all(found[f"sysctl {k}"].ok for k in POOL_SYSCTLS)


def test_check_node_without_pool_mode_does_not_ask_for_sloppy(tmp_path: Path) -> None:
    names = {p.name for p in check_prerequisites(plain(), _root(tmp_path, POOL_SYSCTLS))}
    assert f"sysctl {SLOPPY_TCP}" not in names
    assert f"sysctl {CONNTRACK}" in names  # masq still wants it 1


# --------------------------------------------------------------------------- metrics, status


async def test_metrics_show_knobs_and_daemons() -> None:
    keeper, sysctls, _ = rig()
    sysctls.fail[SLOPPY_TCP] = errno.EPERM
    await keeper.reconcile(pool(connection_sync=SYNC))
    m = Metrics()
    m.set_knobs(keeper.states(), keeper.errors, keeper.daemon_up())
    text = m.exposition().decode()
    assert 'bgplb_kernel_knob_ok{knob="net.ipv4.vs.sloppy_tcp"} 0.0' in text
    assert 'bgplb_kernel_knob_ok{knob="net.ipv4.vs.conntrack"} 1.0' in text
    assert 'bgplb_kernel_knob_errors_total{knob="net.ipv4.vs.sloppy_tcp"} 1.0' in text
    assert 'bgplb_connection_sync_daemon_up{role="master"} 1.0' in text
    await keeper.reconcile(pool())
    m.set_knobs(keeper.states(), keeper.errors, keeper.daemon_up())
    assert "bgplb_connection_sync_daemon_up{" not in m.exposition().decode()


async def test_the_agent_keeps_knobs_in_its_pass_and_shows_them_in_status(
    tmp_path: Path,
) -> None:
    cfg = pool(state_dir=str(tmp_path), connection_sync=SYNC)
    clock = FakeClock()
    log = EventLog(clock=clock)
    keeper, sysctls, ipvs = rig()
    agent = Agent(
        cfg,
        dataplane=FakeDataplane(log, clock),
        speaker=FakeSpeaker(log),
        clock=clock,
        knobs=keeper,
        notifier=lambda _: None,
    )
    await agent.start()
    await agent.reconciler.reconcile_once()
    assert sysctls.values[SLOPPY_TCP] == 1
    status = agent.status()
    knobs = {k.knob: k for k in status.kernel_knobs}
    assert knobs[SLOPPY_TCP].ok
    assert knobs[SLOPPY_TCP].got == "1"
    assert knobs["sync.backup"].ok
    text = agent.metrics.exposition().decode()
    assert 'bgplb_connection_sync_daemon_up{role="backup"} 1.0' in text
    await agent.reconciler.shutdown(0, keep_dataplane=False)
    assert ipvs.running == {}


async def test_keep_dataplane_on_exit_leaves_the_daemons(tmp_path: Path) -> None:
    cfg = plain(connection_sync=SYNC)
    clock = FakeClock()
    log = EventLog(clock=clock)
    keeper, _, ipvs = rig()
    dp, sp = FakeDataplane(log, clock), FakeSpeaker(log)
    rec = Reconciler(cfg, dp, sp, StaticHealth(), AdminStore(tmp_path, clock), clock, knobs=keeper)
    await dp.start(rec.wake)
    await sp.start(cfg, rec.wake)
    await rec.reconcile_once()
    assert set(ipvs.running) == {SyncRole.MASTER, SyncRole.BACKUP}
    await rec.shutdown(0, keep_dataplane=True)
    assert set(ipvs.running) == {SyncRole.MASTER, SyncRole.BACKUP}


async def test_a_failed_restart_of_a_running_daemon_keeps_its_error() -> None:
    keeper, _, ipvs = rig()
    await keeper.reconcile(plain(connection_sync=SYNC))
    ipvs.fail["start_daemon"] = errno.EADDRNOTAVAIL  # e.g. the new interface has no address
    await keeper.reconcile(plain(connection_sync={**SYNC, "sync_id": 9}))
    master = next(s for s in keeper.states() if s.knob == "sync.master")
    assert not master.ok
    assert "EADDRNOTAVAIL" in (master.error or "")
    assert keeper.daemon_up() == {"master": False, "backup": False}
