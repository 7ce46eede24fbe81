"""``flowpath switchdev ...``: eswitches, representors, hw-tc-offload, mode set."""

from __future__ import annotations

from typing import Any

import click

from cli.common import JSON_OPTION, NETNS_OPTION, emit_json
from dpif.errors import FlowpathError
from offload.eswitch import Eswitch, EswitchMode, EswitchPort, Topology


@click.group()
def switchdev() -> None:
    """Hardware eswitches (devlink): show, set mode."""


def port_json(p: EswitchPort, tc_offload: str) -> dict[str, Any]:
    return {"netdev": p.netdev, "ifindex": p.ifindex,
            "flavour": p.flavour.value if p.flavour else None,
            "representor": p.is_representor, "controller": p.controller,
            "pf": p.pf, "vf": p.vf, "sf": p.sf, "number": p.number, "split": p.split,
            "devlink_index": p.index, "external": p.external, "hw_tc_offload": tc_offload}


def eswitch_json(sw: Eswitch, offload_of: dict[str, str]) -> dict[str, Any]:
    return {"handle": sw.handle, "name": sw.name,
            "mode": sw.mode.value if sw.mode else None, "switch_id": sw.switch_id,
            "ports": [port_json(p, offload_of.get(p.netdev or "", "n/a")) for p in sw.ports]}


def _where(p: EswitchPort) -> str:
    parts = []
    if p.controller is not None:
        parts.append(f"c{p.controller}")
    if p.pf is not None:
        parts.append(f"pf{p.pf}")
    if p.vf is not None:
        parts.append(f"vf{p.vf}")
    if p.sf is not None:
        parts.append(f"sf{p.sf}")
    if p.number is not None and p.pf is None:
        parts.append(f"port{p.number}")
    if p.split is not None:
        parts.append(f"s{p.split}")
    return "".join(parts) or "-"


def render_topology(topo: Topology, offload_of: dict[str, str]) -> str:
    out: list[str] = []
    if not topo.eswitches:
        return "no eswitches (no devlink device with ports, no phys_switch_id)"
    for sw in topo:
        mode = sw.mode.value if sw.mode else "n/a"
        out.append(f"eswitch {sw.name}: mode {mode}, switch_id {sw.switch_id or '-'}")
        out.append(f"  {'netdev':<16} {'flavour':<9} {'port':<10} {'ifindex':>7}  hw-tc-offload")
        for p in sw.ports:
            flav = p.flavour.value if p.flavour else "-"
            out.append(f"  {p.netdev or '-':<16} {flav:<9} {_where(p):<10} "
                       f"{p.ifindex if p.ifindex is not None else '-':>7}  "
                       f"{offload_of.get(p.netdev or '', 'n/a')}")
    return "\n".join(out)


@switchdev.command()
@NETNS_OPTION
@JSON_OPTION
def show(netns: str | None, as_json: bool) -> None:
    """Eswitches: devlink handle, mode, switch id, ports with flavour and pf/vf/sf,
    and each port netdev's hw-tc-offload feature (on / off / off [fixed] / n/a)."""
    from offload.switchdev import Switchdev
    offload_of: dict[str, str] = {}
    with Switchdev(netns) as sd:
        topo = sd.discover()
        for sw in topo:
            for p in sw.ports:
                if p.netdev is None:
                    continue
                try:
                    st = sd.tc_offload(p.netdev)
                    offload_of[p.netdev] = ("on" if st.active else "off") + \
                        ("" if st.available else " [fixed]")
                except FlowpathError:
                    offload_of[p.netdev] = "n/a"
    if as_json:
        emit_json([eswitch_json(sw, offload_of) for sw in topo])
    else:
        click.echo(render_topology(topo, offload_of))


@switchdev.command()
@click.argument("handle", metavar="BUS/DEV")
@click.argument("mode", type=click.Choice([m.value for m in EswitchMode]))
@NETNS_OPTION
def mode(handle: str, mode: str, netns: str | None) -> None:
    """Set the eswitch mode of devlink device BUS/DEV (e.g. pci/0000:03:00.0)."""
    from offload.switchdev import Switchdev
    with Switchdev(netns) as sd:
        sd.set_eswitch_mode(handle, EswitchMode(mode))
        now = sd.eswitch_mode(handle)
    click.echo(f"{handle}: eswitch mode {now.value if now else 'n/a'}")
