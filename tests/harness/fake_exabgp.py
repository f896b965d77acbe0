"""A stand-in for ``exabgp server CONF`` for unit tests (no root, no network).

It runs the config's API process exactly as ExaBGP would (stdin/stdout pipes), reports every
neighbor as connected + up, answers every command with ``done``, handles ``reload`` by
re-reading the config (new neighbors come up), and appends ``<pid> <command>`` for each
command to $FAKE_EXABGP_LOG.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys


def neighbors(conf: str) -> list[str]:
    with open(conf) as f:
        return re.findall(r"^neighbor (\S+) \{", f.read(), re.M)


def state(peer: str, name: str) -> str:
    event = {
        "exabgp": "5.0.0",
        "type": "state",
        "neighbor": {"address": {"peer": peer}, "state": name},
    }
    return json.dumps(event) + "\n"


def main(conf: str) -> None:
    with open(conf) as f:
        run = re.search(r"^\s*run (.*);$", f.read(), re.M)
    assert run
    relay = subprocess.Popen(
        shlex.split(run.group(1)), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert relay.stdin
    assert relay.stdout
    out, log = relay.stdin, open(os.environ["FAKE_EXABGP_LOG"], "a", buffering=1)  # noqa: SIM115
    known = neighbors(conf)
    out.write("".join(state(p, "connected") + state(p, "up") for p in known).encode())
    out.flush()
    for raw in relay.stdout:
        line = raw.decode().strip()
        log.write(f"{os.getpid()} {line}\n")
        if line == "reload":
            out.write(b"reload in progress\ndone\n")
            new = [p for p in neighbors(conf) if p not in known]
            known += new
            out.write("".join(state(p, "up") for p in new).encode())
        else:
            out.write(b"done\n")
        out.flush()


if __name__ == "__main__":
    main(sys.argv[2])
