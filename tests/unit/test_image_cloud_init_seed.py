"""image/rootfs/usr/libexec/bgp-lb/cloud-init-seed: whether cloud-init configured the node.

install-config --cloud-init (bgp-lb-cloud-init.service) takes /etc/bgp-lb/config.yaml only when
cloud-init found a seed this boot and the current instance's user-data writes that file (not
deferred): never a config an earlier instance left behind.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "image/rootfs/usr/libexec/bgp-lb/cloud-init-seed"


def _load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("cloud_init_seed", str(SCRIPT))
    spec = importlib.util.spec_from_loader("cloud_init_seed", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cloud_init_seed"] = module  # dataclasses look the module up by name
    loader.exec_module(module)
    return module


cis = _load()

NOCLOUD = "DataSourceNoCloud [seed=/dev/vdb][dsmode=net]"
CONFIG_DRIVE = "DataSourceConfigDrive [net,ver=2][source=/dev/sr0]"


def status(datasource: str | None, errors: list[str] | None = None) -> str:
    """/run/cloud-init/status.json as cloud-init 22.4's status_wrapper writes it."""
    stage = {"errors": errors or [], "start": 1.0, "finished": 2.0}
    return json.dumps(
        {
            "v1": {
                "datasource": datasource,
                "init-local": {"errors": [], "start": 0.5, "finished": 0.9},
                "init": stage,
                "modules-config": {"errors": [], "start": None, "finished": None},
                "modules-final": {"errors": [], "start": None, "finished": None},
                "stage": None,
            }
        }
    )


WRITES_CONFIG = """\
#cloud-config
ssh_authorized_keys: [ssh-ed25519 AAAA test]
write_files:
- path: /etc/bgp-lb/config.yaml
  owner: root:root
  permissions: '0600'
  content: |
    node: {}
"""


def test_no_status_and_cloud_init_off_means_no_seed() -> None:
    # ds-identify found no cidata/config-2 filesystem: the generator left cloud-init off.
    v = cis.decide(None, False, None, None)
    assert v.kind == "noseed"


def test_datasource_none_means_no_seed() -> None:
    v = cis.decide(status("DataSourceNone"), True, WRITES_CONFIG, None)
    assert v.kind == "noseed"
    v = cis.decide(status(None), True, WRITES_CONFIG, None)
    assert v.kind == "noseed"


def test_cloud_init_on_but_silent_is_refused() -> None:
    v = cis.decide(None, True, None, None)
    assert v.kind == "refused"
    assert "cloud-init status --long" in v.why
    v = cis.decide("{not json", True, None, None)
    assert v.kind == "refused"


@pytest.mark.parametrize("datasource", [NOCLOUD, CONFIG_DRIVE])
def test_a_seed_whose_user_data_writes_the_config(datasource: str) -> None:
    v = cis.decide(status(datasource), True, WRITES_CONFIG, None)
    assert v.kind == "seed"
    assert v.datasource == datasource
    assert v.firewall == ""


def test_firewall_only_when_this_instance_writes_it() -> None:
    text = WRITES_CONFIG + "- path: /etc/bgp-lb/firewall.yaml\n  content: 'api_sources: []'\n"
    assert cis.decide(status(NOCLOUD), True, text, None).firewall == "/etc/bgp-lb/firewall.yaml"
    deferred = text + "  defer: true\n"
    assert cis.decide(status(NOCLOUD), True, deferred, None).firewall == ""


def test_paths_are_normalised() -> None:
    text = "#cloud-config\nwrite_files:\n- path: etc/bgp-lb//config.yaml\n  content: x\n"
    assert cis.decide(status(NOCLOUD), True, text, None).kind == "seed"


def test_user_data_without_the_config_is_refused_even_if_an_old_file_exists() -> None:
    # An earlier instance's /etc/bgp-lb/config.yaml may still be on the disk: not this one's.
    text = "#cloud-config\nssh_authorized_keys: [ssh-ed25519 AAAA test]\n"
    v = cis.decide(status(NOCLOUD), True, text, None)
    assert v.kind == "refused"
    assert "no write_files entry for /etc/bgp-lb/config.yaml" in v.why
    v = cis.decide(status(NOCLOUD), True, None, None)  # no cloud-config part at all
    assert v.kind == "refused"


BOOT_LOG = """\
2026-12-06 10:00:00,000 - util.py[WARNING]: an old boot's warning
2026-12-07 10:00:00,000 - main.py[DEBUG]: Cloud-init v. 22.4.2 running 'init-local' at Mon, 07 Dec
2026-12-07 10:00:01,000 - util.py[DEBUG]: Attempting to load yaml
2026-12-07 10:00:02 - util.py[WARNING]: Failed loading yaml blob. Invalid format at line 3 column 1
2026-12-07 10:00:03,000 - util.py[WARNING]: a later warning
"""


def test_bad_yaml_is_refused_with_what_cloud_init_said() -> None:
    # cloud-init logs a warning for user-data it cannot parse and applies none of it.
    v = cis.decide(status(NOCLOUD), True, "#cloud-config\n", BOOT_LOG)
    assert v.kind == "refused"
    assert "(cloud-init: Failed loading yaml blob. Invalid format at line 3 column 1)" in v.why
    assert "old boot" not in v.why


def test_errors_in_status_come_first() -> None:
    v = cis.decide(status(NOCLOUD, ["write_files failed"]), True, "#cloud-config\n", BOOT_LOG)
    assert "(cloud-init: write_files failed)" in v.why


def test_deferred_config_is_refused() -> None:
    text = WRITES_CONFIG + "  defer: true\n"
    v = cis.decide(status(NOCLOUD), True, text, None)
    assert v.kind == "refused"
    assert "defer: true" in v.why


def test_main_prints_four_parts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, inst = tmp_path / "run", tmp_path / "instance"
    run.mkdir()
    inst.mkdir()
    (run / "enabled").touch()
    (run / "status.json").write_text(status(NOCLOUD))
    (inst / "cloud-config.txt").write_text(WRITES_CONFIG)
    argv = ["--run-dir", str(run), "--instance-dir", str(inst), "--log", str(tmp_path / "no")]
    assert cis.main(argv) == 0
    assert capsys.readouterr().out.split("\n")[:3] == ["seed", NOCLOUD, ""]
    (inst / "cloud-config.txt").unlink()
    assert cis.main(argv) == 0
    lines = capsys.readouterr().out.split("\n")
    assert lines[0] == "refused"
    assert "write_files" in lines[3]
