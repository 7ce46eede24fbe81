"""Kernel smoke tests: the facts the rest of flowpath builds on, checked with
the iproute2/devlink CLIs as an independent oracle, each in fresh namespaces."""

from __future__ import annotations

import socket

import pytest

from tests.kernel.netns import (
    Netns,
    NetdevsimDevice,
    NetdevsimFactory,
    NetnsFactory,
    VethFactory,
    create_netns,
    delete_netns,
    run,
)

pytestmark = pytest.mark.kernel

NETDEVSIM_REFUSAL = "netdevsim: only offload of BPF classifiers supported."


def _eswitch_mode(dev: NetdevsimDevice) -> str:
    data = dev.ns.json("devlink", "-j", "dev", "eswitch", "show", dev.devlink_handle)
    return str(data["dev"][dev.devlink_handle]["mode"])


def test_netdevsim_switchdev_shows_vf_representors(netdevsim: NetdevsimDevice) -> None:
    ns = netdevsim.ns
    assert _eswitch_mode(netdevsim) == "switchdev"
    assert set(netdevsim.representors) == {"pf0vf0", "pf0vf1"}
    switch_ids = set()
    for port_name, ifname in netdevsim.representors.items():
        link = ns.link(ifname)
        assert link["ifname"] == ifname
        assert link["phys_port_name"] == port_name
        assert link.get("parentbus") == "netdevsim"
        assert link.get("parentdev") == f"netdevsim{netdevsim.id}"
        if ifname.startswith("eni"):  # udev's predictable name, when udev runs
            assert ifname == f"eni{netdevsim.id}n{port_name}"
        # sysfs agrees with rtnetlink (ip netns exec mounts this netns's sysfs)
        sysfs = ns.run("cat", f"/sys/class/net/{ifname}/phys_port_name").stdout.strip()
        assert sysfs == port_name
        switch_ids.add(link["phys_switch_id"])
    assert netdevsim.uplinks, "no physical port netdev"
    for uplink in netdevsim.uplinks:
        switch_ids.add(ns.link(uplink)["phys_switch_id"])
    assert len(switch_ids) == 1, f"representors and uplink on different switches: {switch_ids}"


def test_netdevsim_legacy_mode_has_no_representors(netdevsim_factory: NetdevsimFactory) -> None:
    dev = netdevsim_factory(2, switchdev=False)
    assert _eswitch_mode(dev) == "legacy"
    assert dev.representors == {}
    assert [p["flavour"] for p in dev.ports] == ["physical"]


def _counter(ns: Netns, dev: str, pref: int) -> int:
    [flt] = [f for f in ns.tc_filters(dev) if f["pref"] == pref]
    return int(flt["options"]["actions"][0]["stats"]["packets"])


def _receive(sock: socket.socket, want: int, timeout: float = 10.0) -> int:
    """Receive up to ``want`` datagrams (bounded by ``timeout``), then linger briefly
    so that a duplicate beyond ``want`` would be counted too."""
    got = 0
    sock.settimeout(timeout)
    try:
        while got < want:
            sock.recv(2048)
            got += 1
        sock.settimeout(0.3)
        while True:
            sock.recv(2048)
            got += 1
    except socket.timeout:
        pass
    return got


