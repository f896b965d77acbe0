"""systemd notifications (``sd_notify``) with the standard library only.

``notify("READY=1")`` is a no-op returning False when the service is not run by systemd
(``NOTIFY_SOCKET`` unset). An ``@`` prefix denotes a Linux abstract socket.
"""

from __future__ import annotations

import os
import socket

SEND_TIMEOUT = 1.0  # seconds; a datagram send to a local socket should never block


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1\\nSTATUS=serving"``); True if it was sent."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT)
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """How often to send ``WATCHDOG=1`` (half the timeout), or None if not asked to."""
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None
