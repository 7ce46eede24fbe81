"""Kernel-tier helpers: network namespaces, veth pairs and netdevsim devices.

Theory of operation
-------------------
Every kernel-tier test (``@pytest.mark.kernel``) builds its own little world
out of *fresh, uniquely named* network namespaces and removes it afterwards,
so tests never touch the host's (or the VM's) init namespace and never see
each other's devices.  Everything here drives the ``ip``/``tc``/``devlink``
command line tools: they are an oracle independent of flowpath's own netlink
code (pyroute2 plugins in ``offload/``), so a test can install with one and
check with the other.

The fixtures are registered for the whole ``tests/`` tree by
``tests/conftest.py``; use them from any test file (import helpers and types
as ``from tests.kernel.netns import Netns, run, ...``), e.g.::

    import pytest

    @pytest.mark.kernel
    def test_something(netns_factory, veth_factory, netdevsim_factory):
        left, right = netns_factory("left"), netns_factory("right")
        pair = veth_factory(left, "vl0", right, "vr0",
                            addr_a="10.9.0.1/24", addr_b="10.9.0.2/24")
        left.run("ping", "-c1", "-W2", "10.9.0.2")
        nsim = netdevsim_factory(num_vfs=2)          # own netns, switchdev
        rep = nsim.representors["pf0vf0"]             # netdev name
        nsim.ns.tc("qdisc", "add", "dev", rep, "ingress")

pyroute2 in a namespace: ``IPRoute(netns=ns.name)`` or
``pyroute2.NetNS(ns.name)`` (the namespace is ``/run/netns/<ns.name>``).

Missing kernel features: call :func:`skip_or_fail` (never ``pytest.skip``
directly for a kernel feature).  It skips when the kernel tier is optional and
*fails* when ``FLOWPATH_KERNEL_TIER=required`` (set by the VM runner), so a
VM that silently lacks cls_flower cannot make the tier green.  In required
mode ``tests/conftest.py`` also turns any other skip of a kernel test into a
failure.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import secrets
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")

import pytest

#: Environment variable; "required" turns kernel-feature skips into failures.
REQUIRED_ENV = "FLOWPATH_KERNEL_TIER"

NETDEVSIM_BUS = Path("/sys/bus/netdevsim")

#: Default bound for every command run by these helpers (seconds).
CMD_TIMEOUT = 30.0

_counter = itertools.count()

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class CommandError(AssertionError):
    """A command run by a helper exited non-zero (carries argv and output)."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"command {' '.join(self.argv)!r} exited {returncode}: "
            f"{stderr.strip() or stdout.strip()}"
        )


def kernel_tier_required() -> bool:
    """True when running as the required kernel tier (inside the VM runner)."""
    return os.environ.get(REQUIRED_ENV, "") == "required"


def skip_or_fail(reason: str) -> None:
    """Skip the current test for a missing kernel feature — or fail in required mode."""
    if kernel_tier_required():
        pytest.fail(f"kernel tier is required but: {reason}", pytrace=False)
    pytest.skip(reason)


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    timeout: float = CMD_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (no shell), capture text output; raise CommandError if check and rc != 0."""
    proc = subprocess.run(
        list(argv),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
    return proc


def run_json(argv: Sequence[str], *, timeout: float = CMD_TIMEOUT) -> Any:
    """Run a ``-j`` command (ip/tc/devlink) and decode its JSON (empty output -> [])."""
    out = run(argv, timeout=timeout).stdout.strip()
    return json.loads(out) if out else []


def unique_name(prefix: str = "fp") -> str:
    """A name unique across processes and runs: ``<prefix>-<pid>-<n>-<random>``."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}-{secrets.token_hex(2)}"


