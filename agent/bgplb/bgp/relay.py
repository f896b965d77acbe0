"""ExaBGP's API process: relays its stdin/stdout to the agent's unix socket.

ExaBGP talks to an API "process" over that process's stdin (events, acks) and stdout
(commands). The agent is not ExaBGP's child, so ExaBGP runs this relay
(``python -m bgplb.bgp.relay SOCKET``), which connects to the agent, introduces itself with
``hello <ExaBGP pid>`` and then copies bytes both ways, one thread per direction (so neither
direction can block the other). It exits as soon as either side closes; it also dies with
ExaBGP (PR_SET_PDEATHSIG), so it never outlives it. Standard library only, fast to start.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import threading

PR_SET_PDEATHSIG = 1
CONNECT_TIMEOUT = 5.0


def _die_with_parent() -> None:
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _copy_in(sock: socket.socket) -> None:
    """ExaBGP -> agent (our stdin -> the socket)."""
    while True:
        data = os.read(0, 65536)
        if not data:
            return
        sock.sendall(data)


def _copy_out(sock: socket.socket) -> None:
    """Agent -> ExaBGP (the socket -> our stdout)."""
    while True:
        data = sock.recv(65536)
        if not data:
            return
        view = memoryview(data)
        while view:
            n = os.write(1, view)
            view = view[n:]


def _run(fn: object, sock: socket.socket, done: threading.Event) -> None:
    try:
        fn(sock)  # type: ignore[operator]
    except OSError:
        pass
    finally:
        done.set()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m bgplb.bgp.relay SOCKET\n")
        return 2
    _die_with_parent()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        sock.connect(argv[1])
        sock.sendall(f"hello {os.getppid()}\n".encode())
    except OSError as e:
        sys.stderr.write(f"bgplb relay: cannot reach the agent at {argv[1]}: {e}\n")
        return 1
    sock.settimeout(None)
    done = threading.Event()
    for fn in (_copy_in, _copy_out):
        threading.Thread(target=_run, args=(fn, sock, done), daemon=True).start()
    done.wait()
    # One side is gone: exit at once (closing our stdout tells ExaBGP; closing the socket
    # tells the agent). os._exit skips joining the other, possibly blocked, thread.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
