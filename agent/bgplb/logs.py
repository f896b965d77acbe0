"""Logging: JSON lines (default) or text, structured events, secret redaction, rate limiting.

``log_event(logger, "check_down", service="web", check="http")`` logs a record whose
message is the event name and whose fields travel in ``extra`` (JSON keys; ``key=value``
in text). Secrets registered with :func:`register_secret` are replaced by ``***`` in every
record that passes a handler installed by :func:`setup_logging` (and in its final output).
A request aiohttp cannot parse is logged as one ``http_bad_request`` line, not a traceback,
at most ten a second (:class:`BadRequestFilter`).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterable
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter

from .clock import Clock, SystemClock, Timer

REDACTED = "***"
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


# --------------------------------------------------------------------------- secrets


def register_secret(secret: str) -> None:
    """Never log this string (an API token, an MD5 password); empty strings are ignored."""
    secret = secret.strip()
    if secret:
        with _secrets_lock:
            _secrets.add(secret)


def clear_secrets() -> None:
    """Forget every registered secret (tests; a reload re-registers the current ones)."""
    with _secrets_lock:
        _secrets.clear()


def redact(text: str) -> str:
    """``text`` with every registered secret (also in its JSON-escaped form) replaced."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
        escaped = json.dumps(secret)[1:-1]
        if escaped != secret and escaped in text:
            text = text.replace(escaped, REDACTED)
    return text


def _redact_value(value: object) -> object:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    text = str(value)
    cleaned = redact(text)
    return value if cleaned == text else cleaned


