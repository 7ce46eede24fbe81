"""The miss channel of a NetdevPort: tc catch-all -> per-port veth -> flowpath.

Theory of operation
-------------------
An AF_PACKET tap sees a packet *before* tc ingress.  If the port's ingress
holds flower filters that forward some traffic, a raw socket on the port
would also see that traffic and flowpath would forward it a second time.  So
on a port where tc handles traffic, flowpath does not listen on the port:

    peer ──> [port ingress: flower prio 1..N (offloaded/tc megaflows)]
                 │ miss
                 └─ catch-all, prio MISS_PRIO (65535, lowest), chain 0,
                    protocol all: matchall action mirred egress redirect
                          │
                          v
             fpm<ifindex>t ══veth══ fpm<ifindex>r  <── flowpath's rx socket

* A packet that a flower filter forwards (redirect/drop/...) ends in tc and
  never reaches the catch-all: flowpath does not see it.
* A packet no filter takes falls through to the catch-all at the lowest
  priority, which redirects it into the miss veth ``fpm<ifindex>t``; it comes
  out of the peer ``fpm<ifindex>r``, where flowpath's rx socket reads it.
  ``in_port`` is the ``port_no`` of the ``NetdevPort`` owning that miss
  device: a miss veth serves exactly one port.
* Nothing the catch-all redirects continues to the port's own stack, and
  flowpath transmits on the port itself (egress), which no ingress filter
  sees: nothing loops.
* The miss veths carry no addresses, have IPv6 and ARP off and are never
  transmitted on by anyone but the catch-all, so nothing else appears there.
* The catch-all is matchall when the kernel has it (cls_matchall), else u32
  ``match u32 0 0`` (this host's kernel has u32 + mirred but neither matchall
  nor flower).  It sits at a fixed (chain, prio): re-running setup adopts a
  catch-all that already redirects to the port's miss veth, so a restart
  keeps misses flowing without a gap.
  Only flowpath's prio is ever deleted (with kind, prio and handle), and the
  ingress qdisc only if flowpath created it and no filter is left on it.
* A flow in another chain (``goto chain`` for recirculation) needs its own
  catch-all in that chain: ``setup_miss_channel(..., chain=N)``.

Without tc on a port (pure software mode, ``NetdevPort(miss=False)``) the
rx socket listens on the port itself: it is then the miss channel, since
nothing else handles the port's traffic.

``install_catchall``/``remove_catchall`` are the only tc calls here (tc CLI,
so the offload layer can take them over later as one unit).

Namespaces: ``in_netns`` runs a block (and the subprocesses it starts) in
another network namespace, on the calling thread only; sockets created there
stay bound to it.  This module and ``swpath/ports.py`` are swpath's I/O edge.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import structlog

from dpif.errors import DeviceError

log = structlog.get_logger("swpath.miss")

#: tc priority of the miss catch-all: the lowest there is, so every flower
#: filter of flowpath (and anyone else) is tried first.
MISS_PRIO = 0xFFFF
#: tc handle of the catch-all (fixed, so a delete names exactly this filter).
MISS_HANDLE = 1
CLONE_NEWNET = 0x40000000


_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(netns: str) -> str:
    return netns if "/" in netns else f"/run/netns/{netns}"


@contextmanager
def in_netns(netns: str | None) -> Iterator[None]:
    """Run the body (and subprocesses it starts) in ``netns``; this thread only."""
    if netns is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise DeviceError("network namespace not found", netns=netns) from exc
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise DeviceError(f"setns failed: {os.strerror(err)}", netns=netns)
        finally:
            os.close(target)
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover - cannot recover
                raise RuntimeError("cannot return to the original network namespace")
    finally:
        os.close(own)


def _tc(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["tc", *args], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise DeviceError("tc failed: " + (proc.stderr.strip() or proc.stdout.strip()),
                          command="tc " + " ".join(args))
    return proc


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise DeviceError("ip failed: " + proc.stderr.strip(), command="ip " + " ".join(args))


def _catchall_now(dev: str, prio: int, chain: int) -> tuple[str | None, set[str]]:
    """(classifier kind at our (chain, prio), devices its actions redirect to)."""
    proc = _tc("-j", "filter", "show", "dev", dev, "ingress", "prio", str(prio), "chain",
               str(chain), check=False)
    try:
        entries = json.loads(proc.stdout or "[]")
    except ValueError:
        entries = []
    kind = next((e.get("kind") for e in entries if e.get("kind")), None)
    targets = {a.get("to_dev") for e in entries
               for a in e.get("options", {}).get("actions", []) if a.get("to_dev")}
    return kind, targets


def install_catchall(dev: str, redirect_to: str, *, prio: int = MISS_PRIO,
                     chain: int = 0) -> tuple[str, bool]:
    """Put the miss catch-all on ``dev``'s ingress, redirecting to ``redirect_to``.

    Returns (classifier kind used, whether we created the ingress qdisc).
    Idempotent: a catch-all already at (chain, prio) that redirects to
    ``redirect_to`` is adopted untouched (traffic keeps flowing through a
    restart); anything else at that prio (ours alone) is replaced.
    cls_matchall refuses ``replace`` of an existing filter (EEXIST), hence
    look first, then delete + add.
    """
    created = _tc("qdisc", "add", "dev", dev, "ingress", check=False).returncode == 0
    kind, targets = _catchall_now(dev, prio, chain)
    if kind in ("matchall", "u32") and targets == {redirect_to}:
        return kind, created
    where = ["dev", dev, "ingress", "protocol", "all", "prio", str(prio), "chain", str(chain)]
    if kind is not None:
        remove_catchall(dev, kind, prio=prio, chain=chain)
    action = ["action", "mirred", "egress", "redirect", "dev", redirect_to]
    mall = _tc("filter", "add", *where, "handle", str(MISS_HANDLE), "matchall", *action,
               check=False)
    if mall.returncode == 0:
        return "matchall", created
    # No cls_matchall in this kernel: u32 "match u32 0 0" matches every packet.
    _tc("filter", "add", *where, "u32", "match", "u32", "0", "0", *action)
    return "u32", created


def remove_catchall(dev: str, kind: str, *, prio: int = MISS_PRIO, chain: int = 0,
                    remove_qdisc: bool = False) -> None:
    """Delete exactly flowpath's catch-all (never a chain flush); the ingress qdisc too
    if ``remove_qdisc`` and no other filter is left on it."""
    where = ["dev", dev, "ingress", "protocol", "all", "prio", str(prio), "chain", str(chain)]
    if kind == "matchall":
        _tc("filter", "del", *where, "handle", str(MISS_HANDLE), "matchall", check=False)
    else:
        _tc("filter", "del", *where, kind, check=False)
    if remove_qdisc:
        left = _tc("filter", "show", "dev", dev, "ingress", check=False).stdout.strip()
        if not left:
            _tc("qdisc", "del", "dev", dev, "ingress", check=False)


@dataclass(frozen=True, slots=True)
class MissChannel:
    """A port's miss channel: tc catch-all on ``port`` -> veth ``tap`` -> ``reader``."""

    port: str
    tap: str
    reader: str
    kind: str
    prio: int = MISS_PRIO
    chain: int = 0
    created_qdisc: bool = False


