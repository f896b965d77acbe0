"""State files: the one atomic write every file the agent keeps goes through, the one way a
bad file is set aside, and the per-file health that status and metrics show.

The agent's files: ``<state_dir>/admin.json`` (drains), ``<state_dir>/dataplane.json`` (the
ownership record), ``<runtime_dir>/exabgp.conf`` (rendered) and the operator's API token file
(read only, never renamed). A bad file never stops the agent: each has its own policy
(docs/operations.md#state-files).
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from pathlib import Path

ADMIN = "admin"
OWNERSHIP = "ownership"
EXABGP_CONFIG = "exabgp_config"
API_TOKEN = "api_token"
FILES = (ADMIN, OWNERSHIP, EXABGP_CONFIG, API_TOKEN)


def tmp_path(path: Path) -> Path:
    """The temporary file :func:`write_atomic` writes ``path``'s new contents to first."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: Path, data: bytes | str, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``: a temporary file (``mode`` from the first byte, the
    umask does not apply), fsync, rename, fsync of the directory. Readers see the old file or
    the new one, never a part. Raises OSError; a failed write leaves no temporary file."""
    raw = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def set_aside(path: Path, wall: float) -> Path | None:
    """Rename a bad file to ``<name>.corrupt-<unix time>`` (kept for the operator); the new
    name, or None when it could not be renamed."""
    aside = path.with_name(f"{path.name}.corrupt-{int(wall)}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.corrupt-{int(wall)}.{n}")
        n += 1
    try:
        path.rename(aside)
    except OSError:
        return None
    return aside


def why(e: OSError, directory: Path) -> str:
    """An OSError as the operator reads it: ``state_dir /var/lib/bgp-lb: no space left on
    device`` (the directory named, the errno's text in lower case)."""
    text = e.strerror or (errno.errorcode.get(e.errno, "") if e.errno else "") or str(e)
    return f"{directory}: {text[:1].lower()}{text[1:]}"


@dataclass
class FileHealth:
    """One state file as status and metrics show it: ``problem`` is None while it is fine
    (read, or written, as it should be); ``errors`` counts every bad read or failed write."""

    path: Path | None = None
    problem: str | None = None
    errors: int = 0

    def failed(self, problem: str) -> None:
        self.problem = problem
        self.errors += 1

    def fine(self) -> None:
        self.problem = None
