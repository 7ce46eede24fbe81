"""Match invariants and the packed layout."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpif.errors import ValidationError
from dpif.fields import ALL_ONES, BY_NAME, FIELDS, KEY_BITS
from dpif.match import Match, exact_unmaskable, pack, unpack
from tests.dpif.strategies import matches


def test_fields_tile_the_key_without_gaps_or_overlap() -> None:
    covered = 0
    for f in FIELDS:
        assert covered & f.field_mask == 0, f.name
        covered |= f.field_mask
    assert covered == ALL_ONES and covered.bit_length() == KEY_BITS


def test_wildcarded_bits_must_be_zero_in_key() -> None:
    f = BY_NAME["ipv4_dst"]
    with pytest.raises(ValidationError, match="ipv4_dst"):
        Match(f.put(0x0A000001), f.put(0xFFFFFF00))


def test_non_maskable_field_rejects_partial_mask() -> None:
    with pytest.raises(ValidationError, match="in_port"):
        Match.build(in_port=(2, 0xFF))


def test_build_masks_the_value() -> None:
    m = Match.build(ipv4_dst=(0x0A000001, 0xFFFFFF00))
    assert m.get("ipv4_dst") == (0x0A000000, 0xFFFFFF00)


@given(matches(), st.integers(0, ALL_ONES))
@settings(max_examples=200, deadline=None)
def test_matches_is_masked_equality_per_field(m: Match, packet: int) -> None:
    per_field = all((f.get(packet) & mm) == v for f, v, mm in m.fields())
    assert m.matches(packet) == per_field


@given(matches(), matches())
@settings(max_examples=200, deadline=None)
def test_overlap_iff_a_common_packet_exists(a: Match, b: Match) -> None:
    # The packet that takes a's bits where a looks and b's elsewhere.
    witness = a.key | (b.key & ~a.mask)
    assert a.overlaps(b) == (a.matches(witness) and b.matches(witness))


@given(st.dictionaries(st.sampled_from([f.name for f in FIELDS]), st.integers(1, 2**16)))
def test_pack_unpack(values: dict[str, int]) -> None:
    values = {k: v & BY_NAME[k].all_ones for k, v in values.items()}
    values = {k: v for k, v in values.items() if v}
    assert unpack(pack(values)) == values


def test_equal_matches_hash_equal() -> None:
    a = Match.build(eth_type=0x0800, ipv4_src=(0x0A000000, 0xFF000000))
    b = Match.build(ipv4_src=(0x0A112233, 0xFF000000), eth_type=0x0800)
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1


def test_exact_unmaskable_widens_only_touched_unmaskable_fields() -> None:
    tpid, vid = BY_NAME["vlan_tpid"], BY_NAME["vlan_vid"]
    m = tpid.put(0x8000) | vid.put(0xF00)
    out = exact_unmaskable(m)
    assert tpid.get(out) == 0xFFFF          # unmaskable and touched: made exact
    assert vid.get(out) == 0xF00            # maskable: kept as is
    assert exact_unmaskable(vid.put(0xF00)) == vid.put(0xF00)
    Match(0, out)  # a valid datapath mask now
