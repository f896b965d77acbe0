"""The image's console report (image/rootfs/usr/libexec/bgp-lb/console-report): the
BGPLB-DOCTOR line says why the doctor gave no report instead of a made-up failure count."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).parents[2] / "image/rootfs/usr/libexec/bgp-lb/console-report"


def load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("console_report", str(SCRIPT))
    spec = importlib.util.spec_from_loader("console_report", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def fake_doctor(tmp_path: Path, body: str) -> str:
    path = tmp_path / "bgp-lb"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_a_doctor_that_does_not_answer_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = load()
    report.BGP_LB = fake_doctor(tmp_path, "exec sleep 30")
    report.DOCTOR_TIMEOUT = 0.3
    report.DOCTOR_WAIT = 0
    report.doctor()
    out = capsys.readouterr().out
    assert out == 'BGPLB-DOCTOR ok=false failures=unknown error="no answer within 0.3 s"\n'


def test_a_doctor_report_is_printed_with_its_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = load()
    finding = '{"level": "fail", "step": "checks", "name": "web/http", "detail": "down"}'
    report.BGP_LB = fake_doctor(
        tmp_path, f'echo \'{{"ok": false, "failures": 1, "findings": [{finding}]}}\''
    )
    report.DOCTOR_WAIT = 0
    report.doctor()
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["BGPLB-DOCTOR ok=false failures=1", "BGPLB-DOCTOR-FAIL checks web/http: down"]
