"""Probes: one attempt of one check against its resolved target.

A :class:`Prober` answers ``None`` (healthy) or a short reason (unhealthy) and honours the
check's ``timeout`` itself. :class:`RealProber` does the real I/O: http(s) through one shared
aiohttp session per source address (no keep-alive: every probe is a new connection), tcp
connect, ICMP echo (:mod:`.icmp`) and commands (:mod:`.command`).
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import ssl
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import aiohttp

from ..config import ExecCheck, HttpCheck, IcmpCheck, TcpCheck
from ..model import IPAddress
from . import httpprobe
from .command import Identity, run_command, unprivileged_identity
from .icmp import Pinger
from .poller import Poller
from .targets import ResolvedCheck, hostport

MAX_BODY = 1 << 20  # bytes of the body searched by ``body_match``
MAX_ERROR = 200  # characters of an error kept in a result
USER_AGENT = "bgp-lb-health"
NO_PORT = "no port to check (set the check's port or the service's ports)"


class Prober(Protocol):
    async def probe(self, target: ResolvedCheck) -> str | None:
        """None when healthy, else a short reason. Returns within ``target.timeout``."""
        ...


Cancel = Callable[[], None]
Report = httpprobe.Report


class Starter(Protocol):
    def __call__(self, report: Report) -> Cancel:
        """Start one probe: ``report`` gets None or a reason (an exception for a bug) once,
        within the check's timeout, unless the returned callable was called first (that
        stops the probe). It may report before returning."""
        ...

    def close(self) -> None:
        """Let go of what is held between probes (a watched connection)."""
        ...


@runtime_checkable
class CallbackProber(Protocol):
    """A prober that can also run some checks without a coroutine (the health runner then
    drives those from clock timers; see health/runner.py)."""

    def starter(self, target: ResolvedCheck, poke: Callable[[], None]) -> Starter | None:
        """None if ``target`` needs :meth:`Prober.probe`; else a :class:`Starter`, made once
        per target. ``poke()`` asks the runner for a probe now (``watch_connection``)."""
        ...


def os_reason(exc: OSError) -> str:
    """``Connection refused`` rather than asyncio's ``Connect call failed ('addr', port)``."""
    if exc.errno:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc) or type(exc).__name__