@dataclass
class Netns:
    """A named network namespace (``/run/netns/<name>``) and commands inside it."""

    name: str

    @property
    def path(self) -> str:
        """Path of the namespace file (for setns / pyroute2)."""
        return f"/run/netns/{self.name}"

    def argv(self, *argv: str) -> list[str]:
        """``argv`` prefixed to run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, *argv: str, check: bool = True, input: str | None = None, timeout: float = CMD_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace (see :func:`run`)."""
        return run(self.argv(*argv), check=check, input=input, timeout=timeout)

    def json(self, *argv: str, timeout: float = CMD_TIMEOUT) -> Any:
        """Run a JSON-printing command inside the namespace, e.g. ``ns.json("tc", "-s", "-j", ...)``."""
        return run_json(self.argv(*argv), timeout=timeout)

    def popen(self, *argv: str, **kwargs: Any) -> subprocess.Popen[str]:
        """Start a command inside the namespace (text mode; caller waits/kills it)."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.argv(*argv), text=True, **kwargs)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in a short-lived thread that has entered this
        namespace (setns affects only that thread) and return its result.  No
        subprocess: cheap even under TCG.  Sockets and /proc/sys/net files opened
        there stay bound to this namespace."""
        box: dict[str, Any] = {}

        def body() -> None:
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns({self.path}): {os.strerror(err)}")
                finally:
                    os.close(fd)
                box["value"] = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the caller
                box["error"] = exc

        t = threading.Thread(target=body, name=f"netns-{self.name}")
        t.start()
        t.join()
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM, proto: int = 0) -> socket.socket:
        """A socket created inside this namespace (usable from any thread afterwards)."""
        return self.call(socket.socket, family, type, proto)

    def sysctl(self, key: str, value: str) -> None:
        """Write ``/proc/sys/<key with dots as slashes>`` inside this namespace."""
        path = "/proc/sys/" + key.replace(".", "/")

        def write() -> None:
            with open(path, "w") as f:
                f.write(value)

        self.call(write)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``ip -n <ns> <args>``."""
        return run(["ip", "-n", self.name, *args], check=check)

    def tc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``tc -n <ns> <args>``."""
        return run(["tc", "-n", self.name, *args], check=check)

    def devlink(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``devlink <args>`` inside the namespace (devlink instances are per-netns)."""
        return self.run("devlink", *args, check=check)

    def link(self, ifname: str) -> dict[str, Any]:
        """``ip -d -j link show dev <ifname>`` as one dict."""
        links = run_json(["ip", "-n", self.name, "-d", "-j", "link", "show", "dev", ifname])
        assert len(links) == 1, links
        return dict(links[0])

    def links(self) -> list[dict[str, Any]]:
        """All links in the namespace (``ip -d -j link show``)."""
        return list(run_json(["ip", "-n", self.name, "-d", "-j", "link", "show"]))

    def tc_filters(self, dev: str, parent: str = "ingress") -> list[dict[str, Any]]:
        """``tc -s -j filter show dev <dev> <parent>``; only entries with options (real filters)."""
        out = run_json(["tc", "-n", self.name, "-s", "-j", "filter", "show", "dev", dev, parent])
        return [f for f in out if "options" in f]


def create_netns(prefix: str = "fp") -> Netns:
    """Create a fresh uniquely named namespace with ``lo`` up."""
    ns = Netns(unique_name(prefix))
    run(["ip", "netns", "add", ns.name])
    run(["ip", "-n", ns.name, "link", "set", "lo", "up"])
    return ns


def delete_netns(ns: Netns) -> None:
    """Delete a namespace (its veths go with it); missing namespaces are ignored."""
    run(["ip", "netns", "del", ns.name], check=False)


def _write_file(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


@dataclass
class VethPair:
    """A veth pair ``ns_a/name_a <-> ns_b/name_b`` with the MAC address of each end."""

    ns_a: Netns
    name_a: str
    ns_b: Netns
    name_b: str
    mac_a: str
    mac_b: str


def create_veth(
    ns_a: Netns,
    name_a: str,
    ns_b: Netns,
    name_b: str,
    *,
    addr_a: str | None = None,
    addr_b: str | None = None,
    up: bool = True,
) -> VethPair:
    """Create a veth pair between two namespaces (names >= 2 chars: ``ip`` parses ``a`` as
    "address"), optionally assign ``addr_*`` (CIDR) and bring both ends up.  Disables IPv6
    on both ends so autoconf/MLD chatter never lands in counters."""
    for n in (name_a, name_b):
        assert 2 <= len(n) <= 15, f"bad interface name {n!r}"
    run(["ip", "-n", ns_a.name, "link", "add", name_a, "type", "veth",
         "peer", "name", name_b, "netns", ns_b.name])
    for ns, name, addr in ((ns_a, name_a, addr_a), (ns_b, name_b, addr_b)):
        try:
            ns.call(_write_file, f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "1")
        except OSError:
            pass  # no IPv6 in this kernel: nothing to silence
        if addr:
            ns.ip("addr", "add", addr, "dev", name)
        if up:
            ns.ip("link", "set", name, "up")
    return VethPair(ns_a, name_a, ns_b, name_b,
                    ns_a.link(name_a)["address"], ns_b.link(name_b)["address"])


@dataclass
class NetdevsimDevice:
    """A netdevsim device (``/sys/bus/netdevsim/devices/netdevsim<id>``) living in ``ns``.

    ``devlink_handle`` is ``netdevsim/netdevsim<id>``; ``uplinks`` are the netdevs of the
    physical ports; ``representors`` maps ``phys_port_name`` (``pf0vf0``...) to the VF
    representor's netdev name (``eni<id>npf0vf0`` with udev, ``ethN`` in the VM);
    ``ports`` is devlink's port list (``devlink -j port show``).
    """

    id: int
    ns: Netns
    num_vfs: int
    devlink_handle: str
    uplinks: list[str] = field(default_factory=list)
    representors: dict[str, str] = field(default_factory=dict)
    ports: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sysfs(self) -> Path:
        return NETDEVSIM_BUS / "devices" / f"netdevsim{self.id}"

    def refresh(self) -> None:
        """Re-read ports, uplinks and representors from devlink."""
        data = self.ns.json("devlink", "-j", "port", "show")
        ports = [
            dict(v, handle=k)
            for k, v in data.get("port", {}).items()
            if k.startswith(self.devlink_handle + "/")
        ]
        self.ports = ports
        self.uplinks = [p["netdev"] for p in ports if p.get("flavour") == "physical" and "netdev" in p]
        self.representors = {
            f"pf{p.get('pfnum', 0)}vf{p['vfnum']}": p["netdev"]
            for p in ports
            if p.get("flavour") == "pcivf" and "netdev" in p
        }


def netdevsim_available() -> bool:
    """True if the netdevsim bus exists (module loaded or built in)."""
    return (NETDEVSIM_BUS / "new_device").exists()


def _free_netdevsim_id() -> int:
    used = {int(p.name.removeprefix("netdevsim")) for p in (NETDEVSIM_BUS / "devices").glob("netdevsim*")}
    while True:
        cand = 1000 + secrets.randbelow(60000)
        if cand not in used:
            return cand


def create_netdevsim(ns: Netns, *, num_vfs: int = 2, num_ports: int = 1, switchdev: bool = True) -> NetdevsimDevice:
    """Create a netdevsim device whose netdevs and devlink instance live in ``ns``,
    enable ``num_vfs`` VFs and (if ``switchdev``) put the eswitch into switchdev mode,
    which creates one representor per VF."""
    if not netdevsim_available():
        skip_or_fail("netdevsim is not available (no /sys/bus/netdevsim; insmod netdevsim.ko)")
    dev_id = _free_netdevsim_id()
    # Written from inside ns: netdevsim creates its netdevs in the writer's netns.
    ns.run("sh", "-c", f"echo '{dev_id} {num_ports}' > {NETDEVSIM_BUS}/new_device")
    dev = NetdevsimDevice(dev_id, ns, num_vfs, f"netdevsim/netdevsim{dev_id}")
    try:
        deadline = time.monotonic() + 10
        while not (dev.sysfs / "sriov_numvfs").exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"{dev.sysfs} did not appear")
            time.sleep(0.05)
        if num_vfs:
            (dev.sysfs / "sriov_numvfs").write_text(f"{num_vfs}\n")
        if switchdev:
            ns.devlink("dev", "eswitch", "set", dev.devlink_handle, "mode", "switchdev")
        dev.refresh()
    except BaseException:
        delete_netdevsim(dev)
        raise
    return dev


def delete_netdevsim(dev: NetdevsimDevice) -> None:
    """Remove the device (and its netdevs); ignores a device that is already gone."""
    if dev.sysfs.exists():
        try:
            (NETDEVSIM_BUS / "del_device").write_text(f"{dev.id}\n")
        except OSError:
            pass


# --- feature probes --------------------------------------------------------------------

_probe_cache: dict[str, str | None] = {}


def probe_tc_flower() -> str | None:
    """None if a skip_hw flower filter with a gact action can be added on a veth,
    else the reason it could not (cached per process)."""
    if "flower" not in _probe_cache:
        ns = None
        try:
            ns = create_netns("fpprobe")
            ns.ip("link", "add", "prb0", "type", "veth", "peer", "name", "prb1")
            ns.tc("qdisc", "add", "dev", "prb0", "ingress")
            ns.tc("filter", "add", "dev", "prb0", "ingress", "protocol", "ip", "prio", "1",
                  "flower", "skip_hw", "ip_proto", "udp", "action", "drop")
            _probe_cache["flower"] = None
        except (CommandError, OSError, subprocess.SubprocessError) as exc:
            _probe_cache["flower"] = f"tc flower unusable: {exc}"
        finally:
            if ns is not None:
                delete_netns(ns)
    return _probe_cache["flower"]


def require_root_netns() -> None:
    """Skip (or fail, when required) unless we are root and can create namespaces."""
    if os.geteuid() != 0:
        skip_or_fail("kernel tier needs root")
    if "netns" not in _probe_cache:
        try:
            ns = create_netns("fpprobe")
            delete_netns(ns)
            _probe_cache["netns"] = None
        except (CommandError, OSError, subprocess.SubprocessError) as exc:
            _probe_cache["netns"] = f"cannot create network namespaces: {exc}"
    reason = _probe_cache["netns"]
    if reason:
        skip_or_fail(reason)


# --- fixtures (re-exported by tests/conftest.py) -----------------------------------------

NetnsFactory = Callable[..., Netns]
VethFactory = Callable[..., VethPair]
NetdevsimFactory = Callable[..., NetdevsimDevice]


@pytest.fixture
def netns_factory() -> Iterator[NetnsFactory]:
    """``netns_factory(prefix="fp") -> Netns``: fresh namespaces, all deleted after the test.
    Skips (fails when required) unless root and namespaces work."""
    require_root_netns()
    made: list[Netns] = []

    def make(prefix: str = "fp") -> Netns:
        ns = create_netns(prefix)
        made.append(ns)
        return ns

    yield make
    for ns in reversed(made):
        delete_netns(ns)


@pytest.fixture
def netns(netns_factory: NetnsFactory) -> Netns:
    """One fresh network namespace (deleted after the test)."""
    return netns_factory()


@pytest.fixture
def veth_factory(netns_factory: NetnsFactory) -> VethFactory:
    """``veth_factory(ns_a, name_a, ns_b, name_b, *, addr_a=None, addr_b=None, up=True)
    -> VethPair``; see :func:`create_veth`.  Removed with the namespaces."""
    return create_veth


@pytest.fixture
def tc_flower() -> None:
    """Require working tc flower (cls_flower + act_gact + sch_ingress): skip/fail otherwise."""
    require_root_netns()
    reason = probe_tc_flower()
    if reason:
        skip_or_fail(reason)


@pytest.fixture
def netdevsim_factory(netns_factory: NetnsFactory) -> Iterator[NetdevsimFactory]:
    """``netdevsim_factory(num_vfs=2, *, num_ports=1, switchdev=True, ns=None)
    -> NetdevsimDevice``.  Without ``ns`` the device gets its own fresh namespace.
    Every device is deleted (``del_device``) after the test, before its namespace."""
    made: list[NetdevsimDevice] = []

    def make(num_vfs: int = 2, *, num_ports: int = 1, switchdev: bool = True,
             ns: Netns | None = None) -> NetdevsimDevice:
        dev = create_netdevsim(ns or netns_factory("fpnsim"), num_vfs=num_vfs,
                               num_ports=num_ports, switchdev=switchdev)
        made.append(dev)
        return dev

    yield make
    for dev in reversed(made):
        delete_netdevsim(dev)


@pytest.fixture
def netdevsim(netdevsim_factory: NetdevsimFactory) -> NetdevsimDevice:
    """A netdevsim device with 2 VFs in switchdev mode, in its own fresh namespace."""
    return netdevsim_factory(2)