def _quiet_link(dev: str) -> None:
    """No addresses, no IPv6, no ARP: the kernel never transmits on it."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6", "w") as f:
            f.write("1\n")
    except OSError:
        pass  # no IPv6 in this kernel
    _ip("link", "set", "dev", dev, "arp", "off", "up")


def exists(dev: str) -> bool:
    """Whether ``dev`` exists in this thread's netns (/sys/class/net shows the mount's)."""
    try:
        socket.if_nametoindex(dev)
    except OSError:
        return False
    return True


def setup_miss_channel(port: str, *, chain: int = 0, prio: int = MISS_PRIO) -> MissChannel:
    """Create (or adopt) the miss veth pair of ``port`` and install its catch-all.

    Call inside the port's namespace (see ``in_netns``)."""
    try:
        ifindex = socket.if_nametoindex(port)
    except OSError as exc:
        raise DeviceError("port netdev not found", port=port) from exc
    tap, reader = f"fpm{ifindex}t", f"fpm{ifindex}r"
    if not exists(tap):
        _ip("link", "add", tap, "type", "veth", "peer", "name", reader)
    for dev in (tap, reader):
        _quiet_link(dev)
    kind, created = install_catchall(port, tap, prio=prio, chain=chain)
    log.info("miss channel up", port=port, tap=tap, reader=reader, classifier=kind,
             prio=prio, chain=chain)
    return MissChannel(port, tap, reader, kind, prio, chain, created)


def teardown_miss_channel(mc: MissChannel) -> None:
    """Remove the catch-all (first, so traffic goes back to the stack) and the veths."""
    remove_catchall(mc.port, mc.kind, prio=mc.prio, chain=mc.chain,
                    remove_qdisc=mc.created_qdisc)
    subprocess.run(["ip", "link", "del", mc.tap], capture_output=True, timeout=30)
