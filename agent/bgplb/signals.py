"""The agent's signals: SIGTERM/SIGINT stop it (a second one ends the shutdown grace at once),
SIGHUP reloads the config file (one reload runs, at most one more waits behind it)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING

from .logs import log_event
from .status import ReloadResult

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger("bgplb.agent")


def install_signals(agent: Agent) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, agent.request_stop)
    loop.add_signal_handler(signal.SIGINT, agent.request_stop)
    reloads: set[asyncio.Task[ReloadResult]] = set()

    def _done(t: asyncio.Task[ReloadResult]) -> None:
        reloads.discard(t)
        if not t.cancelled() and t.exception() is not None:  # reload() catches; a bug if here
            log_event(log, "config_reload_crashed", level=logging.ERROR, error=repr(t.exception()))

    def _hup() -> None:
        if sum(1 for t in reloads if not t.done()) >= 2:
            return  # one reload runs, one waits and will read the file after: enough
        t = loop.create_task(agent.reload())
        reloads.add(t)
        t.add_done_callback(_done)

    loop.add_signal_handler(signal.SIGHUP, _hup)
