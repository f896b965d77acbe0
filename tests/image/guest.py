"""One appliance VM under qemu (TCG) on a tap device inside a test namespace, plus SSH into it.

The disk is booted by itself, with ``snapshot=on`` so the image file is never written: by BIOS
(SeaBIOS -> extlinux on the root) or by UEFI (OVMF -> shim -> GRUB on the ESP), see ``firmware``.
The serial console goes to a log file the tests read.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.netns import alive

GUEST_MAC = "52:54:00:00:00:10"
OVMF = Path("/usr/share/OVMF")  # Debian's ovmf package
SLOW_SSH_SECONDS = 5.0


def firmware_args(firmware: str, vars_copy: Path) -> list[str]:
    """qemu arguments for ``firmware``: ``bios`` (SeaBIOS, qemu's default), ``uefi`` (OVMF with a
    writable copy of its empty variable store) or ``uefi-secureboot`` (OVMF's Secure Boot build
    with Microsoft's keys enrolled: q35 with SMM, as that build requires)."""
    if firmware == "bios":
        return []
    code, store, machine = {
        "uefi": ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd", []),
        "uefi-secureboot": (
            "OVMF_CODE_4M.secboot.fd",
            "OVMF_VARS_4M.ms.fd",
            ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"],
        ),
    }[firmware]
    shutil.copyfile(OVMF / store, vars_copy)
    return [
        *machine,
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF / code}",
        "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
    ]  # fmt: skip


@dataclass
class Guest:
    ns: str
    disk: Path
    console: Path
    config_disk: Path | None = None
    tap: str = "tap0"
    memory_mb: int = 1024
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    extra_args: list[str] = field(default_factory=list)
    firmware: str = "bios"  # bios | uefi | uefi-secureboot (firmware_args)

    def start(self) -> None:
        argv = ["ip", "netns", "exec", self.ns, "qemu-system-x86_64", "-accel", "tcg"]
        argv += ["-smp", "2", "-m", str(self.memory_mb), "-nographic", "-vga", "none"]
        argv += firmware_args(self.firmware, self.console.with_suffix(".vars.fd"))
        argv += ["-no-reboot", "-drive", f"file={self.disk},if=virtio,snapshot=on"]
        if self.config_disk is not None:
            argv += ["-drive", f"file={self.config_disk},if=virtio,format=raw,readonly=on"]
        argv += ["-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no"]
        argv += ["-device", f"virtio-net-pci,netdev=n0,mac={GUEST_MAC}", *self.extra_args]
        self.console.parent.mkdir(parents=True, exist_ok=True)
        with self.console.open("wb") as out:
            # `ip netns exec` execs qemu, so this pid is qemu's.
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        self.started_at = time.monotonic()

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def running(self) -> bool:
        return self.proc is not None and alive(self.proc.pid) and self.proc.poll() is None

    def console_text(self) -> str:
        try:
            raw = self.console.read_bytes()
        except FileNotFoundError:
            return ""
        return re.sub(r"\x1b\[[0-9;]*m", "", raw.decode(errors="replace"))

    def wait_console(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait for a regex on the console; returns the match. Fails with the console tail."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.M)
        while True:
            m = rx.search(self.console_text())
            if m:
                return m
            if not self.running():
                raise AssertionError(f"qemu exited; console tail:\n{self.console_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{pattern!r} not on the console within {timeout}s; tail:\n"
                    f"{self.console_text()[-3000:]}"
                )
            time.sleep(0.5)


@dataclass
class Ssh:
    """SSH to the guest from inside the namespace, over one multiplexed connection.

    The master runs as a child process with its output on /dev/null (a ControlPersist master
    forked by a captured ``ssh`` would keep the capture pipes open forever).
    """

    ns: str
    address: str
    key: Path
    control_dir: Path
    master: subprocess.Popen[bytes] | None = None

    def _base(self, *options: str) -> list[str]:
        return [
            "ip", "netns", "exec", self.ns, "ssh", "-i", str(self.key),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "LogLevel=ERROR",
            "-o", f"ControlPath={self.control_dir}/ssh-%C", *options, f"root@{self.address}",
        ]  # fmt: skip

    def run(self, command: str, timeout: float = 60.0, check: bool = True) -> str:
        t0 = time.monotonic()
        res = subprocess.run(
            [*self._base("-o", "ControlMaster=no"), command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        took = time.monotonic() - t0
        if took >= SLOW_SSH_SECONDS:  # where a boot's minutes go (TCG): printed, not asserted
            print(f"  (ssh {command[:60]!r}: {took:.1f} s)")
        if check and res.returncode != 0:
            raise AssertionError(f"ssh {command!r} -> {res.returncode}: {res.stderr}{res.stdout}")
        return res.stdout

    def _check_master(self) -> bool:
        res = subprocess.run(
            [*self._base("-O", "check")], capture_output=True, timeout=30, check=False
        )
        return res.returncode == 0

    def wait_ready(self, timeout: float) -> None:
        """Wait until a master connection is up (sshd started, key accepted)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.master is None or self.master.poll() is not None:
                self.master = subprocess.Popen(
                    [*self._base("-M", "-N", "-o", "ControlMaster=yes")],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            for _ in range(20):
                if self._check_master():
                    return
                if self.master.poll() is not None:
                    break
                time.sleep(1)
            time.sleep(2)
        raise AssertionError(f"no SSH to {self.address} within {timeout}s")

    def close(self) -> None:
        if self.master is not None:
            subprocess.run(
                [*self._base("-O", "exit")], capture_output=True, timeout=10, check=False
            )
            if self.master.poll() is None:
                self.master.kill()
            self.master.wait(timeout=10)
            self.master = None
