"""Logging: JSON lines, text lines, event fields, secret redaction, rate limiting."""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Iterator

import pytest

from bgplb.clock import FakeClock
from bgplb.logs import (
    RateLimiter,
    clear_secrets,
    log_event,
    redact,
    register_secret,
    setup_logging,
)

from .logging_state import restored_logging

SECRET = "s3cr3t-T0ken-value"
QUOTED = 'pa"ss\\word'  # JSON escapes it: the escaped form must be redacted too

log = logging.getLogger("bgplb.test")


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    with restored_logging():
        yield
    clear_secrets()


def lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_json_lines_carry_event_fields(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("json", "info")
    log_event(
        log,
        "check_down",
        service="web",
        check="http",
        peer="192.0.2.1",
        vip=ipaddress.ip_address("198.51.100.10"),
        reason="check_failed",
        target=None,
    )
    log.debug("not shown at info")
    (rec,) = lines(capsys.readouterr().err)
    assert rec["level"] == "INFO"
    assert rec["logger"] == "bgplb.test"
    assert rec["message"] == "check_down"
    assert rec["event"] == "check_down"
    assert rec["service"] == "web"
    assert rec["vip"] == "198.51.100.10"
    assert rec["peer"] == "192.0.2.1"
    assert rec["reason"] == "check_failed"
    assert rec["target"] is None
    assert str(rec["timestamp"]).startswith("20")


def test_reserved_field_names_do_not_crash(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("json", "debug")
    log_event(log, "x", level=logging.WARNING, name="n", message="m", args="a")
    (rec,) = lines(capsys.readouterr().err)
    assert rec["name_"] == "n"
    assert rec["message_"] == "m"
    assert rec["level"] == "WARNING"


def test_text_format(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("text", "info")
    log_event(log, "peer_down", peer="192.0.2.2", reason="hold timer expired")
    line = capsys.readouterr().err.strip()
    assert " INFO bgplb.test: peer_down " in line
    assert "peer=192.0.2.2" in line
    assert "reason=hold timer expired" in line
    assert not line.startswith("{")


def test_access_log_only_when_debugging() -> None:
    setup_logging("json", "info")
    assert not logging.getLogger("aiohttp.access").isEnabledFor(logging.INFO)
    setup_logging("json", "debug")
    assert logging.getLogger("aiohttp.access").isEnabledFor(logging.INFO)


def test_pyroute2_debug_stays_quiet() -> None:
    setup_logging("json", "debug")
    assert not logging.getLogger("pyroute2.netlink.core").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("pyroute2.netlink.core").isEnabledFor(logging.INFO)
    setup_logging("json", "warning")
    assert not logging.getLogger("pyroute2").isEnabledFor(logging.INFO)


def test_setup_is_idempotent(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("json", "info")
    setup_logging("json", "info")
    log.info("once")
    assert len(lines(capsys.readouterr().err)) == 1


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_secrets_are_redacted_everywhere(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(fmt, "debug")  # type: ignore[arg-type]
    register_secret(f"  {SECRET}\n")
    register_secret(QUOTED)
    register_secret("")
    log.info("token is %s", SECRET)
    log.info(f"inline {SECRET} and {QUOTED}")
    log_event(log, "md5_loaded", peer="192.0.2.1", password=SECRET, nested={"p": QUOTED})
    try:
        raise ValueError(f"bad password {SECRET}")
    except ValueError:
        log.exception("failed")
    err = capsys.readouterr().err
    assert SECRET not in err
    assert QUOTED not in err
    assert json.dumps(QUOTED)[1:-1] not in err
    assert err.count("***") >= 5
    assert "ValueError" in err  # the traceback is kept, only the secret goes
    if fmt == "json":
        assert len(lines(err)) == 4


def test_redact_without_secrets_is_identity() -> None:
    assert redact("nothing here") == "nothing here"
    register_secret("abc")
    assert redact("xabcx abc") == "x***x ***"
    clear_secrets()
    assert redact("abc") == "abc"


async def test_rate_limiter() -> None:
    clock = FakeClock()
    rl = RateLimiter(clock, period=10.0)
    assert rl.allow("a")
    assert not rl.allow("a")
    assert not rl.allow("a")
    assert rl.allow("b")
    assert rl.take_suppressed("a") == 2
    assert rl.take_suppressed("a") == 0
    await clock.advance(9.9)
    assert not rl.allow("a")
    await clock.advance(0.1)
    assert rl.allow("a")
    assert rl.allow("b")  # b's period has passed too
    assert not rl.allow("b")
    rl.forget(["a"])
    assert rl.allow("a")
    assert not rl.allow("b")
    rl.forget()
    assert rl.allow("b")