def test_skip_hw_flower_redirect_forwards_between_namespaces(
    netns_factory: NetnsFactory, veth_factory: VethFactory, tc_flower: None
) -> None:
    """nsA --veth-- [ingress flower skip_hw: mirred redirect] nsM --veth-- nsB."""
    count, port = 25, 5555
    ns_a, ns_m, ns_b = netns_factory("fpa"), netns_factory("fpm"), netns_factory("fpb")
    veth_factory(ns_a, "va0", ns_m, "ma0", addr_a="10.77.0.1/24")
    right = veth_factory(ns_m, "mb0", ns_b, "vb0", addr_b="10.77.0.2/24")
    # nsM has no IP stack in the way: only tc forwards, so no ARP; pin the neighbour.
    ns_a.ip("neigh", "replace", "10.77.0.2", "lladdr", right.mac_b, "dev", "va0", "nud", "permanent")
    ns_m.tc("qdisc", "add", "dev", "ma0", "ingress")
    ns_m.tc("filter", "add", "dev", "ma0", "ingress", "protocol", "ip", "prio", "10",
            "flower", "skip_hw", "dst_ip", "10.77.0.2", "ip_proto", "udp", "dst_port", str(port),
            "action", "mirred", "egress", "redirect", "dev", "mb0")
    [flt] = ns_m.tc_filters("ma0")
    assert flt["kind"] == "flower"
    assert flt["options"]["skip_hw"] is True
    assert flt["options"]["not_in_hw"] is True
    assert _counter(ns_m, "ma0", 10) == 0

    with ns_b.socket() as rx, ns_a.socket() as tx:
        rx.bind(("10.77.0.2", port))
        for i in range(count):
            tx.sendto(b"flowpath-smoke-%d" % i, ("10.77.0.2", port))
        assert _receive(rx, count) == count
    assert _counter(ns_m, "ma0", 10) == count


def test_skip_sw_flower_on_netdevsim_representor_is_refused(
    netdevsim: NetdevsimDevice, tc_flower: None
) -> None:
    ns, rep = netdevsim.ns, netdevsim.representors["pf0vf0"]
    ns.tc("qdisc", "add", "dev", rep, "ingress")
    proc = ns.tc("filter", "add", "dev", rep, "ingress", "protocol", "ip", "prio", "1",
                 "flower", "skip_sw", "ip_proto", "udp", "action", "drop", check=False)
    assert proc.returncode != 0
    assert NETDEVSIM_REFUSAL in proc.stderr
    assert ns.tc_filters(rep) == []


def test_flower_without_skip_sw_on_representor_is_accepted_not_in_hw(
    netdevsim: NetdevsimDevice, tc_flower: None
) -> None:
    ns, rep = netdevsim.ns, netdevsim.representors["pf0vf1"]
    ns.tc("qdisc", "add", "dev", rep, "ingress")
    ns.tc("filter", "add", "dev", rep, "ingress", "protocol", "ip", "prio", "1",
          "flower", "skip_hw", "ip_proto", "udp", "action", "drop")
    ns.tc("filter", "add", "dev", rep, "ingress", "protocol", "ip", "prio", "2",
          "flower", "ip_proto", "tcp", "action", "drop")
    filters = {f["pref"]: f["options"] for f in ns.tc_filters(rep)}
    assert set(filters) == {1, 2}
    assert filters[1].get("skip_hw") is True
    assert all(opts.get("not_in_hw") is True for opts in filters.values())


def test_netns_helpers_create_and_clean_up(veth_factory: VethFactory, netns_factory: NetnsFactory) -> None:
    left, right = netns_factory("fpl"), netns_factory("fpr")
    pair = veth_factory(left, "vl0", right, "vr0", addr_a="10.78.0.1/24", addr_b="10.78.0.2/24")
    assert pair.mac_a != pair.mac_b
    # A real round trip (ARP included) through the pair, sockets made in each netns.
    with left.socket() as sl, right.socket() as sr:
        sr.bind(("10.78.0.2", 7001))
        sl.bind(("10.78.0.1", 7002))
        sl.sendto(b"ping", ("10.78.0.2", 7001))
        sr.settimeout(10)
        data, peer = sr.recvfrom(64)
        assert (data, peer) == (b"ping", ("10.78.0.1", 7002))
        sr.sendto(b"pong", peer)
        sl.settimeout(10)
        assert sl.recv(64) == b"pong"
    names = run(["ip", "netns", "list"]).stdout
    assert left.name in names and right.name in names
    extra = create_netns("fptmp")
    delete_netns(extra)
    assert extra.name not in run(["ip", "netns", "list"]).stdout
