"""ExaBGP's output is cleaned of the MD5 key in every form ExaBGP 5.0.15 can print."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess

import pytest

from bgplb.bgp import process
from bgplb.bgp.exabgp import ExaBGPSpeaker
from bgplb.bgp.scrub import Scrubber
from bgplb.bgp.supervisor import exabgp_binary
from bgplb.config import Config
from tests.harness.netns import tempdir

SECRETS = ["Right-Secret-4711", "q\"uo\\te'd key", "ünïcødé-key", "two\nlines-key"]


def _printed(secret: str) -> list[str]:
    """Lines as ExaBGP prints them (the base64 form is what our config gives it)."""
    b64 = base64.b64encode(secret.encode()).decode()
    return [
        f"line 9: md5-password {b64} ;",  # syntax error: the tokeniser's line
        f'\tmd5-password "{b64}";',  # its neighbor dump (str(neighbor))
        f"configuration | the route family ipv6 unicast is not configured, key {b64}",
        f"key is {b64.rstrip('=')} (unpadded)",
        f"Invalid MD5 password: not valid base64 ({secret})",  # the key as is
        f"decoded {secret.encode()!r} from the file",  # bytes repr
        f"value {secret!r} rejected",  # str repr (escaped quotes, backslashes)
        f'{{"md5": {json.dumps(secret)}}}',  # JSON, ASCII escapes
        f'{{"md5": {json.dumps(secret, ensure_ascii=False)}}}',
        f"key bytes {secret.encode().hex()} / {secret.encode().hex().upper()}",
        *secret.splitlines(),  # a key with a line break arrives in two lines
    ]


def _leaks(secret: str, text: str) -> list[str]:
    b64 = base64.b64encode(secret.encode()).decode()
    raw = secret.encode()
    spellings = {secret, b64, b64.rstrip("="), repr(secret)[1:-1], repr(raw)[2:-1]}
    spellings |= {json.dumps(secret)[1:-1], raw.hex(), raw.hex().upper()}
    spellings |= {p for p in secret.splitlines() if len(p) >= 4}
    return [s for s in spellings if s in text]


@pytest.mark.parametrize("secret", SECRETS)
def test_every_printed_form_is_hidden(secret: str) -> None:
    scrubber = Scrubber()
    scrubber.add([secret])
    for line in _printed(secret):
        out = scrubber.scrub(line)
        assert not _leaks(secret, out), (line, out)
        assert out  # the line is kept, only the key goes


def test_keys_of_an_earlier_config_stay_hidden() -> None:
    scrubber = Scrubber()
    scrubber.add(["Old-Secret-0001"])
    scrubber.add(["New-Secret-0002"])  # a reload: ExaBGP may still print the old block
    assert "Old-Secret" not in scrubber.scrub("was Old-Secret-0001")
    assert scrubber.scrub("peer 10.0.1.1 up") == "peer 10.0.1.1 up"


def test_real_exabgp_output_of_our_config_is_clean() -> None:
    """ExaBGP 5.0.15 itself: ``exabgp validate -nv`` prints its parse log (``. md5-password |
    '<b64>'``) and its neighbor dump (``md5-password "<b64>";``) of the rendered config."""
    base = tempdir("s")
    try:
        secret = "Sp3cial'Key\\x"
        key = base / "key"
        key.write_text(secret + "\n")
        key.chmod(0o600)
        config = Config.model_validate(
            {
                "node": {"router_id": "10.0.1.2", "local_as": 65001, "runtime_dir": str(base)},
                "peers": [{"address": "10.0.1.1", "asn": 65000, "md5_password_file": str(key)}],
            }
        )
        speaker = ExaBGPSpeaker()
        speaker._install_config(config)
        out = subprocess.run(
            [exabgp_binary(), "validate", "-nv", str(base / "exabgp.conf")],
            capture_output=True,
            text=True,
            env=process.exabgp_env() | {"exabgp_log_level": "DEBUG"},
            timeout=60,
            check=False,
        )
        lines = (out.stdout + out.stderr).splitlines()
        b64 = base64.b64encode(secret.encode()).decode()
        assert any(b64 in line for line in lines), "ExaBGP no longer prints the key?"
        for line in lines:
            assert not _leaks(secret, speaker._scrubber.scrub(line)), line
    finally:
        shutil.rmtree(base, ignore_errors=True)
