#!/usr/bin/env python3
"""The lab's local HTTP backend: answers every GET with the node's name.

Binds the node's own addresses (never loopback: IPVS masquerading refuses to DNAT to
loopback). ``IP_FREEBIND`` lets it start before the addresses are configured, which is the
order in a containerlab container. HTTP/1.1 with keep-alive, so long-lived client
connections can be tested as well. Standard library only.

``--echo-port`` adds a byte echo (the pool lab's long-lived connections): on accept it sends
the node's name and a newline, then returns every byte it receives. One thread, ``selectors``:
a hundred connections each echoing every 100 ms cost little CPU.

    backend.py --name lb1 --port 8080 10.1.1.2 fd00:1:1::2
    backend.py --name s1 --port 80 --echo-port 7 10.50.0.21 10.99.0.1   (a DR real server)
"""

from __future__ import annotations

import argparse
import http.server
import ipaddress
import selectors
import signal
import socket
import sys
import threading
from types import FrameType

IP_FREEBIND = 15
IPV6_FREEBIND = 78


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    node_name = "unknown"

    def do_GET(self) -> None:
        body = f"{self.node_name}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return  # one line per request would flood the lab logs


def _server(address: str, port: int) -> http.server.ThreadingHTTPServer:
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET

    class Server(http.server.ThreadingHTTPServer):
        address_family = family
        daemon_threads = True
        allow_reuse_address = True

        def server_bind(self) -> None:
            if family == socket.AF_INET6:
                self.socket.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
            else:
                self.socket.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            super().server_bind()

    return Server((address, port), _Handler)


def _listener(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
    sock.bind((address, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


def _echo(name: str, listeners: list[socket.socket], stop: threading.Event) -> None:
    """Greet with the name, then echo every byte; a reset or EOF closes that connection."""
    sel = selectors.DefaultSelector()
    for listener in listeners:
        sel.register(listener, selectors.EVENT_READ, None)
    greeting = f"{name}\n".encode()
    while not stop.is_set():
        for key, _ in sel.select(timeout=0.5):
            sock = key.fileobj
            if not isinstance(sock, socket.socket):
                continue
            if key.data is None:  # a listener
                try:
                    conn, _ = sock.accept()
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conn.sendall(greeting)
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ, "conn")
                except OSError:
                    continue
                continue
            try:
                data = sock.recv(4096)
                if data:
                    sock.sendall(data)  # a few bytes: never blocks in practice
                    continue
            except OSError:
                pass
            sel.unregister(sock)
            sock.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="the text every response carries")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--echo-port", type=int, help="also run the byte echo on this port")
    p.add_argument("addresses", nargs="+", help="the node's own addresses to listen on")
    args = p.parse_args()
    _Handler.node_name = args.name
    servers = [_server(a, args.port) for a in args.addresses]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    stop = threading.Event()
    if args.echo_port:
        listeners = [_listener(a, args.echo_port) for a in args.addresses]
        threads.append(
            threading.Thread(target=_echo, args=(args.name, listeners, stop), daemon=True)
        )
    for t in threads:
        t.start()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(
        f"backend {args.name} listening on port {args.port}: {' '.join(args.addresses)}", flush=True
    )
    stop.wait()
    for s in servers:
        s.shutdown()
        s.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
