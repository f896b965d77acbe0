"""ExaBGP's config file: rendered from the config (reading the peers' MD5 key files), written
privately into ``runtime_dir`` and written again before every spawn of ExaBGP.

A file that cannot be written (runtime_dir unwritable, full) does not stop the agent: the
failure is in :attr:`ConfigFile.health` (a state file: status and metrics show it) and the next
spawn tries again, so ExaBGP starts once the disk allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path

from ..config import Config
from ..model import PeerKey
from ..statefile import FileHealth
from . import render
from .base import SpeakerError
from .scrub import Scrubber

log = logging.getLogger("bgplb.bgp")
SOCKET_NAME = "api.sock"
CONFIG_NAME = "exabgp.conf"


class ConfigFile:
    """The config in force, its rendering and MD5 secrets, and the file's health.

    New secrets go to ``scrubber`` as soon as they are read: ExaBGP may print a new file
    before the reload that brought it is committed."""

    def __init__(self, scrubber: Scrubber) -> None:
        self._scrubber = scrubber
        self.config: Config | None = None
        self.rendered: render.Rendered | None = None
        self.secrets: dict[PeerKey, str] = {}
        self.health = FileHealth()

    def install(self, config: Config) -> None:
        """Render and write (start). A failed write is in ``health``, it does not raise."""
        rendered, secrets = self.prepare(config)
        self.commit(config, rendered, secrets)
        with contextlib.suppress(SpeakerError):  # logged and counted by write
            self.write(config, rendered)

    def prepare(self, config: Config) -> tuple[render.Rendered, dict[PeerKey, str]]:
        """Render (reads the MD5 key files); switches nothing. New keys are scrubbed from
        ExaBGP's output from now on (it may print the new file before we commit)."""
        try:
            secrets = render.read_secrets(config)
            relay = [sys.executable, "-m", "bgplb.bgp.relay", str(self.socket_path(config))]
            rendered = render.render(config, relay, secrets)
        except (render.RenderError, OSError) as e:
            raise SpeakerError(f"cannot render exabgp config: {e}") from e
        self._scrubber.add(secrets.values())
        return rendered, secrets

    def commit(
        self, config: Config, rendered: render.Rendered, secrets: dict[PeerKey, str]
    ) -> None:
        """``config`` is in force from now on (the file is not written here)."""
        self.config, self.rendered, self.secrets = config, rendered, secrets

    def write(self, config: Config, rendered: render.Rendered) -> None:
        """Write the file now, on the caller's thread (start and before each spawn)."""
        path = config.node.runtime_dir / CONFIG_NAME
        self._written(path, _write(config, path, rendered.text))

    async def write_off_loop(self, config: Config, rendered: render.Rendered) -> None:
        """The same write with its fsyncs in a worker thread (every reload: 7-87 ms the
        event loop no longer waits for; bench/RESULTS.md "Event loop lag")."""
        path = config.node.runtime_dir / CONFIG_NAME
        self._written(path, await asyncio.to_thread(_write, config, path, rendered.text))

    def _written(self, path: Path, error: OSError | None) -> None:
        self.health.path = path
        if error is not None:
            problem = (
                f"cannot write {path}: {error.strerror or error}; "
                "ExaBGP is not started until it can"
            )
            if self.health.problem != problem:
                log.error("state_file_unwritable: %s", problem)
            self.health.failed(problem)
            raise SpeakerError(f"cannot write exabgp config: {error}") from error
        self.health.fine()

    def rewrite(self) -> Path:
        """Write the file again from the config in force (before every spawn: a file
        corrupted, edited or removed while ExaBGP ran never survives a restart); its path."""
        assert self.config is not None
        assert self.rendered is not None
        self.write(self.config, self.rendered)
        return self.config.node.runtime_dir / CONFIG_NAME

    def socket_path(self, config: Config | None = None) -> Path:
        """The unix socket the relay (ExaBGP's API process) connects to."""
        cfg = config or self.config
        assert cfg is not None
        return cfg.node.runtime_dir / SOCKET_NAME


def _write(config: Config, path: Path, text: str) -> OSError | None:
    """The directory and the file (may run in a worker thread: touches no shared state)."""
    try:
        render.ensure_dir(config.node.runtime_dir)
        render.write_private(path, text)
    except OSError as e:
        return e
    return None
