#!/usr/bin/env python3
"""Run the kernel test tier: on the host kernel if it can, else in a virtme-ng VM.

    tools/kernel_tier.py [--mode test|demo] [--where auto|host|vm] [--timeout S]
                         [-- extra pytest args]

Host check: root, and a throw-away namespace accepts an ingress qdisc plus a
``flower skip_hw ... action drop`` filter, and the netdevsim bus exists (after
trying ``modprobe``).  Otherwise (this project's CI: host 6.18 lacks
cls_flower/act_gact/netdevsim and cannot load modules):

1. tools/ensure_vm_tooling.sh installs what is missing (apt, virtme-ng in
   .venv) and builds/caches netdevsim.ko for the guest kernel;
2. one ``vng --run /boot/vmlinuz-<ver> --disable-kvm`` boot (TCG: nested KVM
   hangs here) with the repo mounted read-write, bounded by ``timeout``;
3. tools/vm_guest.sh loads the modules and runs ``pytest -m kernel`` with
   ``FLOWPATH_KERNEL_TIER=required`` (skips become failures) and a junit xml
   in .cache/test-results/ (host-visible).

Then prints ``kernel tier: P passed, F failed, S skipped — in VM (Linux <ver>,
TCG)`` and writes .cache/test-results/kernel.json.  Exit status 0 only if the
tier ran at least one test and none failed, errored or skipped.
Stdlib only: runs with any python3 >= 3.11.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / ".cache" / "test-results"   # latest results (copies), what CI reads


def new_run_dir(tag: str) -> Path:
    """A private results directory for one run: several runs of the same checkout
    (people sharing a repo) must not read each other's files.  Old ones are pruned."""
    runs = RESULTS / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - 24 * 3600
    for old in runs.iterdir():
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    d = runs / f"{tag}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    d.mkdir()
    return d
VENV = REPO / ".venv"
MODULES = ("cls_flower act_gact act_mirred act_vlan act_pedit act_csum act_tunnel_key "
           "act_skbedit act_sample sch_ingress veth").split()


@dataclass
class Counts:
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.errors + self.skipped


@dataclass
class TierResult:
    tier: str
    where: str                 # "vm" | "host" | "none"
    kernel: str
    accel: str = ""
    counts: Counts = field(default_factory=Counts)
    rc: int | None = None      # exit status of pytest (or of the VM)
    seconds: float = 0.0
    boot_seconds: float | None = None
    problem: str = ""          # why the tier is not OK, beyond the counts

    @property
    def ok(self) -> bool:
        c = self.counts
        return (not self.problem and self.rc == 0 and c.total > 0
                and c.failed == 0 and c.errors == 0 and c.skipped == 0)

    def place(self) -> str:
        if self.where == "vm":
            return f"in VM (Linux {self.kernel}, {self.accel})"
        if self.where == "host":
            return f"on host kernel (Linux {self.kernel})"
        return "not run"

    def summary(self) -> str:
        c = self.counts
        line = (f"kernel tier: {c.passed} passed, {c.failed + c.errors} failed, "
                f"{c.skipped} skipped \u2014 {self.place()}, {self.seconds:.1f} s")
        if self.boot_seconds is not None:
            line += f" (guest boot {self.boot_seconds:.1f} s)"
        if not self.ok:
            why = self.problem or (
                "ran zero tests" if c.total == 0 else
                "tests skipped (the kernel tier must not skip)" if c.skipped and not (c.failed or c.errors) else
                f"pytest exit status {self.rc}" if self.rc not in (0, None) and not (c.failed or c.errors) else
                "")
            line += " — FAILED" + (f": {why}" if why else "")
        return line


def parse_junit(path: Path) -> Counts:
    """Count testcase outcomes in a pytest junit xml (testcase-level, not suite attrs)."""
    root = ET.parse(path).getroot()
    counts = Counts()
    for case in root.iter("testcase"):
        tags = {child.tag for child in case}
        if "failure" in tags:
            counts.failed += 1
        elif "error" in tags:
            counts.errors += 1
        elif "skipped" in tags:
            counts.skipped += 1
        else:
            counts.passed += 1
    return counts


