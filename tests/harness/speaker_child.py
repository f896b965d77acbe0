"""Runs an ExaBGPSpeaker in its own process, for fate-sharing tests (SIGKILL this process).

``python -m tests.harness.speaker_child CONFIG_JSON NETNS PEER PREFIX...``: starts the speaker,
announces the prefixes to PEER, prints ``{"exabgp_pid": N}`` once the peer is up, then waits.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys

from bgplb.bgp.exabgp import ExaBGPSpeaker
from bgplb.config import Config
from bgplb.model import PeerState, Route


async def main(argv: list[str]) -> None:
    config = Config.model_validate(json.loads(argv[1]))
    speaker = ExaBGPSpeaker(netns=argv[2])
    peer = argv[3]
    await speaker.start(config, lambda: None)
    routes = frozenset(Route(ipaddress.ip_network(p), None) for p in argv[4:])
    await speaker.set_routes({peer: routes})
    for _ in range(1000):
        if speaker.peers()[peer].state is PeerState.UP and speaker.pid:
            break
        await asyncio.sleep(0.01)
    print(json.dumps({"exabgp_pid": speaker.pid}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv))
