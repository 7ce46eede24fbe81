#!/usr/bin/env python3
"""`make test`: mypy, the unit tier, the kernel tier; one summary at the end.

Every step runs even if an earlier one failed, so one run shows everything.
Results go to .cache/test-results/ (unit.xml, kernel.xml, kernel.json,
summary.json).  The last two lines of output are what CI reads:

    ======= 312 passed, 2 skipped in 201.4s =======      (pytest style)
    312 passed, 0 failed                                 (both tiers)

A failed mypy run or a kernel tier that did not run properly (VM did not
boot, zero tests, any skip) counts as one more failure, so "0 failed" on the
last line means `make test` passed.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_tier import REPO, RESULTS, Counts, new_run_dir, parse_junit  # noqa: E402

PY = str(REPO / ".venv" / "bin" / "python")


def banner(title: str) -> None:
    print(f"\n{'#' * 20} {title} {'#' * 20}", flush=True)


def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, float]:
    start = time.monotonic()
    rc = subprocess.run(argv, cwd=REPO, stdin=subprocess.DEVNULL, env=env).returncode
    return rc, time.monotonic() - start


def main() -> int:
    import argparse
    argparse.ArgumentParser(description="make test: mypy, unit tier, kernel tier, summary").parse_args()
    t0 = float(os.environ.get("FLOWPATH_MAKE_T0") or time.time())
    out = new_run_dir("make-test")

    banner("mypy")
    mypy_rc, mypy_s = run([str(REPO / ".venv" / "bin" / "mypy")])

    banner("unit tier: pytest -m 'not kernel'")
    unit_env = dict(os.environ)
    unit_env.pop("FLOWPATH_KERNEL_TIER", None)
    unit_rc, unit_s = run([PY, "-m", "pytest", "-m", "not kernel",
                           f"--junitxml={out / 'unit.xml'}"], env=unit_env)
    unit = parse_junit(out / "unit.xml") if (out / "unit.xml").exists() else Counts()
    unit_ok = unit_rc in (0, 5) and unit.failed == 0 and unit.errors == 0  # 5: no unit tests

    banner("kernel tier: pytest -m kernel")
    kernel_rc, kernel_s = run([PY, str(REPO / "tools" / "kernel_tier.py"), "--out-dir", str(out)])
    kj = out / "kernel.json"
    kernel: dict[str, object] = json.loads(kj.read_text()) if kj.exists() else {}
    kc = kernel.get("counts") or {}
    assert isinstance(kc, dict)
    kcounts = Counts(**{k: int(kc.get(k, 0)) for k in ("passed", "failed", "errors", "skipped")})
    kernel_ok = kernel_rc == 0 and bool(kernel.get("ok"))

    total_s = time.time() - t0
    passed = unit.passed + kcounts.passed
    failed = unit.failed + unit.errors + kcounts.failed + kcounts.errors
    skipped = unit.skipped + kcounts.skipped
    extra = []
    if mypy_rc != 0:
        failed += 1
        extra.append("mypy")
    if unit_rc not in (0, 5) and unit.failed == 0 and unit.errors == 0:
        failed += 1
        extra.append(f"unit tier pytest exit {unit_rc}")
    if not kernel_ok and kcounts.failed == 0 and kcounts.errors == 0:
        failed += 1
        extra.append("kernel tier did not run properly")
    ok = mypy_rc == 0 and unit_ok and kernel_ok

    banner("summary")
    print(f"mypy: {'ok' if mypy_rc == 0 else 'FAILED'} ({mypy_s:.1f} s)")
    print(f"unit tier: {unit.passed} passed, {unit.failed + unit.errors} failed, {unit.skipped} skipped"
          f" — on host (Linux {platform.release()}), {unit_s:.1f} s"
          + ("" if unit_ok else f" — FAILED (pytest exit {unit_rc})"))
    print(kernel.get("summary") or f"kernel tier: did not report (exit {kernel_rc}) — FAILED")
    if extra:
        print("also counted as failed: " + ", ".join(extra))
    print(f"make test: {'PASSED' if ok else 'FAILED'}, total time {total_s:.1f} s "
          f"(mypy {mypy_s:.1f} s, unit {unit_s:.1f} s, kernel {kernel_s:.1f} s)")
    print(f"results: {out.relative_to(REPO)}/ (latest copies in {RESULTS.relative_to(REPO)}/)")
    summary = json.dumps({
        "ok": ok, "passed": passed, "failed": failed, "skipped": skipped,
        "mypy_ok": mypy_rc == 0, "unit_ok": unit_ok, "kernel_ok": kernel_ok,
        "seconds": round(total_s, 1), "kernel": kernel, "results": str(out),
    }, indent=2) + "\n"
    (out / "summary.json").write_text(summary)
    tmp = RESULTS / f".summary.json.{os.getpid()}"
    tmp.write_text(summary)
    tmp.replace(RESULTS / "summary.json")
    parts = ([f"{failed} failed"] if failed else []) + [f"{passed} passed"] + (
        [f"{skipped} skipped"] if skipped else [])
    print(f"{'=' * 25} {', '.join(parts)} in {total_s:.2f}s {'=' * 25}")
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
