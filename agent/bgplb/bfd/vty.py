"""One FRR daemon's vty socket, spoken directly: what ``vtysh`` does, without a vtysh process.

vtysh connects to ``<dir>/<daemon>.vty``, sends each command line followed by a NUL, and reads
the daemon's output up to three NULs and one byte holding the command's return code (0 is
success; 2 an unknown command). A connection starts in view mode, so ``enable`` comes first,
as vtysh sends it. Starting vtysh costs ~30-60 ms of CPU on a host and about a second in the
lab's TCG guest, where three agents polling bfdd took a third of the machine; this is one
connect and a few hundred microseconds of the daemon's time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

END = b"\0\0\0"  # then one byte: the return code
MAX_ANSWER = 16 * 1024 * 1024  # a daemon's answer larger than this is not one we asked for


class VtyError(RuntimeError):
    """The daemon refused a command, hung up mid-answer, or answered nonsense."""


async def run_commands(socket: Path, commands: Sequence[str], seconds: float) -> str:
    """``enable`` then ``commands`` on ``socket``, in order, on one connection; their output
    joined. The first command that does not return 0 raises VtyError (the later ones are not
    sent); the whole exchange is bounded by ``seconds`` (TimeoutError)."""
    return await asyncio.wait_for(_exchange(socket, commands), seconds)


async def _exchange(socket: Path, commands: Sequence[str]) -> str:
    reader, writer = await asyncio.open_unix_connection(str(socket))
    try:
        out: list[str] = []
        for command in ("enable", *commands):
            writer.write(command.encode() + b"\0")
            await writer.drain()
            text, code = await read_answer(reader)
            if code != 0:
                detail = text.strip() or "no output"
                raise VtyError(f"{socket.name}: {command!r} returned {code}: {detail}")
            out.append(text)
        return "".join(out)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def read_answer(reader: asyncio.StreamReader) -> tuple[str, int]:
    """One command's output and return code."""
    buf = bytearray()
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            raise VtyError("the daemon closed the vty connection mid-answer")
        buf += chunk
        if len(buf) >= 4 and buf[-4:-1] == END:
            return buf[:-4].decode(errors="replace"), buf[-1]
        if len(buf) > MAX_ANSWER:
            raise VtyError(f"vty answer over {MAX_ANSWER} bytes")
