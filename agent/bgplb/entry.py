"""The process entry of ``bgp-lb run``: load the config file, build the real agent (netlink
dataplane, ExaBGP speaker, system clock), check the host, serve the API (and the optional
metrics listener), install the signal handlers and run the agent until it stops."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from .agent import EXIT_CONFIG, Agent
from .apitoken import ApiToken
from .clock import SystemClock
from .config import Config, ConfigError, load_config
from .gocompat import GoFlags
from .hostlinks import host_issues
from .logs import register_secret, setup_logging
from .sdnotify import watchdog_interval
from .signals import install_signals
from .stopguard import arm_exit, bounded_phase

API_CLOSE_BUDGET = 10.0  # seconds


async def serve_agent(agent: Agent) -> int:
    from .api import build_app, serve

    issues = await host_issues(agent.config)
    if issues:
        for issue in issues:
            print(f"{agent.config_path}: {issue}", file=sys.stderr)
        return EXIT_CONFIG

    api = agent.config.node.api
    token = ApiToken()  # a bad token file disables the mutating API, not the agent
    if secret := token.load(api.token_file):
        register_secret(secret)
    agent.api_token = token
    app = build_app(agent, agent.metrics, token)
    runners = [await serve(app, api.listen, api.port)]
    if api.metrics_listen is not None or api.metrics_port is not None:
        from .api import build_metrics_app

        runners.append(
            await serve(
                build_metrics_app(agent.metrics),
                api.metrics_listen or api.listen,
                api.metrics_port or api.port + 1,
            )
        )
    install_signals(agent)
    try:
        return await agent.run()
    finally:
        for r in runners:  # aiohttp waits up to 60 s for requests in flight: 10 is enough
            await bounded_phase("close the API listener", r.cleanup(), API_CLOSE_BUDGET)


def run_process(agent: Agent) -> int:
    """The agent as this process's whole life (``bgp-lb run`` and the Go-style start)."""
    with asyncio.Runner() as runner:  # close() joins the default executor's threads...
        code = runner.run(serve_agent(agent))
        arm_exit(code)  # ...with no deadline: a stuck one must not keep a stopped agent alive
    return code


def build_real_agent(
    config: Config,
    config_path: Path,
    config_adjust: Callable[[Config], Config] | None = None,
    go_flags: GoFlags | None = None,
) -> Agent:
    """``go_flags``: started from the Go command line (``config_adjust`` applies them)."""
    from .bfd.frr import FrrBfd
    from .bgp.exabgp import ExaBGPSpeaker
    from .buildinfo import image_version
    from .dataplane.ipvsknobs import NetlinkIpvsKnobs
    from .dataplane.netlink import NetlinkDataplane
    from .dataplane.sysctl import ProcSysctls
    from .knobkeeper import KnobKeeper

    clock = SystemClock()
    return Agent(
        config,
        dataplane=NetlinkDataplane(config.node.state_dir, adopt_first_start=go_flags is not None),
        speaker=ExaBGPSpeaker(clock),
        clock=clock,
        config_path=config_path,
        watchdog_seconds=watchdog_interval(),
        check_node=True,
        knobs=KnobKeeper(ProcSysctls(), NetlinkIpvsKnobs(), clock=clock),
        image_version=image_version(),
        config_adjust=config_adjust,
        legacy_metrics=go_flags is not None,
        bfd=FrrBfd(clock),  # idle until a peer has bfd set
        go_flags=go_flags,
    )


def load_or_report(path: Path) -> Config | None:
    """The config file for a process start; None after printing each issue as ``path: issue``
    on stderr (the caller exits EXIT_CONFIG)."""
    try:
        return load_config(path)
    except ConfigError as err:
        for issue in err.errors:
            print(f"{path}: {issue}", file=sys.stderr)
        return None


def run_agent(args: argparse.Namespace) -> int:
    path = Path(args.config)
    config = load_or_report(path)
    if config is None:
        return EXIT_CONFIG
    setup_logging(
        args.log_format or config.node.log.format, args.log_level or config.node.log.level
    )
    agent = build_real_agent(config, path)
    return run_process(agent)
