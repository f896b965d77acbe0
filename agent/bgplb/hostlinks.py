"""The config against this host's links: problems only the host reveals (a non-dummy link
named like a service...). The agent checks them at start and on every reload."""

from __future__ import annotations

from .config import Config, ConfigIssue, check_against_host


async def host_issues(config: Config) -> list[ConfigIssue]:
    """Config problems only this host reveals (a non-dummy link named like a service...)."""
    from .dataplane.rtnl import Rtnl

    rtnl = Rtnl(None, 5.0)
    await rtnl.open()
    try:
        links = await rtnl.links()
    finally:
        rtnl.close()
    return check_against_host(config, {link.name: link.kind or "" for link in links})
