"""The API channel to the running ExaBGP: its relay's connection, pipelined writes, acks
matched in order, the ack deadline and the heartbeat.

The relay (relay.py) connects to the speaker's unix server and says ``hello <ExaBGP pid>``;
only the relay of the ExaBGP the supervisor started is accepted. Losing the channel, a write
that fails, or a missed deadline all end the same way: ExaBGP is restarted (without the relay
we can neither steer nor observe it, and a respawned relay gets no state replay).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterable

from ..clock import Clock
from . import events
from .base import SpeakerError
from .channel import AckDeadline, AckQueue, Kind, Pending
from .supervisor import Supervisor

log = logging.getLogger("bgplb.bgp")
# Opt-in timing hook for bench/ (BGPLB_TIMING_LOG=1): one debug line per API write, emitted
# even when the agent logs at info, so benchmarks can time check result -> API command.
timing_log = logging.getLogger("bgplb.timing")
if os.environ.get("BGPLB_TIMING_LOG"):
    timing_log.setLevel(logging.DEBUG)


class ApiLink:
    def __init__(
        self,
        clock: Clock,
        supervisor: Supervisor,
        *,
        io_timeout: float,
        deadline: AckDeadline,
        heartbeat: float,
        on_connect: Callable[[], None],
        on_ack: Callable[[Pending, bool], None],
        on_state: Callable[[events.StateEvent], None],
    ) -> None:
        self._clock = clock
        self._supervisor = supervisor
        self._io_timeout = io_timeout
        self._deadline = deadline
        self._heartbeat = heartbeat
        self._on_connect = on_connect
        self._on_ack = on_ack
        self._on_state = on_state
        self.acks = AckQueue(clock.now)
        self.writer: asyncio.StreamWriter | None = None
        self.stopping = False
        self.commands_sent = 0  # route and reload commands (heartbeats are counted apart)
        self.heartbeats_sent = 0
        self.ack_timeouts = 0

    @property
    def connected(self) -> bool:
        return self.writer is not None

    def write(self, items: Iterable[Pending]) -> list[asyncio.Future[bool]]:
        """Queue commands on the relay without waiting (pipelining); acks are counted later."""
        items = list(items)
        if self.writer is None or not items:
            return []
        self.writer.write("".join(i.text + "\n" for i in items).encode())
        self.acks.extend(items)
        self.commands_sent += sum(1 for i in items if i.kind is not Kind.HEARTBEAT)
        if timing_log.isEnabledFor(logging.DEBUG):
            timing_log.debug(
                "exabgp api: %d command(s) written",
                len(items),
                extra={"event": "speaker_commands_written", "first": items[0].text[:200]},
            )
        return [i.reply for i in items if i.reply is not None]

    async def drain(self) -> None:
        writer = self.writer
        if writer is None:
            return
        try:
            await asyncio.wait_for(writer.drain(), self._io_timeout)
        except (TimeoutError, ConnectionError) as e:
            self.lost(f"write to exabgp failed: {e!r}", "relay_lost")
            raise SpeakerError(f"exabgp API write failed: {e!r}") from None

    async def drain_quietly(self) -> None:
        with contextlib.suppress(SpeakerError):
            await self.drain()

    def reset(self) -> None:
        """ExaBGP is gone: nothing will be answered."""
        self.writer = None
        self.acks.forget()

    def lost(self, why: str, reason: str, *, kill: bool = False) -> None:
        """The channel is unusable or ExaBGP cannot be trusted any more: restart it."""
        self.reset()
        if not self.stopping:
            self._supervisor.restart(why, reason, kill=kill)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The unix server's handler: one relay connection, read until it closes."""
        proc = self._supervisor.proc
        try:
            hello = await asyncio.wait_for(reader.readline(), self._io_timeout)
        except (TimeoutError, OSError, ValueError):
            hello = b""
        if proc is None or hello.split() != [b"hello", str(proc.pid).encode()] or self.writer:
            log.warning("exabgp relay: unexpected connection %r, closed", hello[:40])
            writer.close()
            return
        self.writer = writer
        self._supervisor.connected()
        self.acks.forget()
        log.info("exabgp api connected (pid %s)", proc.pid)
        self._on_connect()
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                self._on_line(line.decode("utf-8", errors="replace"))
        except (OSError, ValueError) as e:
            log.warning("exabgp relay read failed: %r", e)
        finally:
            if self.writer is writer:
                self.lost("the api relay closed", "relay_lost")
            writer.close()

    def _on_line(self, line: str) -> None:
        event = events.parse_line(line)
        if isinstance(event, events.Ack):
            item = self.acks.ack(event.ok)
            if item is None:
                log.warning("exabgp: unexpected ack %s", "done" if event.ok else "error")
            else:
                self._on_ack(item, event.ok)
        elif isinstance(event, events.StateEvent):
            self._on_state(event)
        elif event.text:
            log.debug("exabgp: %s", event.text[:500])

    async def watch(self) -> None:
        """The ack deadline and the heartbeat: a wedged or stopped ExaBGP is killed and
        replaced, whether commands were waiting or the channel was idle."""
        tick = max(0.05, min(0.5, self._deadline.base / 4, self._heartbeat / 2))
        while not self.stopping:
            await self._clock.sleep(tick)
            if self.writer is None or self.stopping:
                continue
            late = self.acks.overdue(self._deadline)
            if late > 0:
                self.ack_timeouts += 1
                n = len(self.acks)
                waited = self._deadline.allowed(n) + late
                self.lost(
                    f"no ack for {waited:.1f}s, {n} command(s) outstanding",
                    "ack_timeout",
                    kill=True,
                )
            elif not self.acks and self._clock.now() - self.acks.progress >= self._heartbeat:
                self.heartbeats_sent += 1
                self.write([Pending("version", kind=Kind.HEARTBEAT)])
                await self.drain_quietly()
