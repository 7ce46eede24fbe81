"""hwtests/ is runnable against netdevsim, where offload is expected to be refused."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel
REPO = Path(__file__).resolve().parents[2]


def test_hwtests_pass_on_netdevsim_with_expect_refused(
        netdevsim_factory: Callable[..., object], tc_flower: None) -> None:
    nsim = netdevsim_factory(2)
    reps = nsim.representors  # type: ignore[attr-defined]
    ns = nsim.ns  # type: ignore[attr-defined]
    env = dict(os.environ, FLOWPATH_HW_DEV=reps["pf0vf0"], FLOWPATH_HW_OUT=reps["pf0vf1"],
               FLOWPATH_HW_NETNS=ns.name, FLOWPATH_HW_EXPECT="refused")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "hwtests"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=170, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "3 passed" in proc.stdout, proc.stdout[-2000:]
