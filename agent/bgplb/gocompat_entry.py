"""Runs the agent from the Go bgp-lb's command line (:mod:`bgplb.gocompat`): the same
process as ``bgp-lb run`` with the flags' meanings applied to the config at start and on
every reload, and the Go tool's gauge exported."""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from pathlib import Path

from .agent import EXIT_CONFIG
from .config import ConfigError, load_config
from .gocompat import USAGE, GoFlagError, GoHelp, adjust_config, parse_go_flags
from .logs import setup_logging

EXIT_USAGE = 2


def run_go_command_line(argv: Sequence[str]) -> int:
    try:
        flags = parse_go_flags(argv)
    except GoHelp:
        print(USAGE)
        return 0
    except GoFlagError as e:
        print(f"bgp-lb: {e}\n{USAGE}", file=sys.stderr)
        return EXIT_USAGE
    path = Path(flags.config)
    try:
        config = load_config(path)
    except ConfigError as err:
        for issue in err.errors:
            print(f"{path}: {issue}", file=sys.stderr)
        return EXIT_CONFIG
    adjust = functools.partial(adjust_config, flags=flags)
    config = adjust(config)
    setup_logging(config.node.log.format, config.node.log.level)
    from .entry import build_real_agent, run_process

    agent = build_real_agent(config, path, config_adjust=adjust, go_command_line=True)
    return run_process(agent)
