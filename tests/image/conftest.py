"""Fixtures for the appliance image tests (marker ``image``; run by ``make test-image``).

Topology: namespace ``blt<pid>-r1`` holds FRR (zebra + bgpd, AS 65000, 192.0.2.1/24 on tap0)
and the qemu process whose virtio NIC is tap0; the node is 192.0.2.10 (AS 65001).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.frr import Neighbor, Router
from tests.harness.netns import Lab, run

REPO = Path(__file__).resolve().parents[2]
IMAGE = Path(os.environ.get("BGPLB_IMAGE", REPO / "_work/image/bgp-lb.qcow2"))
LOGS = REPO / "_work/test-image"
MAKE_CONFIG_DISK = REPO / "image/make-config-disk.sh"
ROUTER_IP = "192.0.2.1"
NODE_IP = "192.0.2.10"
ROUTER_AS = 65000
NODE_AS = 65001
VIP = "10.99.0.1"
# TCG only (no KVM here) and a shared 2-core host: generous, but bounded.
BOOT_TIMEOUT = float(os.environ.get("BGPLB_IMAGE_BOOT_TIMEOUT", "420"))

if os.geteuid() != 0:
    pytest.skip("image tests need root (namespaces, tap, FRR)", allow_module_level=True)


@dataclass
class RouterSide:
    lab: Lab
    ns: str
    router: Router
    workdir: Path
    key: Path
    image: Path  # the one disk every boot of the session starts (snapshot=on: never written)

    @property
    def public_key(self) -> str:
        return self.key.with_suffix(".pub").read_text().strip()


@pytest.fixture(scope="session")
def image() -> Path:
    """The image `make image` built once; every boot (every module) starts this same file."""
    assert IMAGE.is_file(), f"{IMAGE} is missing: run `make image` first"
    return IMAGE


@pytest.fixture(scope="module")
def firmware() -> str:
    """How the node fixtures boot the disk (guest.firmware_args); test_image_uefi overrides it."""
    return "bios"


@pytest.fixture(scope="module")
def router_side(request: pytest.FixtureRequest, image: Path) -> Iterator[RouterSide]:
    """A fresh FRR (and namespace) per module: one boot per module, no state carried over."""
    # FRR runs as user frr: its directory must be reachable (pytest's tmp dirs are 0700).
    workdir = Path(tempfile.mkdtemp(prefix="bgplb-image-"))
    os.chmod(workdir, 0o755)
    key = workdir / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30
    )
    lab = Lab()
    try:
        ns = lab.add_ns("r1")
        run("ip", "-n", ns, "tuntap", "add", "tap0", "mode", "tap")
        run("ip", "-n", ns, "addr", "add", f"{ROUTER_IP}/24", "dev", "tap0")
        run("ip", "-n", ns, "link", "set", "tap0", "up")
        router = Router(
            ns,
            ROUTER_AS,
            ROUTER_IP,
            [Neighbor(NODE_IP, NODE_AS, families=("ipv4",))],
            workdir / "frr",
        )
        router.start()
    except BaseException:
        lab.close()
        raise
    try:
        yield RouterSide(lab, ns, router, workdir, key, image)
    finally:
        router.stop()
        lab.close()
        # Keep the consoles and FRR's log for a post-mortem; drop the rest.
        LOGS.mkdir(parents=True, exist_ok=True)
        for f in [*workdir.glob("console-*.log"), workdir / "frr/frr.log"]:
            if f.exists():
                name = (
                    f.name
                    if f.name.startswith("console-")
                    else f"frr-{request.module.__name__.rsplit('.', 1)[-1]}.log"
                )
                shutil.copy(f, LOGS / name)
        shutil.rmtree(workdir, ignore_errors=True)


def make_config_disk(out: Path, files: dict[str, str], keys: Path | None, units: list[str]) -> Path:
    """Write ``files`` (config.yaml, node.network, firewall.yaml) and call the real helper."""
    src = out.parent / f"{out.stem}-src"
    src.mkdir(parents=True, exist_ok=True)
    argv = [str(MAKE_CONFIG_DISK), "--out", str(out)]
    for name, text in files.items():
        (src / name).write_text(text)
        flag = {"config.yaml": "--config", "firewall.yaml": "--firewall"}.get(name, "--network")
        argv += [flag, str(src / name)]
    if keys is not None:
        argv += ["--keys", str(keys)]
    for unit in units:
        argv += ["--enable-unit", unit]
    subprocess.run(argv, check=True, timeout=60, capture_output=True)
    return out


def cloud_localds(out: Path, seed: Path) -> Path:
    """``cloud-localds [--network-config F] OUT user-data meta-data``: an ISO labelled cidata."""
    tool = shutil.which("cloud-localds")
    assert tool, "cloud-localds missing: apt-get install cloud-image-utils (make deps)"
    argv = [tool]
    if (seed / "network-config").exists():
        argv += ["--network-config", str(seed / "network-config")]
    argv += [str(out), str(seed / "user-data"), str(seed / "meta-data")]
    subprocess.run(argv, check=True, timeout=60, capture_output=True)
    return out
