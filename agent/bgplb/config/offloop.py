"""Loading a config without blocking the event loop: the parse runs in a child process.

Reading, decoding (pure-Python YAML) and validating (pydantic) a 1,000-service file is seconds
of CPU on a busy node, and a thread does not help: it holds the GIL, and pydantic's validation
is one long call that never lets go of it (bench/NOTES.md: the loop lag measured both ways).
So :func:`load_config_async` runs :func:`~bgplb.config.loader.load` in ``python -m
bgplb.config.offloop PATH``, which answers with a pickle of the result (the config, or the
issues), and unpickles it in a worker thread (pure-Python ``__setstate__`` calls: the loop gets
the GIL back at every switch interval). Same result and same errors as ``load_config``.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import sys
from pathlib import Path

from .issues import ConfigError, ConfigIssue
from .loader import load
from .schema import Config

TIMEOUT = 120.0  # seconds for the child to parse the file (~10 s at 1,000 services, loaded)
_OK, _ERROR = "ok", "error"


async def load_config_async(path: str | Path, limit: float = TIMEOUT) -> Config:
    """``load_config(path)`` in a child process; raises :class:`ConfigError` like it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        str(path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(limit):
            out, err = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise ConfigError([ConfigIssue(str(path), f"not parsed within {limit:g} s")]) from None
    except BaseException:  # cancelled: do not leave the child behind
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    if proc.returncode != 0 or not out:
        why = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise ConfigError([ConfigIssue(str(path), f"the parser process failed: {why[0]}")])
    kind, value = await asyncio.to_thread(pickle.loads, out)
    if kind == _ERROR:
        raise ConfigError(value)
    if not isinstance(value, Config):  # pragma: no cover - our own child wrote it
        raise ConfigError([ConfigIssue(str(path), "the parser process answered nonsense")])
    return value


def main(argv: list[str]) -> int:
    """The child: parse ``argv[0]`` and write ``pickle((kind, config | issues))`` to stdout."""
    try:
        result: tuple[str, object] = (_OK, load(argv[0]).config)
    except ConfigError as e:
        result = (_ERROR, e.errors)
    sys.stdout.buffer.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
