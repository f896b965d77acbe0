"""Put the process's logging back as it was after a test that called ``setup_logging``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def restored_logging() -> Iterator[None]:
    """The root logger's handlers and level, aiohttp's access logger level and its server
    logger's level and filters (setup_logging changes all of them) are restored on exit."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access = logging.getLogger("aiohttp.access")
    access_level = access.level
    server = logging.getLogger("aiohttp.server")
    server_level, server_filters = server.level, list(server.filters)
    try:
        yield
    finally:
        access.setLevel(access_level)
        server.setLevel(server_level)
        for f in list(server.filters):
            if f not in server_filters:
                server.removeFilter(f)
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