def _quiet(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def host_kernel_capable() -> tuple[bool, str]:
    """Can the kernel tier run directly on this host?  (answer, reason)"""
    if os.geteuid() != 0:
        return False, "not root"
    for tool in ("ip", "tc", "devlink"):
        if shutil.which(tool) is None:
            return False, f"no {tool} binary"
    for mod in MODULES + ["netdevsim"]:
        _quiet(["modprobe", "-q", mod])
    if not Path("/sys/bus/netdevsim/new_device").exists():
        return False, "no netdevsim on the host kernel"
    ns = f"fpprobe-{uuid.uuid4().hex[:8]}"
    if not _quiet(["ip", "netns", "add", ns]):
        return False, "cannot create a network namespace"
    try:
        ok = (_quiet(["ip", "-n", ns, "link", "add", "prb0", "type", "veth", "peer", "name", "prb1"])
              and _quiet(["tc", "-n", ns, "qdisc", "add", "dev", "prb0", "ingress"])
              and _quiet(["tc", "-n", ns, "filter", "add", "dev", "prb0", "ingress", "protocol", "ip",
                          "flower", "skip_hw", "ip_proto", "udp", "action", "drop"]))
    finally:
        _quiet(["ip", "netns", "del", ns])
    return (ok, "host kernel has flower, gact and netdevsim") if ok else (
        False, "host kernel lacks tc flower / act_gact / ingress qdisc")


def _python() -> str:
    py = VENV / "bin" / "python"
    return str(py) if py.exists() else sys.executable


def run_on_host(mode: str, pytest_args: list[str], out: Path) -> TierResult:
    xml = out / "kernel.xml"
    xml.unlink(missing_ok=True)
    env = dict(os.environ, FLOWPATH_KERNEL_TIER="required")
    start = time.monotonic()
    if mode == "demo":
        argv = [_python(), *pytest_args]  # pytest_args[0] is the demo script
    else:
        argv = [_python(), "-m", "pytest", "-m", "kernel", f"--junitxml={xml}", *pytest_args]
    rc = subprocess.run(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL).returncode
    res = TierResult("kernel", "host", platform.release(), rc=rc,
                     seconds=time.monotonic() - start)
    if mode == "test":
        if xml.exists():
            res.counts = parse_junit(xml)
        else:
            res.problem = "pytest wrote no junit xml"
    return res


def kernel_test_files() -> list[str]:
    """Files holding tests marked ``kernel``, found by a (fast) host-side collection.

    Under TCG every import is slow, so the guest should import only these
    files; ``-m kernel`` still selects inside them.  On any collection problem
    return [] and let the guest collect everything (and report the error)."""
    try:
        proc = subprocess.run(
            [_python(), "-m", "pytest", "-m", "kernel", "--collect-only", "-q", "-p", "no:cacheprovider"],
            cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
            env=dict(os.environ, FLOWPATH_KERNEL_TIER="required"))
    except (OSError, subprocess.SubprocessError):
        return []
    if proc.returncode != 0:
        return []
    files = sorted({line.split("::", 1)[0] for line in proc.stdout.splitlines() if "::" in line})
    return [f for f in files if (REPO / f).is_file()]


def ensure_vm_tooling() -> str:
    proc = subprocess.run([str(REPO / "tools" / "ensure_vm_tooling.sh"), str(VENV)],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"tools/ensure_vm_tooling.sh failed (exit {proc.returncode})")
    return proc.stdout.strip().splitlines()[-1]


def run_in_vm(mode: str, pytest_args: list[str], timeout: int, memory: str, cpus: int,
              out: Path) -> TierResult:
    try:
        kver = ensure_vm_tooling()
    except RuntimeError as exc:
        return TierResult("kernel", "vm", "?", "TCG", problem=str(exc))
    ko = REPO / ".cache" / "netdevsim" / kver / "netdevsim.ko"
    names_paths = any((REPO / a.split("::")[0]).exists() for a in pytest_args if not a.startswith("-"))
    if mode == "test" and not names_paths:
        pytest_args = kernel_test_files() + pytest_args
    guest_cmd = " ".join([
        "tools/vm_guest.sh", str(out), str(ko), mode,
        *("'" + a.replace("'", "'\\''") + "'" for a in pytest_args),
    ])
    vng = str(VENV / "bin" / "vng")
    argv = ["timeout", "--kill-after=30", str(timeout), vng,
            "--run", f"/boot/vmlinuz-{kver}", "--disable-kvm",
            "--memory", memory, "--cpus", str(cpus), "--user", "root",
            "--rwdir", str(REPO), "--cwd", str(REPO),
            "--exec", guest_cmd]
    env = dict(os.environ, PATH=f"{VENV / 'bin'}:{os.environ.get('PATH', '')}")
    print(f"kernel tier: booting Linux {kver} under TCG (virtme-ng), timeout {timeout} s", flush=True)
    start = time.monotonic()
    log_path = out / f"vm-{mode}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            log.write(line)
        vm_rc = proc.wait()
    seconds = time.monotonic() - start
    res = TierResult("kernel", "vm", kver, "TCG", seconds=seconds)
    if (out / "guest-boot-seconds").exists():
        res.boot_seconds = float((out / "guest-boot-seconds").read_text().strip() or 0)
    rc_file = out / f"{mode}.rc"
    if vm_rc == 124 or vm_rc == 137:
        res.problem = f"VM timed out after {timeout} s (log {log_path.relative_to(REPO)})"
    elif not rc_file.exists():
        res.problem = f"VM exited {vm_rc} before the guest reported a result (log {log_path.relative_to(REPO)})"
    res.rc = int(rc_file.read_text().strip()) if rc_file.exists() else vm_rc
    if mode == "test" and not res.problem:
        if (out / "kernel.xml").exists():
            res.counts = parse_junit(out / "kernel.xml")
        else:
            res.problem = f"guest wrote no junit xml (guest exit {res.rc})"
    print(f"kernel tier: VM exit status {vm_rc}, guest status {res.rc}, {seconds:.1f} s wall", flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("test", "demo"), default="test")
    ap.add_argument("--demo-script", default="tools/demo.py",
                    help="demo mode: script to run (tools/demo.py, tools/demo_smoke.py)")
    ap.add_argument("--where", choices=("auto", "host", "vm"),
                    default=os.environ.get("FLOWPATH_KERNEL_WHERE", "auto"))
    ap.add_argument("--timeout", type=int, default=int(os.environ.get("FLOWPATH_VM_TIMEOUT", "2700")))
    ap.add_argument("--memory", default=os.environ.get("FLOWPATH_VM_MEMORY", "2G"))
    ap.add_argument("--cpus", type=int, default=int(os.environ.get("FLOWPATH_VM_CPUS", "2")))
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="private results directory (default: a new one under .cache/test-results/runs/)")
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args(argv)
    out: Path = args.out_dir or new_run_dir(f"kernel-{args.mode}")
    if args.mode == "demo":
        args.pytest_args = [args.demo_script, *args.pytest_args]
    out.mkdir(parents=True, exist_ok=True)

    where = args.where
    if where == "auto":
        capable, why = host_kernel_capable()
        where = "host" if capable else "vm"
        print(f"kernel tier: {'host' if capable else 'VM'} ({why})", flush=True)
    if where == "host":
        res = run_on_host(args.mode, args.pytest_args, out)
    else:
        res = run_in_vm(args.mode, args.pytest_args, args.timeout, args.memory, args.cpus, out)

    if args.mode == "demo":
        ok = res.rc == 0 and not res.problem
        print(f"demo: {'ok' if ok else 'FAILED'} — {res.place()}, {res.seconds:.1f} s"
              + (f": {res.problem}" if res.problem else ""))
        return 0 if ok else 1

    data = asdict(res)
    data.update(ok=res.ok, total=res.counts.total, summary=res.summary(), results=str(out))
    (out / "kernel.json").write_text(json.dumps(data, indent=2) + "\n")
    for name in ("kernel.json", "kernel.xml"):   # latest copies (atomic rename)
        if (out / name).exists():
            tmp = RESULTS / f".{name}.{os.getpid()}"
            shutil.copyfile(out / name, tmp)
            tmp.replace(RESULTS / name)
    print(res.summary(), flush=True)
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
