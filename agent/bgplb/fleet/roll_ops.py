"""The roll's thin I/O: the operator's commands, run as subprocesses with timeouts.

On the node (``--on-node``, e.g. ``ssh root@{node}``; empty: here): ``bgp-lb drain --all
--wait``, ``bgp-lb status --json``, ``bgp-lb undrain --all`` and, by default, ``systemctl stop
bgp-lb``. Here (``sh -c``, ``{node}`` replaced by the quoted node name, ``BGPLB_NODE`` in the
environment): ``--install`` (required), ``--stop`` (instead of the default) and
``--traffic-counter`` (its last line: ``{"sent": N, "failed": M}``, cumulative)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .roll import Counts, NodeView, Say, StepFailed, read_status

NODE = "{node}"
TAIL = 6  # lines of a failed command's output shown


@dataclass(frozen=True)
class Commands:
    on_node: str = ""  # prefix that runs an argv on the node ("" : here)
    bgp_lb: str = "bgp-lb"  # the CLI on the node
    node_config: str | None = None  # --config for the CLI on the node ({node} replaced)
    stop: str | None = None  # here; None: `systemctl stop bgp-lb` on the node
    install: str = ""  # here
    drain_timeout: float = 300.0  # drain --wait's own --timeout
    step_timeout: float = 900.0  # any other command
    status_timeout: float = 60.0


def _fill(template: str, node: str) -> str:
    return template.replace(NODE, shlex.quote(node))


def run_command(
    argv: Sequence[str],
    timeout: float,
    say: Say | None = None,
    env: dict[str, str] | None = None,
) -> tuple[int, list[str]]:
    """Run ``argv`` in its own process group (killed whole at the timeout); its output lines
    are passed to ``say`` as they come. Returns the exit status (124: timed out) and the
    lines."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    except OSError as e:
        raise StepFailed(f"cannot run {argv[0]}: {e.strerror or e}") from None
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill)
    timer.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            lines.append(line)
            if say is not None:
                say(f"    {line}")
        status = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:  # interrupted: leave nothing running
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    return (124 if expired.is_set() else status), lines


class CommandOps:
    """:class:`~.roll.NodeOps` by the operator's commands."""

    def __init__(
        self,
        commands: Commands,
        say: Say,
        runner: Callable[..., tuple[int, list[str]]] = run_command,
    ) -> None:
        self.c = commands
        self.say = say
        self.run = runner

    def _on_node(self, node: str, *argv: str) -> list[str]:
        prefix = shlex.split(_fill(self.c.on_node, node))
        return [*prefix, *argv]

    def _bgp_lb(self, node: str, *argv: str) -> list[str]:
        cli = shlex.split(self.c.bgp_lb)
        config = self.c.node_config
        extra = ["--config", config.replace(NODE, node)] if config else []
        return self._on_node(node, *cli, *argv, *extra)

    def _check(
        self, what: str, argv: list[str], timeout: float, show: bool, env: dict[str, str] | None
    ) -> list[str]:
        status, lines = self.run(argv, timeout, self.say if show else None, env)
        if status == 124:
            raise StepFailed(f"{what}: no result within {timeout:g} s")
        if status != 0:
            tail = " | ".join(lines[-TAIL:]) or "(no output)"
            raise StepFailed(f"{what}: exit {status}: {tail}")
        return lines

    def _here(self, what: str, template: str, node: str) -> None:
        env = {**os.environ, "BGPLB_NODE": node}
        argv = ["sh", "-c", _fill(template, node)]
        self._check(what, argv, self.c.step_timeout, True, env)

    def drain(self, node: str) -> None:
        argv = self._bgp_lb(
            node, "drain", "--all", "--wait", "--timeout", f"{self.c.drain_timeout:g}"
        )
        # its own timeout first: drain --wait says what the rate still was
        self._check("drain --all --wait", argv, self.c.drain_timeout + 60, True, None)

    def stop(self, node: str) -> None:
        if self.c.stop is not None:
            self._here("stop", self.c.stop, node)
            return
        argv = self._on_node(node, "systemctl", "stop", "bgp-lb")
        self._check("stop", argv, self.c.step_timeout, True, None)

    def install(self, node: str) -> None:
        self._here("install", self.c.install, node)

    def undrain(self, node: str) -> None:
        self._check("undrain --all", self._bgp_lb(node, "undrain", "--all"), 120, True, None)

    def status(self, node: str) -> NodeView:
        lines = self._check(
            "status", self._bgp_lb(node, "status", "--json"), self.c.status_timeout, False, None
        )
        try:
            data = json.loads("\n".join(lines))
        except ValueError:
            raise StepFailed(f"status: not JSON: {' | '.join(lines[-TAIL:])}") from None
        return read_status(data)


class CommandCounter:
    """:class:`~.roll.TrafficCounter` by a command printing ``{"sent": N, "failed": M}``."""

    def __init__(
        self,
        command: str,
        timeout: float = 60.0,
        runner: Callable[..., tuple[int, list[str]]] = run_command,
    ) -> None:
        self.command = command
        self.timeout = timeout
        self.run = runner

    def read(self) -> Counts:
        status, lines = self.run(["sh", "-c", self.command], self.timeout, None, None)
        if status != 0:
            raise StepFailed(f"exit {status}: {' | '.join(lines[-TAIL:]) or '(no output)'}")
        last = next((line for line in reversed(lines) if line.strip()), "")
        try:
            data = json.loads(last)
            sent, failed = data["sent"], data["failed"]
        except (ValueError, TypeError, KeyError):
            raise StepFailed(
                f'want {{"sent": N, "failed": M}} as its last line, got {last!r}'
            ) from None
        if not (isinstance(sent, int) and isinstance(failed, int)) or min(sent, failed) < 0:
            raise StepFailed(f"sent/failed must be counts: {last!r}")
        return Counts(sent, failed)
