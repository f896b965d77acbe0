#!/usr/bin/env python3
"""The lab's local HTTP backend: answers every GET with the node's name.

Binds the node's own addresses (never loopback: IPVS masquerading refuses to DNAT to
loopback). ``IP_FREEBIND`` lets it start before the addresses are configured, which is the
order in a containerlab container. HTTP/1.1 with keep-alive, so long-lived client
connections can be tested as well. Standard library only.

    backend.py --name lb1 --port 8080 10.1.1.2 fd00:1:1::2
"""

from __future__ import annotations

import argparse
import http.server
import ipaddress
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="the text every response carries")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("addresses", nargs="+", help="the node's own addresses to listen on")
    args = p.parse_args()
    _Handler.node_name = args.name
    servers = [_server(a, args.port) for a in args.addresses]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    stop = threading.Event()

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
