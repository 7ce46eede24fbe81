"""dpif.fields: the bit layout is a partition of the key, hot fields low."""

from __future__ import annotations

import copy
import dataclasses
import pickle

from dpif.fields import ALL_ONES, BY_NAME, FIELDS, KEY_BITS, LAYOUT

# What nearly every packet and megaflow uses: these must make short ints.
HOT = ("recirc_id", "in_port", "eth_src", "eth_dst", "vlan_tpid", "vlan_vid", "vlan_pcp",
       "eth_type", "ip_proto", "ip_tos", "ip_ttl", "ip_frag", "ipv4_src", "ipv4_dst",
       "tp_src", "tp_dst", "tcp_flags", "icmp_type", "icmp_code")


def test_layout_partitions_the_key() -> None:
    assert sorted(LAYOUT) == sorted(f.name for f in FIELDS)
    seen = 0
    for f in FIELDS:
        assert f.field_mask & seen == 0, f"{f.name} overlaps another field"
        seen |= f.field_mask
    assert seen == ALL_ONES and KEY_BITS == ALL_ONES.bit_length()
    offs = [BY_NAME[n].offset for n in LAYOUT]
    assert offs == sorted(offs) and offs[0] == 0


def test_hot_fields_sit_below_the_rare_ones() -> None:
    top_hot = max(BY_NAME[n].offset + BY_NAME[n].bits for n in HOT)
    assert top_hot == sum(BY_NAME[n].bits for n in HOT)  # the hot block is the bottom
    assert top_hot <= 360  # 12 digits of 30 bits
    for f in FIELDS:
        if f.name not in HOT:
            assert f.offset >= top_hot, f.name


def test_declaration_order_is_not_the_layout() -> None:
    # text, flower and ofproto iterate FIELDS: its order is the declaration's
    assert [f.name for f in FIELDS][:4] == ["recirc_id", "dp_hash", "skb_mark", "in_port"]
    assert FIELDS[-1].name == "nd_tll"


def test_parser_header_runs_are_adjacent() -> None:
    # the parser's fast path reads these pairs with one unpack each
    for hi, lo in (("eth_dst", "eth_src"), ("ip_ttl", "ip_proto"), ("ipv4_src", "ipv4_dst"),
                   ("tp_src", "tp_dst")):
        assert BY_NAME[hi].offset == BY_NAME[lo].offset + BY_NAME[lo].bits, (hi, lo)


def test_all_ones_is_computed_once_and_survives_copies() -> None:
    """``BitRange.all_ones`` is stored at construction (the same int object on
    every read, not a new one per call), is no dataclass field (equality and
    hash ignore it), and copies, pickles and ``replace`` keep it right."""
    for f in FIELDS:
        assert f.all_ones == (1 << f.bits) - 1
        assert f.all_ones is f.all_ones
        assert f.get(ALL_ONES) == f.all_ones
        for g in (copy.copy(f), copy.deepcopy(f), pickle.loads(pickle.dumps(f))):
            assert g == f and hash(g) == hash(f) and g.all_ones == f.all_ones
    narrow = dataclasses.replace(BY_NAME["tp_dst"], bits=4)
    assert narrow.all_ones == 0xF and narrow != BY_NAME["tp_dst"]
    assert "all_ones" not in repr(narrow)
