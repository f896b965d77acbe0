"""The Go bgp-lb's drop-in (issue 16 item 4) against FRR: the Go project's own example config
(config-example.json, tests/bgp/data/go-config-example.json) with the lab's addresses, started
as the Go binary was (`bgp-lb -config FILE --log-level=debug -network-setup=false
-metrics-address :8081`), announces its VIP without touching an interface, exports
`bgp_lb_path_advertisement`, keeps the admin API off the wire. The host's kernel has no dummy
or IPVS module: the default flags (dummy + VIP) and `-ipvs-setup` are
tests/kernel/test_go_dropin.py (the kernel VM).

The Go config has no state_dir/runtime_dir: the agent runs in a private mount namespace with
tmpfs over /var/lib and /run, so the defaults touch nothing on the host."""

# Blocking process/file calls inside async tests are short and local on purpose.
# ruff: noqa: ASYNC221

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.agent_proc import BGP_LB, REPO, Backend, _curl
from tests.harness.frr import BgpLab, wait_until
from tests.harness.netns import kill_pids, ns_pids, run, tempdir

pytestmark = pytest.mark.bgp

EXAMPLE = Path(__file__).parent / "data" / "go-config-example.json"
VIP = "10.99.2.1/32"  # the lab router accepts 10.99.0.0/16 only (tests/harness/frr.py)
SERIES = 'bgp_lb_path_advertisement{next_hop="%s",prefix="10.99.2.1",prefix_length="32"}'


def go_config(bl: BgpLab, workdir: Path) -> Path:
    """The Go example with the lab's router id, AS numbers, peer and a VIP the lab's router
    accepts (nothing else changed)."""
    cfg = json.loads(EXAMPLE.read_text())
    cfg["bgp"]["local"]["routerID"] = bl.lb_v4(1)
    cfg["bgp"]["local"]["as"] = bl.lb_as
    cfg["bgp"]["peers"] = [{"address": bl.r1_v4(1), "as": bl.router.asn}]
    cfg["service"]["ip"] = VIP.removesuffix("/32")
    path = workdir / "config.json"
    path.write_text(json.dumps(cfg, indent=2))
    return path


@contextlib.contextmanager
def go_agent(ns: str, workdir: Path, *flags: str) -> Iterator[subprocess.Popen[bytes]]:
    script = f'mount -t tmpfs none /var/lib && mount -t tmpfs none /run && exec {BGP_LB} "$@"'
    argv = ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private"]
    argv += ["sh", "-c", script, "bgp-lb", *flags]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
    env.pop("WATCHDOG_USEC", None)
    with (workdir / "agent.log").open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    try:
        yield proc
    finally:
        inside = set(ns_pids(ns))
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(10)
        kill_pids([p for p in inside if p != os.getpid()])


def log_text(workdir: Path) -> str:
    return (workdir / "agent.log").read_text(errors="replace")


async def test_go_command_line_with_the_go_example_config_announces_and_exports_the_gauge(
    bgp_lab_factory,
) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    ns = bl.lb_ns[0]
    workdir = tempdir("godropin")
    www = workdir / "www"
    www.mkdir()
    (www / "healthz").write_text("ok\n")  # the example's httphealthcheck: port 8080, /healthz
    backend = Backend(ns, bl.lb_v4(1), www)
    backend.start()
    config = go_config(bl, workdir)
    flags = ["-config", str(config), "--log-level=debug", "-network-setup=false"]
    flags += ["-metrics-address", ":8081"]
    try:
        with go_agent(ns, workdir, *flags) as proc:

            def metrics() -> str:
                ok, body = _curl(ns, "http://127.0.0.1:8081/metrics", check=False, timeout=4)
                return body if ok else ""

            await wait_until(lambda: proc.poll() is not None or bool(metrics()), 30)
            assert proc.poll() is None, log_text(workdir)
            await wait_until(lambda: bl.router.fib(VIP) == [bl.lb_v4(1)], 40)
            # -network-setup=false: no link, no address anywhere
            assert "10.99.2.1" not in run("ip", "-n", ns, "addr", "show")
            assert "matchbox" not in run("ip", "-n", ns, "link", "show")
            await wait_until(lambda: f"{SERIES % bl.lb_v4(1)} 1.0" in metrics(), 15)
            body = metrics()
            assert "bgplb_build_info{" in body
            # metrics-only: on the node's address too, but never the admin API
            wire = f"http://{bl.lb_v4(1)}:8081"
            _, status = _curl(ns, f"{wire}/api/v1/status", "-o", "/dev/null", "-w",
                               "%{http_code}", check=False)  # fmt: skip
            assert status == "404", status
            refused, _ = _curl(ns, f"http://{bl.lb_v4(1)}:9180/healthz", check=False, timeout=4)
            assert not refused  # the admin API listens on 127.0.0.1 only
            _, st = _curl(ns, "http://127.0.0.1:9180/api/v1/status", check=False)
            status_doc = json.loads(st)
            assert status_doc["services"][0]["name"] == "matchbox"
            assert status_doc["services"][0]["decision"] == "announce"
            # bgp-lb doctor against the live agent: ExaBGP, the session, the acknowledged route
            res = subprocess.run(
                ["ip", "netns", "exec", ns, str(BGP_LB), "doctor", str(config), "--json"],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            report = json.loads(res.stdout)
            level = {(f["step"], f["name"]): f["level"] for f in report["findings"]}
            assert level[("processes", "exabgp")] == "ok", report
            assert level[("sessions", f"peer {bl.r1_v4(1)}")] == "ok", report
            assert level[("acknowledged", f"service matchbox -> {bl.r1_v4(1)}")] == "ok", report
            assert level[("checks", "matchbox/http")] == "ok", report
            # the status says how it was started; the doctor diagnoses the config as the
            # flags adjust it (announce only: no dummy/VIP/IPVS prerequisite) and says so
            assert status_doc["node"]["go_flags"] == {
                "config": str(config), "network_setup": False, "ipvs_setup": False,
                "metrics_address": ":8081", "log_level": "debug",
            }  # fmt: skip
            assert level[("config", "Go flags")] == "ok", report
            assert not [n for s, n in level if s == "kernel" and ("ip_vs" in n or "dummy" in n)]
            # the same flags given to the doctor: they agree with the agent's
            res = subprocess.run(
                ["ip", "netns", "exec", ns, str(BGP_LB), "doctor", *flags, "--json"],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            again = {(f["step"], f["name"]): f["level"] for f in json.loads(res.stdout)["findings"]}
            assert again[("agent", "Go flags")] == "ok", res.stdout
            # the health check fails -> withdrawn, the gauge drops to 0 (as the Go tool did)
            (www / "healthz").unlink()
            await wait_until(lambda: bl.router.fib(VIP) == [], 20)
            await wait_until(lambda: f"{SERIES % bl.lb_v4(1)} 0.0" in metrics(), 15)
    finally:
        backend.stop()
        if not os.environ.get("BGPLB_KEEP_LOGS"):
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)


def test_bad_go_flags_exit_2_before_touching_anything() -> None:
    res = subprocess.run(
        [str(BGP_LB), "-config", "/nonexistent.json", "-log-level", "verbose"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 2
    assert "unsupported log level" in res.stderr
