"""bgplb.bfd.vty against a unix-socket daemon speaking FRR's vtysh protocol (the real bfdd is
in tests/bgp/test_bfd.py): NUL-terminated commands in, output + three NULs + a return code out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bgplb.bfd.vty import VtyError, run_commands

Reply = Callable[[str, str], tuple[bytes, int] | None]  # (node, command) -> (output, code)


def bfdd_like(node: str, command: str) -> tuple[bytes, int] | None:
    """Like bfdd: show commands need enable, unknown ones return 2."""
    if command == "enable":
        return b"", 0
    if command == "show bfd peers json" and node == "enable":
        return b'[{"peer":"10.0.1.1","status":"up"}]\n', 0
    if command == "hang up":
        return None
    return f"% [BFD] Unknown command: {command}\n".encode(), 2


class Daemon:
    def __init__(self, path: Path, reply: Reply, chunk: int = 65536) -> None:
        self.path = path
        self.reply = reply
        self.chunk = chunk  # answers written in pieces this big (a slow daemon)
        self.seen: list[str] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        node = "view"
        try:
            while True:
                raw = await reader.readuntil(b"\0")
                command = raw[:-1].decode()
                self.seen.append(command)
                answer = self.reply(node, command)
                if answer is None:
                    return
                if command == "enable":
                    node = "enable"
                data = answer[0] + b"\0\0\0" + bytes([answer[1]])
                for i in range(0, len(data), self.chunk):
                    writer.write(data[i : i + self.chunk])
                    await writer.drain()
                    await asyncio.sleep(0)
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    d = Daemon(tmp_path / "bfdd.vty", bfdd_like)
    server = await asyncio.start_unix_server(d.serve, path=str(d.path))
    async with server:
        yield d


async def test_enable_comes_first_and_the_output_is_returned(daemon: Daemon) -> None:
    out = await run_commands(daemon.path, ["show bfd peers json"], 5.0)
    assert out == '[{"peer":"10.0.1.1","status":"up"}]\n'
    assert daemon.seen == ["enable", "show bfd peers json"]


async def test_an_answer_in_one_byte_pieces_is_read_whole(daemon: Daemon) -> None:
    daemon.chunk = 1  # the terminator split over reads, byte by byte
    out = await run_commands(daemon.path, ["show bfd peers json"], 5.0)
    assert out.startswith('[{"peer"')


async def test_a_refused_command_raises_with_its_code_and_stops_there(daemon: Daemon) -> None:
    with pytest.raises(VtyError, match=r"'bogus' returned 2: % \[BFD\] Unknown command: bogus"):
        await run_commands(daemon.path, ["bogus", "show bfd peers json"], 5.0)
    assert daemon.seen == ["enable", "bogus"]  # the rest was not sent


async def test_a_hang_up_mid_answer_raises(daemon: Daemon) -> None:
    with pytest.raises(VtyError, match="closed the vty connection"):
        await run_commands(daemon.path, ["hang up"], 5.0)


async def test_a_missing_socket_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await run_commands(tmp_path / "nothing.vty", ["show bfd peers json"], 5.0)


async def test_a_daemon_that_never_answers_times_out(tmp_path: Path) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads, never answers
        writer.close()

    path = tmp_path / "stuck.vty"
    server = await asyncio.start_unix_server(silent, path=str(path))
    async with server:
        with pytest.raises(TimeoutError):
            await run_commands(path, ["show bfd peers json"], 0.2)
