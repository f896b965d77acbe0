"""The whole agent on the fake dataplane, for ipvs-mode services in the host BGP tests.

``python -m tests.harness.fakedp_agent CONFIG [--log-format json] [--log-level debug]``, run
inside an LB namespace like ``bgp-lb run``: the same ``Agent`` and API (``serve_agent``), the
real ExaBGP speaker, real health checks of the real servers, but ``FakeDataplane`` instead of
netlink/IPVS (the host kernel has neither dummy links nor IPVS). What reaches the routers is
therefore exactly what the agent announces from its real servers' health; the VIP is not
installed anywhere (tests count the router's forwarding instead). ``AgentProc(command=...)``
runs it (tests/harness/agent_proc.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from bgplb.agent import EXIT_CONFIG, Agent
from bgplb.bgp.exabgp import ExaBGPSpeaker
from bgplb.clock import SystemClock
from bgplb.dataplane.fake import FakeDataplane
from bgplb.entry import load_or_report, serve_agent
from bgplb.eventlog import EventLog
from bgplb.logs import setup_logging

COMMAND = (sys.executable, "-m", "tests.harness.fakedp_agent")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fakedp_agent")
    parser.add_argument("config")
    parser.add_argument("--log-format", choices=("json", "text"), default="json")
    parser.add_argument("--log-level", default="debug")
    args = parser.parse_args(argv)
    path = Path(args.config)
    config = load_or_report(path)
    if config is None:
        return EXIT_CONFIG
    setup_logging(args.log_format, args.log_level)
    clock = SystemClock()
    agent = Agent(
        config,
        dataplane=FakeDataplane(EventLog(), clock),
        speaker=ExaBGPSpeaker(clock),
        clock=clock,
        config_path=path,
    )
    return asyncio.run(serve_agent(agent))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
