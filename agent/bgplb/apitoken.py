"""The API bearer token: read from the operator's file (never renamed or rewritten).

A file that cannot be used disables the mutating endpoints with the reason; the agent and its
routing carry on, and the file is read again on every reload (docs/operations.md#state-files).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from .logs import log_event
from .statefile import FileHealth

log = logging.getLogger("bgplb.api")

__all__ = ["ApiToken", "TokenError", "load_token"]


class TokenError(Exception):
    """The token file is missing, empty or readable by others (message says how to fix)."""


def load_token(path: str | Path) -> str:
    """Read the API bearer token; refuses a file readable by group or other."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & 0o077:
                raise TokenError(
                    f"token file {p} has mode {stat.S_IMODE(mode):04o}: it must not be "
                    f"accessible by group or others; fix with: chmod 600 {p}"
                )
            data = f.read(65536)
    except OSError as exc:
        raise TokenError(f"cannot read token file {p}: {exc.strerror or exc}") from None
    try:
        token = data.decode().strip()
    except UnicodeDecodeError:
        raise TokenError(f"token file {p} is not UTF-8 text") from None
    if not token:
        raise TokenError(f"token file {p} is empty")
    return token


class ApiToken:
    """The bearer token as the API uses it: read from the operator's file (never renamed or
    rewritten). A file that cannot be used (unreadable, readable by others, empty) disables
    the mutating endpoints with the reason (403 ``detail``, status, metric); routing is not
    affected. :meth:`load` runs at start and again on every reload (SIGHUP or the API), so a
    fixed file is picked up without a restart."""

    def __init__(self, path: Path | None = None, token: str | None = None) -> None:
        self.path = path
        self.value: bytes | None = token.encode() if token is not None else None
        self.health = FileHealth(path)
        self.disabled = "no API token is configured (node.api.token_file)"

    def load(self, path: Path | None) -> str | None:
        """(Re)read the token from ``path`` (None: no token, the endpoints are disabled);
        returns the new token, or None. A failure logs one ERROR line naming the file."""
        self.path, self.health.path = path, path
        if path is None:
            self.value, self.disabled = None, "no API token is configured (node.api.token_file)"
            self.health.fine()
            return None
        try:
            token = load_token(path)
        except TokenError as err:
            if self.health.problem != str(err):
                log_event(log, "state_file_unreadable", level=logging.ERROR, file=path, reason=err)
            self.value, self.disabled = None, f"{err}; fix it, then reload (SIGHUP)"
            self.health.failed(str(err))
            return None
        if self.health.problem is not None:
            log_event(log, "api_token_loaded", file=path)
        self.value = token.encode()
        self.health.fine()
        return token
