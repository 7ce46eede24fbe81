"""hwtests: the offload contract on a real switchdev NIC (or netdevsim).

Chosen by environment variables; every test skips with a clear reason when
they are absent, so ``pytest hwtests`` is always safe to run:

* ``FLOWPATH_HW_DEV``     a VF/SF representor netdev on a switchdev eswitch
                          (e.g. ``enp8s0f0_0``, or ``eth1`` of netdevsim)
* ``FLOWPATH_HW_NETNS``   optional network namespace that holds it
* ``FLOWPATH_HW_EXPECT``  ``offloaded`` (default: a real NIC must take a
                          skip_sw flower filter) or ``refused`` (netdevsim:
                          skip_sw must be refused with the driver's extack)

The tests only touch tc objects they create: an ingress qdisc is added only
if absent (and removed afterwards only then), and filters use a private
chain/prio and are deleted by kind+prio+handle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class HwTarget:
    dev: str
    netns: str | None
    expect: str  # "offloaded" | "refused"

    def argv(self, *argv: str) -> list[str]:
        return (["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv))


@pytest.fixture(scope="session")
def hw_target() -> HwTarget:
    """The NIC under test, or a skip that says how to select one."""
    dev = os.environ.get("FLOWPATH_HW_DEV")
    if not dev:
        pytest.skip("hwtests need a switchdev representor: set FLOWPATH_HW_DEV=<netdev> "
                    "(and FLOWPATH_HW_NETNS / FLOWPATH_HW_EXPECT=refused for netdevsim)")
    if os.geteuid() != 0:
        pytest.skip("hwtests need root")
    expect = os.environ.get("FLOWPATH_HW_EXPECT", "offloaded")
    if expect not in ("offloaded", "refused"):
        pytest.fail(f"FLOWPATH_HW_EXPECT must be 'offloaded' or 'refused', not {expect!r}")
    return HwTarget(dev, os.environ.get("FLOWPATH_HW_NETNS") or None, expect)
