"""Issue 16 item 5: the agent and appliance image versions in bgplb_build_info and the status;
node.start_drained through the whole agent."""

from __future__ import annotations

from pathlib import Path

from bgplb import __version__
from bgplb.admin import START_DRAINED_REASON
from bgplb.buildinfo import image_version
from bgplb.metrics import Metrics

from .test_agent import VIP, Harness, raw_config


def test_image_version_from_os_release(tmp_path: Path) -> None:
    f = tmp_path / "os-release"
    f.write_text('NAME="Debian GNU/Linux"\nIMAGE_ID=bgp-lb\nIMAGE_VERSION="2026.12.1"\n')
    assert image_version(f) == "2026.12.1"
    f.write_text("IMAGE_VERSION=7\n")
    assert image_version(f) == "7"


def test_image_version_absent_is_empty(tmp_path: Path) -> None:
    assert image_version(tmp_path / "missing") == ""
    f = tmp_path / "os-release"
    f.write_text('NAME="Debian GNU/Linux"\nVERSION_ID="12"\n')
    assert image_version(f) == ""


def test_build_info_carries_the_image_version() -> None:
    body = Metrics(image_version="2026.12.1").exposition().decode()
    line = next(x for x in body.splitlines() if x.startswith("bgplb_build_info{"))
    assert f'version="{__version__}"' in line
    assert 'image_version="2026.12.1"' in line
    off_image = Metrics().exposition().decode()
    assert 'image_version=""' in next(
        x for x in off_image.splitlines() if x.startswith("bgplb_build_info{")
    )


async def test_status_reports_both_versions(tmp_path: Path) -> None:
    h = Harness(tmp_path, image_version="2026.12.1")
    node = h.agent.status().node
    assert node.version == __version__
    assert node.image_version == "2026.12.1"


async def test_start_drained_fresh_disk_announces_nothing_until_undrained(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, raw_config(tmp_path, start_drained=True))
    await h.start()
    await h.clock.advance(10.0)
    assert VIP not in h.announced()
    status = h.agent.status()
    assert status.node.drained
    assert status.node.drain_reason == START_DRAINED_REASON
    assert next(f for f in status.state_files if f.file == "admin").ok
    assert await h.agent.undrain(None) is None
    await h.until(lambda: VIP in h.announced())
    assert await h.stop() == 0
