"""Run a lab command where IPVS and dummy exist: here, or inside ONE virtme-ng VM (TCG).

Reuses :mod:`tests.harness.vm` (kernel choice, output streaming). Under TCG, Python imports
over the guest's 9p root are the bottleneck (``import exabgp`` ~100 s, measured), so the guest
first unpacks one tarball of the Python trees it needs (stdlib, the venv without dev-only
packages, the repo's code) into RAM and bind-mounts it over the same paths: imports then cost
~10x less, and every path stays what it is on the host.

The VM (vng and its qemu) runs in its own process group, killed whole at the timeout, when this
process gets SIGTERM/SIGHUP/SIGINT (the Makefile's outer ``timeout`` firing) or leaves early
(tests/harness/vm.py ``stream``): it never outlives the run.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path

from tests.harness.vm import MODULES, find_vm_kernel, running_kernel_has_dataplane, stream

from .topology import Topology

REPO = Path(__file__).resolve().parents[2]
WORK = REPO / "_work"
VNG_BIN = REPO / ".venv-vng" / "bin"
STDLIB = Path(sysconfig.get_paths()["stdlib"])
MEMORY = "2G"
# The pool lab first (tests/lab/test_pool.py: pool mode, a silent death and the control, two
# builds of 10 namespaces; 357 s of a quiet TCG guest on this 2-core host), then the ECMP lab (a
# session fixture, built after the pool lab is down, so the two never run at once).
VM_TESTS = ("tests/lab/test_pool.py", "tests/lab/test_ecmp.py", "tests/lab/test_observability.py")
# The rolling upgrade (tests/lab/test_roll.py: it replaces every agent, so it runs last when
# given with the others) runs by `make test-lab-roll`: its added time under TCG could not be
# shown to fit make test-lab's budget (containerlab/README.md).
# the pool + ECMP labs: 582 s in a quiet TCG guest, ~1,900 s estimated on a loaded host
VM_TIMEOUT = float(os.environ.get("BGPLB_LAB_TIMEOUT", "2100"))
# Not needed at run time in the guest (dev tools, docs, tests): left out of the tarball.
EXCLUDE = (
    "test", "idlelib", "tkinter", "ensurepip", "lib2to3", "pydoc_data", "turtledemo",
    "mypy", "mypy-*", "*__mypyc*", "mypyc", "ruff", "ruff-*", "pip", "pip-*", "setuptools",
    "pkg_resources", "hypothesis", "hypothesis-*", "schemathesis", "schemathesis-*", "*.pyi",
)  # fmt: skip


def build_tarball(dest: Path) -> Path:
    """One tar of the stdlib, the venv and the repo's code (host side, ~1 s)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    members = [STDLIB, REPO / ".venv", REPO / "agent", REPO / "tests", REPO / "containerlab"]
    members += [REPO / "pyproject.toml"]
    argv = ["tar", "-C", "/", "-cf", str(dest)]
    argv += [f"--exclude={pattern}" for pattern in EXCLUDE]
    # the interpreter's own site-packages and static library are not the venv's business
    argv += [f"--exclude={STDLIB.relative_to('/')}/site-packages"]
    argv += [f"--exclude={STDLIB.relative_to('/')}/config-*"]
    argv += [str(m.relative_to("/")) for m in members if m.exists()]
    subprocess.run(argv, check=True, timeout=120)
    return dest


def guest_prelude(tarball: Path) -> str:
    """Shell run first in the guest: modules, the RAM copy of the Python trees."""
    fast = "/run/bgplb-fast"
    binds = [STDLIB, REPO / ".venv", REPO / "agent", REPO / "tests", REPO / "containerlab"]
    mounts = " && ".join(f"mount --bind {fast}{p} {p}" for p in binds)
    return (
        f"modprobe -a {' '.join(MODULES)} && mkdir -p {fast} && "
        f"tar -C {fast} -xf {shlex.quote(str(tarball))} && {mounts} && "
        f'cd {shlex.quote(str(REPO))} && echo "guest kernel $(uname -r), ready"'
    )