def describe(exc: BaseException) -> str:
    """A short, stable reason for a failed probe (no addresses of Python objects)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        text = f"TLS certificate: {exc.certificate_error}"
    elif isinstance(exc, aiohttp.ClientConnectorSSLError):
        text = f"TLS: {exc.os_error}"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        text = f"connect: {os_reason(exc.os_error)}"
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        text = "server disconnected"
    elif isinstance(exc, OSError):
        text = os_reason(exc)
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_ERROR]


def expected_status(check: HttpCheck, status: int) -> bool:
    """``expect_status`` empty means any 2xx."""
    if check.expect_status:
        return status in check.expect_status
    return 200 <= status < 300


def http_url(check: HttpCheck, address: IPAddress, port: int) -> str:
    path = check.path if check.path.startswith("/") else f"/{check.path}"
    return f"{check.type}://{hostport(address, port)}{path}"


async def read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most ``limit`` bytes of the body (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await response.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class RealProber:
    """Does the real I/O. Create inside the event loop's lifetime; ``close()`` when done."""

    def __init__(self, pinger: Pinger | None = None, identity: Identity | None = None) -> None:
        self._sessions: dict[IPAddress | None, aiohttp.ClientSession] = {}
        self._pinger = pinger or Pinger()
        self._identity = identity
        self._tls_verify = ssl.create_default_context()
        self._poller: Poller | None = None

    @property
    def poller(self) -> Poller:
        """The epoll set of the lean http and tcp probes (made on first use, in the loop)."""
        if self._poller is None:
            self._poller = Poller()
        return self._poller

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.close()
            self._poller = None
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    def starter(self, target: ResolvedCheck, poke: Callable[[], None]) -> Starter | None:
        """Plain http (status only) and tcp checks with an address and a port."""
        check, address, port = target.check, target.address, target.port
        if address is None or port is None:
            return None
        if isinstance(check, TcpCheck):
            payload, expected = None, None
        elif isinstance(check, HttpCheck) and check.type == "http" and check.body_match is None:
            host = check.host or hostport(address, port)
            payload = httpprobe.request(check.path, host, USER_AGENT)
            expected = functools.partial(expected_status, check)
        else:
            return None
        return httpprobe.Plan(
            self.poller,
            address,
            port,
            payload,
            expected,
            target.timeout,
            check.source_address,
            lost=poke if check.watch_connection else None,
        )

    async def _started(self, start: Starter) -> str | None:
        """A starter awaited: the same lean path for a caller that wants a coroutine."""
        verdict: asyncio.Future[str | Exception | None] = asyncio.get_running_loop().create_future()

        def report(value: str | Exception | None) -> None:
            if not verdict.done():
                verdict.set_result(value)

        cancel = start(report)
        try:
            result = await verdict
        finally:
            cancel()
        if isinstance(result, Exception):
            raise result
        return result

    async def probe(self, target: ResolvedCheck) -> str | None:
        start = self.starter(target, _no_poke)
        if start is not None:
            try:
                return await self._started(start)  # bounded by target.timeout itself
            finally:
                start.close()
        check = target.check
        if isinstance(check, HttpCheck | TcpCheck) and (target.address is None or not target.port):
            return NO_PORT
        try:
            async with asyncio.timeout(target.timeout):
                if isinstance(check, HttpCheck):
                    return await self._http(target, check)
                if isinstance(check, IcmpCheck):
                    # the pinger applies the timeout per address, reporting each reason
                    return await self._pinger.ping(
                        check.addresses,
                        target.timeout * 0.98,
                        check.source_address,
                        require_all=check.require == "all",
                    )
                if isinstance(check, ExecCheck):
                    if self._identity is None:  # looked up once: NSS may be slow
                        self._identity = unprivileged_identity()
                    return await run_command(
                        check.argv, check.env, target.timeout * 0.98, self._identity
                    )
        except TimeoutError:
            return f"timeout after {target.timeout:g}s"
        except (OSError, aiohttp.ClientError) as exc:
            return describe(exc)
        raise TypeError(f"unknown check type {type(check).__name__}")  # pragma: no cover

    def _session(self, source: IPAddress | None) -> aiohttp.ClientSession:
        session = self._sessions.get(source)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                force_close=True,  # no keep-alive: each probe opens its own connection
                limit=0,
                local_addr=(str(source), 0) if source is not None else None,
                use_dns_cache=False,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),  # the probe's own timeout rules
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": USER_AGENT},
                trust_env=False,
            )
            self._sessions[source] = session
        return session

    async def _http(self, target: ResolvedCheck, check: HttpCheck) -> str | None:
        if target.address is None or target.port is None:  # probe() answered NO_PORT
            raise ValueError("an http check without an address and port")
        tls: bool | ssl.SSLContext = True
        if check.type == "https":
            tls = self._tls_verify if check.verify_tls else False
        headers = {"Host": check.host} if check.host else {}
        server_hostname = check.host if check.type == "https" and check.host else None
        session = self._session(check.source_address)
        async with session.get(
            http_url(check, target.address, target.port),
            headers=headers,
            ssl=tls,
            server_hostname=server_hostname,
            allow_redirects=False,
        ) as response:
            if not expected_status(check, response.status):
                return f"HTTP status {response.status}"
            if check.body_match is None:
                return None
            body = await read_body(response, MAX_BODY)
        try:
            pattern = re.compile(check.body_match)
        except re.error as exc:
            return f"invalid body_match: {exc}"
        if pattern.search(body.decode("utf-8", errors="replace")) is None:
            return f"body does not match {check.body_match!r}"
        return None


def _no_poke() -> None:
    """A one-off probe has no schedule to move."""
