"""A stand-in for ``exabgp server CONF`` for unit tests (no root, no network).

It runs the config's API process exactly as ExaBGP would (stdin/stdout pipes), reports every
neighbor as connected + up, answers every command with ``done`` (``version`` first prints
``exabgp 5.0.15``, as ExaBGP 5.0.15 does), handles ``reload`` by re-reading the config (new
neighbors come up), and appends ``<pid> <command>`` for each command to $FAKE_EXABGP_LOG.

Faults, from the environment:
- ``FAKE_EXABGP_REFUSE=REGEX``: answer ``error`` to matching commands (the first
  ``FAKE_EXABGP_REFUSE_COUNT`` of them per process, default: all).
- ``FAKE_EXABGP_START_DELAY=S`` with ``FAKE_EXABGP_START_MODE`` ``print`` (a line every
  0.2 s), ``cpu`` (busy) or ``silent`` (asleep, no output): a slow start before the API runs.
- ``FAKE_EXABGP_EXIT_AFTER=S``: exit (code 3) S seconds after the API process started.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time


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


def slow_start() -> None:
    delay = float(os.environ.get("FAKE_EXABGP_START_DELAY", "0"))
    mode = os.environ.get("FAKE_EXABGP_START_MODE", "print")
    end = time.monotonic() + delay
    while time.monotonic() < end:
        if mode == "cpu":
            sum(range(10000))
        elif mode == "print":
            print("fake exabgp: still loading", flush=True)
            time.sleep(0.2)
        else:
            time.sleep(0.05)


def start_relay(conf: str) -> subprocess.Popen[bytes]:
    """Run the config's ``process`` (the agent's relay) with pipes, as ExaBGP does."""
    with open(conf) as f:
        run = re.search(r"^\s*run (.*);$", f.read(), re.M)
    assert run
    relay = subprocess.Popen(
        shlex.split(run.group(1)), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert relay.stdin
    assert relay.stdout
    return relay


def main(conf: str) -> None:
    slow_start()
    relay = start_relay(conf)
    assert relay.stdin
    assert relay.stdout
    exit_after = os.environ.get("FAKE_EXABGP_EXIT_AFTER")
    if exit_after:
        threading.Timer(float(exit_after), os._exit, (3,)).start()
    refuse = re.compile(os.environ.get("FAKE_EXABGP_REFUSE", r"(?!)"))
    left = int(os.environ.get("FAKE_EXABGP_REFUSE_COUNT", "-1"))
    out, log = relay.stdin, open(os.environ["FAKE_EXABGP_LOG"], "a", buffering=1)  # noqa: SIM115
    known = neighbors(conf)
    out.write("".join(state(p, "connected") + state(p, "up") for p in known).encode())
    out.flush()
    for raw in relay.stdout:
        line = raw.decode().strip()
        log.write(f"{os.getpid()} {line}\n")
        if refuse.search(line) and left != 0:
            left -= 1
            out.write(b"error\n")
        elif line == "reload":
            out.write(b"reload in progress\ndone\n")
            new = [p for p in neighbors(conf) if p not in known]
            known += new
            out.write("".join(state(p, "up") for p in new).encode())
        elif line == "version":
            out.write(b"exabgp 5.0.15\ndone\n")
        else:
            out.write(b"done\n")
        out.flush()


if __name__ == "__main__":
    main(sys.argv[2])