def in_vm(command: Sequence[str], log: Path, timeout: float, interactive: bool = False) -> int:
    """Boot the VM, run ``command`` (argv, cwd = repo) in it, return its exit status."""
    kernel = find_vm_kernel()
    env = dict(os.environ)
    env["PATH"] = f"{VNG_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    if shutil.which("vng", path=env["PATH"]) is None:
        raise SystemExit("vng not found: `make vng` installs it into .venv-vng")
    t0 = time.monotonic()
    tarball = build_tarball(WORK / f"lab-python-{os.getpid()}.tar")  # one per run: VMs overlap
    inner = "env PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 " + shlex.join(command)
    script = f"{guest_prelude(tarball)} && {inner}" + ("" if interactive else " 2>&1")
    WORK.mkdir(parents=True, exist_ok=True)
    argv = ["vng", "--run", str(kernel), "--disable-kvm", "--memory", MEMORY, "--cpus", "2"]
    argv += [f"--rwdir={WORK}"]  # logs written in the guest land on the host
    print(f"==> booting {kernel.name} in a virtme-ng VM (TCG; this kernel has no IPVS/dummy)")
    try:
        if interactive:
            return subprocess.run(
                [*argv, "--exec", f"{script}; bash -i"], env=env, check=False
            ).returncode
        status = stream([*argv, "--exec", script], log, timeout, env)
    finally:  # ~340 MB each: a leftover per run filled _work/ before
        tarball.unlink(missing_ok=True)
    print(f"==> VM finished with exit {status} after {time.monotonic() - t0:.0f}s (log: {log})")
    return status


def native() -> bool:
    return running_kernel_has_dataplane()


def run_lab_tests(pytest_args: Sequence[str], native: bool = False) -> int:
    """``make test-lab``: host tests here, then the pool and ECMP labs' tests (one VM boot
    if needed)."""
    pytest = [str(REPO / ".venv" / "bin" / "pytest"), "-p", "no:cacheprovider", "-m", "lab"]
    host = subprocess.run(
        [*pytest, "tests/lab/test_runner_host.py", *pytest_args], cwd=REPO, check=False
    ).returncode
    # LAB_TESTS picks the files (make test-lab-pool: LAB_TESTS=tests/lab/test_pool.py); with
    # several, list the pool lab first (as VM_TESTS does).
    files = os.environ.get("LAB_TESTS", "").split() or list(VM_TESTS)
    ecmp = [*pytest, *files, *pytest_args]
    if native or running_kernel_has_dataplane():
        lab = subprocess.run(ecmp, cwd=REPO, check=False).returncode
    else:  # Prometheus waits x4 under TCG (tests/observability/prom.py)
        env = ["env", "BGPLB_SLOW=4"]
        if os.environ.get("BGPLB_RENDER_PNG"):  # a directory under _work/ (writable there)
            env.append(f"BGPLB_RENDER_PNG={os.environ['BGPLB_RENDER_PNG']}")
        lab = in_vm([*env, *ecmp], WORK / "test-lab.log", timeout=VM_TIMEOUT)
    return host or lab


def run_shell(topology: Topology, native: bool = False) -> int:
    """Build the lab, open a shell in it, remove it when the shell exits."""
    if not native and not running_kernel_has_dataplane():
        cmd = [sys.executable, "-m", "tests.lab", "shell", "--native", str(topology.path)]
        return in_vm(cmd, WORK / "lab-shell.log", timeout=24 * 3600, interactive=True)
    from .runner import Lab

    lab = Lab(topology)
    lab.up(say=print)
    try:
        print(
            f"lab {topology.name} is up. Namespaces: ip netns list (bgplab-*). exit to remove it."
        )
        return subprocess.run(["bash", "-i"], check=False).returncode
    finally:
        lab.down()
