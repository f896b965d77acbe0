"""``python -m tests.observability.vm [--png DIR]``: the live observability test where IPVS
and dummy exist: here if this kernel has them, else inside ONE virtme-ng VM (TCG) booted like
the lab runner's (tests/lab/vm.py: a RAM copy of the Python trees), with its own tarball so
it never races a lab run. There each node also runs an IPVS-mode service with traffic, so
every dashboard query (IPVS ones included) must return series.

``--png DIR`` writes the rendered dashboards (from the VM's live data) to DIR, which must be
under _work/ (the VM's only writable host directory).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time

from tests.harness.vm import find_vm_kernel, running_kernel_has_dataplane, stream
from tests.lab.vm import MEMORY, REPO, VNG_BIN, WORK, build_tarball, guest_prelude

TIMEOUT = 480.0
LOG = WORK / "test-observability-vm.log"


def in_vm(command: list[str], timeout: float = TIMEOUT) -> int:
    """Boot the VM, run ``command`` (cwd = repo) in it, return its exit status."""
    env = {**os.environ, "PATH": f"{VNG_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    t0 = time.monotonic()
    tarball = build_tarball(WORK / "observability-python.tar")
    inner = "env PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 " + shlex.join(command)
    script = f"{guest_prelude(tarball)} && {inner} 2>&1"
    argv = ["vng", "--run", str(find_vm_kernel()), "--disable-kvm", "--memory", MEMORY]
    argv += ["--cpus", "2", f"--rwdir={WORK}", "--exec", script]
    print("==> booting a virtme-ng VM (TCG) for the IPVS half of the live observability test")
    status = stream(argv, LOG, timeout, env)
    print(f"==> VM finished with exit {status} after {time.monotonic() - t0:.0f}s (log: {LOG})")
    return status


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.observability.vm")
    ap.add_argument("--png", help="directory under _work/ for the rendered dashboards")
    ap.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds for the whole VM")
    a = ap.parse_args(argv)
    pytest = [str(REPO / ".venv" / "bin" / "pytest"), "-p", "no:cacheprovider", "-m"]
    pytest += ["observability", "tests/observability/test_live.py", "-ra", "-s", "-q"]
    env = ["env", "BGPLB_SLOW=4", *([f"BGPLB_RENDER_PNG={a.png}"] if a.png else [])]
    if running_kernel_has_dataplane():
        return subprocess.run([*env, *pytest], cwd=REPO, check=False).returncode
    return in_vm([*env, *pytest], a.timeout)


if __name__ == "__main__":
    sys.exit(main())
