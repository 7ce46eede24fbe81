"""Printing OpenFlow action lists the way ovs-ofctl does (``lib/ofp-actions.c``).

``format_actions(parse_actions(t))`` prints ``t`` back in canonical form; the
parser is ``ofproto.actiontext``.  The two tables below are shared by both.
"""

from __future__ import annotations

from ofproto import ofactions as A
from ofproto.offields import of_field
from ofproto.ofvalues import c_hex, format_port, format_value

# mod_<x>:V -> SetField(field, V, all ones, spelling=mod_<x>)
MOD_ACTIONS: dict[str, str] = {
    "mod_dl_src": "dl_src", "mod_dl_dst": "dl_dst",
    "mod_nw_src": "nw_src", "mod_nw_dst": "nw_dst",
    "mod_nw_tos": "nw_tos", "mod_nw_ecn": "nw_ecn", "mod_nw_ttl": "nw_ttl",
    "mod_tp_src": "tp_src", "mod_tp_dst": "tp_dst",
}

# Reserved output ports that are actions of their own, with their printed name.
PORT_ACTIONS: tuple[tuple[str, type], ...] = (
    ("IN_PORT", A.InPort), ("NORMAL", A.Normal), ("FLOOD", A.Flood), ("ALL", A.All),
    ("LOCAL", A.Local),
)
_PORT_ACTION_NAME = {cls: n for n, cls in PORT_ACTIONS}


def _format_subfield(name: str, ofs: int, n_bits: int) -> str:
    f = of_field(name)
    if ofs == 0 and n_bits == f.bits:
        return f"{name}[]"
    if n_bits == 1:
        return f"{name}[{ofs}]"
    return f"{name}[{ofs}..{ofs + n_bits - 1}]"


# --- printing ---------------------------------------------------------------

def _f_set_field(a: A.SetField) -> str:
    f = of_field(a.field)
    if a.spelling in MOD_ACTIONS:
        return f"{a.spelling}:{format_value(f, a.value, a.mask)}"
    if a.spelling == "load":
        ofs = (a.mask & -a.mask).bit_length() - 1
        n_bits = (a.mask >> ofs).bit_length()
        if a.mask == ((1 << n_bits) - 1) << ofs:
            return f"load:{c_hex(a.value >> ofs)}->{_format_subfield(a.field, ofs, n_bits)}"
    return f"set_field:{format_value(f, a.value, a.mask)}->{a.field}"


def _f_controller(a: A.Controller) -> str:
    if a.reason == "action" and not a.userdata:
        return f"CONTROLLER:{a.max_len}"
    parts = []
    if a.reason != "action":
        parts.append(f"reason={a.reason}")
    if a.max_len != 0xFFFF:
        parts.append(f"max_len={a.max_len}")
    if a.userdata:
        parts.append("userdata=" + ".".join(f"{b:02x}" for b in a.userdata))
    return f"controller({','.join(parts)})"


def _f_resubmit(a: A.Resubmit) -> str:
    if a.port is not None and a.table is None:
        return f"resubmit:{format_port(a.port)}"
    port = "" if a.port is None else format_port(a.port)
    table = "" if a.table is None else str(a.table)
    return f"resubmit({port},{table})"


def _f_nat(n: A.Nat) -> str:
    if n.kind is None:
        return "nat"
    text = n.kind
    if n.addr_min:
        v6 = ":" in n.addr_min
        lo = f"[{n.addr_min}]" if v6 else n.addr_min
        text += "=" + lo
        if n.addr_max and n.addr_max != n.addr_min:
            text += "-" + (f"[{n.addr_max}]" if v6 else n.addr_max)
        if n.port_min:
            text += f":{n.port_min}"
            if n.port_max and n.port_max != n.port_min:
                text += f"-{n.port_max}"
    return "nat(" + ",".join((text, *n.flags)) + ")"


def _f_ct(a: A.Ct) -> str:
    parts = []
    if a.commit:
        parts.append("commit")
    if a.table is not None:
        parts.append(f"table={a.table}")
    if isinstance(a.zone, A.FieldRef):
        parts.append("zone=" + _format_subfield(a.zone.field, a.zone.ofs, a.zone.n_bits))
    elif a.zone:
        parts.append(f"zone={a.zone}")
    if a.nat is not None:
        parts.append(_f_nat(a.nat))
    if a.exec:
        parts.append(f"exec({format_actions(a.exec)})")
    return f"ct({','.join(parts)})"


def _f_sample(a: A.Sample) -> str:
    return (f"sample(probability={a.probability},collector_set_id={a.collector_set_id},"
            f"obs_domain_id={a.obs_domain_id},obs_point_id={a.obs_point_id})")


def _f_move(a: A.Move) -> str:
    return (f"move:{_format_subfield(a.src, a.src_ofs, a.n_bits)}->"
            f"{_format_subfield(a.dst, a.dst_ofs, a.n_bits)}")


def format_action(a: A.OfAction) -> str:
    if type(a) in _PORT_ACTION_NAME:
        return _PORT_ACTION_NAME[type(a)]
    if isinstance(a, A.Output):
        return f"output:{a.port}"
    if isinstance(a, A.Controller):
        return _f_controller(a)
    if isinstance(a, A.SetField):
        return _f_set_field(a)
    if isinstance(a, A.SetVlanVid):
        return f"mod_vlan_vid:{a.vid}"
    if isinstance(a, A.SetVlanPcp):
        return f"mod_vlan_pcp:{a.pcp}"
    if isinstance(a, A.StripVlan):
        return "strip_vlan"
    if isinstance(a, A.PopVlan):
        return "pop_vlan"
    if isinstance(a, A.PushVlan):
        return f"push_vlan:{a.tpid:#x}"
    if isinstance(a, A.Move):
        return _f_move(a)
    if isinstance(a, A.DecTtl):
        return "dec_ttl"
    if isinstance(a, A.SetTunnel):
        return f"set_tunnel{'64' if a.tun_id >> 32 else ''}:{c_hex(a.tun_id)}"
    if isinstance(a, A.Resubmit):
        return _f_resubmit(a)
    if isinstance(a, A.GotoTable):
        return f"goto_table:{a.table}"
    if isinstance(a, A.Sample):
        return _f_sample(a)
    if isinstance(a, A.Ct):
        return _f_ct(a)
    raise TypeError(f"not an OpenFlow action: {a!r}")


def format_actions(actions: A.OfActions) -> str:
    """``output:2,NORMAL``; the empty list is ``drop``."""
    if not actions:
        return "drop"
    return ",".join(format_action(a) for a in actions)
