"""Writing a render: all or nothing. The files go into a new directory next to ``OUT`` (mode
0700, every file 0600: seeds carry the API token and MD5 keys), which is then renamed to
``OUT``. An existing non-empty ``OUT`` is replaced only with ``force`` (moved aside, the new
one renamed in, the old one removed; moved back when the rename fails)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

FILE_MODE = 0o600
DIR_MODE = 0o700


class OutputError(Exception):
    pass


def write_tree(out: Path, files: Mapping[PurePosixPath, str], force: bool = False) -> None:
    out = Path(os.path.abspath(out))
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputError(f"{out}: not empty (--force replaces it)")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=parent))
    except OSError as e:
        raise OutputError(f"{parent}: {e.strerror}") from None
    try:
        for rel, text in sorted(files.items()):
            path = tmp.joinpath(*rel.parts)
            path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
            d.chmod(DIR_MODE)  # mkdtemp and mkdir under a umask: make it exact
        _swap(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"{out}: {e.strerror or e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap(new: Path, out: Path) -> None:
    if not out.exists():
        new.rename(out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        new.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old.rmdir()
    out.rename(old)
    try:
        new.rename(out)
    except OSError:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)
