"""Suite-wide pytest configuration.

Tiers
-----
* unit tier: every test *not* marked ``kernel``; pure Python, no privileges
  (``pytest -m "not kernel"``).
* kernel tier: tests marked ``@pytest.mark.kernel``, anywhere under tests/.
  They need root, network namespaces, tc flower and netdevsim.  ``make test``
  runs them with ``pytest -m kernel`` on the host if its kernel has all that,
  otherwise inside a virtme-ng VM (tools/kernel_tier.py).

Rules enforced here:

* Not root (and not in the required kernel tier): kernel tests are
  *deselected* — a plain ``pytest`` as a user runs the unit tier cleanly.
* ``FLOWPATH_KERNEL_TIER=required`` (set by the kernel-tier runner): any kernel
  test that would be skipped fails instead, so a missing kernel feature can
  never turn the tier green.
* Hypothesis runs without its per-example deadline (a timing assertion).

The kernel fixtures (``netns_factory``, ``netns``, ``veth_factory``,
``tc_flower``, ``netdevsim_factory``, ``netdevsim``) live in
tests/kernel/netns.py (import helpers as ``tests.kernel.netns``) and are
re-exported here for every test under tests/.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import sys
from typing import Any, Generator

import pytest
from hypothesis import settings

from tests.kernel import netns as _netns
from tests.kernel.netns import (  # noqa: F401  (fixtures are registered by import)
    kernel_tier_required,
    netdevsim,
    netdevsim_factory,
    netns,
    netns_factory,
    tc_flower,
    veth_factory,
)

# No hypothesis deadline anywhere: a per-example time limit is an assertion on
# timing, which a loaded CI host (or the TCG VM) fails at random.  Example
# counts still bound each property's work.
settings.register_profile("flowpath", deadline=None)
settings.load_profile("flowpath")

# Compatibility alias: ``from kernel.netns import ...`` names the same module
# object.  Prefer ``from tests.kernel.netns import ...``.  (tests/ itself is
# deliberately NOT put on sys.path: tests/offload etc. would shadow the real
# packages.)
sys.modules.setdefault("kernel", sys.modules["tests.kernel"])
sys.modules.setdefault("kernel.netns", _netns)


def pytest_report_header(config: pytest.Config) -> str:
    mode = "required" if kernel_tier_required() else "optional"
    return f"flowpath kernel tier: {mode}, euid={os.geteuid()}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if kernel_tier_required() or os.geteuid() == 0:
        return
    kernel = [i for i in items if i.get_closest_marker("kernel") is not None]
    if kernel:
        config.hook.pytest_deselected(items=kernel)
        items[:] = [i for i in items if i.get_closest_marker("kernel") is None]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if (
        report.skipped
        and kernel_tier_required()
        and item.get_closest_marker("kernel") is not None
        and not hasattr(report, "wasxfail")
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"kernel tier is required (FLOWPATH_KERNEL_TIER=required) but the test skipped: {reason}"


#: Per-phase bound (seconds) for kernel tests, so one hung test (a receive that
#: never returns, a stuck netlink call) fails alone instead of eating the VM's
#: whole time budget.  TCG is slow: keep it generous.
KERNEL_TEST_TIMEOUT = float(os.environ.get("FLOWPATH_KERNEL_TEST_TIMEOUT", "180"))


class KernelTestTimeout(Exception):
    """A kernel-tier test phase ran longer than FLOWPATH_KERNEL_TEST_TIMEOUT."""


@contextlib.contextmanager
def _alarm(item: pytest.Item, phase: str) -> Generator[None, None, None]:
    if (
        item.get_closest_marker("kernel") is None
        or KERNEL_TEST_TIMEOUT <= 0
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise KernelTestTimeout(f"{item.nodeid}: {phase} exceeded {KERNEL_TEST_TIMEOUT:.0f} s "
                                "(FLOWPATH_KERNEL_TEST_TIMEOUT)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, KERNEL_TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, None]:
    with _alarm(item, "setup"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, None]:
    with _alarm(item, "call"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, Any, None]:
    with _alarm(item, "teardown"):
        yield
