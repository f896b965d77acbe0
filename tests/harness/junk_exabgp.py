"""A stand-in for ``exabgp server CONF`` that talks junk (tests/unit/test_fuzz_exabgp_events.py).

Like fake_exabgp.py (runs the config's API relay, answers every command ``done`` and logs
``<pid> <command>`` to $FAKE_EXABGP_LOG), but first writes every line of $FAKE_EXABGP_JUNK
(raw bytes) to the agent, then reports each neighbor connected + up, and writes one more junk
line before every ``done``.
"""

from __future__ import annotations

import os
import sys

from fake_exabgp import neighbors, start_relay, state  # type: ignore[import-not-found]


def main(conf: str) -> None:
    relay = start_relay(conf)
    assert relay.stdin
    assert relay.stdout
    out, log = relay.stdin, open(os.environ["FAKE_EXABGP_LOG"], "a", buffering=1)  # noqa: SIM115
    with open(os.environ["FAKE_EXABGP_JUNK"], "rb") as f:
        junk = f.read().split(b"\n")
    out.write(b"".join(line + b"\n" for line in junk))
    out.write("".join(state(p, "connected") + state(p, "up") for p in neighbors(conf)).encode())
    out.flush()
    for i, raw in enumerate(relay.stdout):
        line = raw.decode().strip()
        log.write(f"{os.getpid()} {line}\n")
        out.write(junk[i % len(junk)] + b"\ndone\n")
        out.flush()


if __name__ == "__main__":
    main(sys.argv[2])
