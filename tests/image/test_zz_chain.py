import pytest
from .test_image_cloudinit import node, firmware  # noqa: F401
from .node import Node

pytestmark = pytest.mark.image

def test_chain(node: Node) -> None:  # noqa: F811
    print(node.ssh.run("systemctl list-jobs; systemd-analyze critical-chain multi-user.target; systemd-analyze critical-chain cloud-final.service; systemd-analyze blame | head -25", timeout=120, check=False))
    print(node.ssh.run("cloud-init status --wait --format json", timeout=300))
    print(node.ssh.run("systemd-analyze critical-chain cloud-final.service; systemd-analyze critical-chain multi-user.target; journalctl -b -o short-monotonic --no-pager | grep -iE 'timeout|timed out|wait|Reached target' | head -40", timeout=120, check=False))