class RedactingFilter(logging.Filter):
    """Rewrites a record in place so that no registered secret survives in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # bad %-args: keep the template only
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        for attr, value in list(record.__dict__.items()):
            if attr not in _STANDARD_ATTRS:
                record.__dict__[attr] = _redact_value(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


BAD_REQUEST_LINES_PER_SECOND = 10  # http_bad_request lines written per second at most


class BadRequestFilter(logging.Filter):
    """On aiohttp's server logger: a request it cannot parse (garbage, a TLS client on the
    plain port, a bad request line, a NUL in a header) is logged by aiohttp with a traceback
    at ERROR. Rewrite it as one ``http_bad_request`` event at WARNING (aiohttp's DEBUG for
    non-HTTP bytes stays DEBUG) with the client, the answer's status and the parser's
    reason on one line. Any other exception keeps its traceback (a bug of ours).

    Every one is counted (:attr:`seen`, ``bgplb_http_bad_requests_total``), but at most
    ``per_second`` lines are written per second: a client sending garbage at line rate would
    flood the log. The rest of that second is dropped, then one
    ``http_bad_requests_suppressed`` WARNING line says how many (from a timer on the running
    loop, or with the next bad request). ``floor``: records below it are dropped here (the
    logger itself is left at DEBUG so that aiohttp's DEBUG ones are counted too)."""

    def __init__(self, clock: Clock, per_second: int = BAD_REQUEST_LINES_PER_SECOND) -> None:
        super().__init__()
        self.clock = clock
        self.per_second = per_second
        self.floor = logging.NOTSET
        self.seen = 0  # every bad request, logged or not
        self._lock = threading.Lock()
        self._window = float("-inf")  # when the current one-second window began
        self._lines = 0  # lines let through in it
        self._suppressed = 0  # lines dropped since the last summary
        self._timer: Timer | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        from aiohttp.http_exceptions import HttpProcessingError  # only when needed

        if not isinstance(exc, HttpProcessingError):
            return record.levelno >= self.floor
        self._rewrite(record, exc)
        with self._lock:
            self.seen += 1
            if record.levelno < self.floor:
                return False
            now = self.clock.now()
            flush = now - self._window >= 1.0 and self._suppressed > 0
            if now - self._window >= 1.0:
                self._window, self._lines = now, 0
            allowed = self._lines < self.per_second
            if allowed:
                self._lines += 1
            else:
                self._suppressed += 1
                self._arm_timer()
        if flush:
            self.flush()
        return allowed

    def _arm_timer(self) -> None:
        if self._timer is not None:
            return
        try:
            self._timer = self.clock.call_at(self._window + 1.0, self.flush)
        except RuntimeError:  # no running loop: the next bad request flushes
            self._timer = None

    def flush(self) -> None:
        """Write the summary line of the lines dropped so far (if any)."""
        with self._lock:
            suppressed, self._suppressed = self._suppressed, 0
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if suppressed:
            log_event(
                logging.getLogger("aiohttp.server"),
                "http_bad_requests_suppressed",
                logging.WARNING,
                suppressed=suppressed,
                per_second=self.per_second,
            )

    @staticmethod
    def _rewrite(record: logging.LogRecord, exc: Any) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        reason = " ".join((exc.message or type(exc).__name__).split())
        reason = "".join(c if c.isprintable() else repr(c)[1:-1] for c in reason)
        record.msg, record.args = "http_bad_request", None
        record.exc_info, record.exc_text = None, None
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.__dict__.update(
            event="http_bad_request",
            remote=str(args[0]) if args else "",
            status=exc.code or 400,
            error=reason[:MAX_REASON],
        )


def bad_requests_seen() -> int:
    """Requests aiohttp could not parse since :func:`setup_logging` (all of them, logged or
    not): ``bgplb_http_bad_requests_total``."""
    server = logging.getLogger("aiohttp.server")
    return sum(f.seen for f in server.filters if isinstance(f, BadRequestFilter))


MAX_REASON = 300  # characters of a parser's reason kept in an http_bad_request line


# --------------------------------------------------------------------------- formatters


class RedactingJsonFormatter(JsonFormatter):
    """JSON lines; the final line is redacted once more (belt and braces)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...`` for terminals."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD_ATTRS and k != "event" and not k.startswith("_")
        ]
        if fields:
            first, newline, rest = line.partition("\n")
            line = first + " " + " ".join(fields) + newline + rest
        return redact(line)


def json_formatter() -> JsonFormatter:
    return RedactingJsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,
    )


def setup_logging(fmt: Literal["json", "text"], level: str) -> None:
    """Route every log record through one stderr handler with redaction; idempotent."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_bgplb", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler._bgplb = True  # type: ignore[attr-defined]
    handler.setFormatter(json_formatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    # One line per API request only when debugging.
    access = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    logging.getLogger("aiohttp.access").setLevel(access)
    # Its records below the root's level are dropped by the filter, after it counted the bad
    # requests among them (aiohttp logs a TLS client on the plain port at DEBUG).
    server = logging.getLogger("aiohttp.server")
    bad = next((f for f in server.filters if isinstance(f, BadRequestFilter)), None)
    if bad is None:
        bad = BadRequestFilter(SystemClock())
        server.addFilter(bad)
    bad.floor = root.level
    server.setLevel(logging.DEBUG)
    # pyroute2 logs every netlink message at debug: thousands of lines a second, none ours.
    logging.getLogger("pyroute2").setLevel(max(root.level, logging.INFO))


# --------------------------------------------------------------------------- events


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` with structured fields (service, check, peer, vip, reason, ...).

    Field names that clash with LogRecord attributes get a trailing ``_``."""
    extra: dict[str, object] = {"event": event}
    for key, value in fields.items():
        name = f"{key}_" if key in _STANDARD_ATTRS else key
        extra[name] = value if isinstance(value, int | float | bool | None) else str(value)
    logger.log(level, event, extra=extra)


class RateLimiter:
    """Lets one message per key through every ``period`` seconds; counts the rest."""

    def __init__(self, clock: Clock, period: float) -> None:
        self._clock = clock
        self._period = period
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str) -> bool:
        now = self._clock.now()
        last = self._last.get(key)
        if last is not None and now - last < self._period:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        return True

    def take_suppressed(self, key: str) -> int:
        """How many messages for ``key`` were dropped since the last call (then resets)."""
        return self._suppressed.pop(key, 0)

    def forget(self, keys: Iterable[str] | None = None) -> None:
        """Drop state for ``keys`` (all when None), e.g. when an error condition clears."""
        if keys is None:
            self._last.clear()
            self._suppressed.clear()
            return
        for key in keys:
            self._last.pop(key, None)
            self._suppressed.pop(key, None)
