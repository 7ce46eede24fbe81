"""phys_port_name parsing: the table of kernel forms, strictness, round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dpif.errors import ParseError, ValidationError
from offload.switchdev import PortFlavour, PortName, format_port_name, parse_port_name

PF, VF, SF, PHYS = PortFlavour.PCI_PF, PortFlavour.PCI_VF, PortFlavour.PCI_SF, PortFlavour.PHYSICAL

FORMS = [
    ('p0', PortName(PHYS, port=0)),
    ('p1', PortName(PHYS, port=1)),
    ('p0s1', PortName(PHYS, port=0, split=1)),
    ('p12s3', PortName(PHYS, port=12, split=3)),
    ('pf0', PortName(PF, pf=0)),
    ('c1pf0', PortName(PF, controller=1, pf=0)),
    ('pf0vf3', PortName(VF, pf=0, vf=3)),
    ('pf1vf127', PortName(VF, pf=1, vf=127)),
    ('c1pf0vf3', PortName(VF, controller=1, pf=0, vf=3)),
    ('pf0sf2', PortName(SF, pf=0, sf=2)),
    ('c1pf0sf2', PortName(SF, controller=1, pf=0, sf=2)),
    ('c0pf0vf0', PortName(VF, controller=0, pf=0, vf=0)),
]


@pytest.mark.parametrize(('text', 'value'), FORMS, ids=[t for t, _ in FORMS])
def test_parse_table(text: str, value: PortName) -> None:
    assert parse_port_name(text) == value
    assert format_port_name(value) == text


@pytest.mark.parametrize('text', [
    '', 'p', 'pf', 'vf0', 'pf0vf', 'p01', 'pf00', 'p0s', 'c1p0', 'pf0vf1sf2', 'P0',
    'pf0 ', ' p0', 'pf-1', 'eth0', 'n0', 'c1', 'pf0vf3\n', 'p0s1s2',
])
def test_unknown_forms_raise_naming_text(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_port_name(text)
    assert info.value.text == text
    assert 'phys_port_name' in str(info.value)


def test_value_is_frozen_and_hashable() -> None:
    v = parse_port_name('pf0vf3')
    with pytest.raises(AttributeError):
        v.vf = 4  # type: ignore[misc]
    assert {v: 1}[parse_port_name('pf0vf3')] == 1


@pytest.mark.parametrize('kwargs', [
    {'flavour': PHYS},                                   # no port
    {'flavour': PHYS, 'port': 0, 'pf': 0},               # pf on physical
    {'flavour': VF, 'pf': 0},                            # no vf
    {'flavour': PF, 'pf': 0, 'vf': 1},                   # vf on pf
    {'flavour': SF, 'pf': 0, 'sf': -1},                  # negative
    {'flavour': PortFlavour.CPU},                        # no text form
])
def test_inconsistent_values_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PortName(**kwargs)  # type: ignore[arg-type]


_n = st.integers(min_value=0, max_value=10_000)
_ctrl = st.none() | _n
port_names = st.one_of(
    st.builds(lambda p, s: PortName(PHYS, port=p, split=s), _n, st.none() | _n),
    st.builds(lambda c, p: PortName(PF, controller=c, pf=p), _ctrl, _n),
    st.builds(lambda c, p, v: PortName(VF, controller=c, pf=p, vf=v), _ctrl, _n, _n),
    st.builds(lambda c, p, s: PortName(SF, controller=c, pf=p, sf=s), _ctrl, _n, _n),
)


@given(port_names)
def test_round_trip_value(name: PortName) -> None:
    assert parse_port_name(format_port_name(name)) == name


@given(st.text(alphabet='cpfvs0123456789', max_size=12))
def test_round_trip_text(text: str) -> None:
    try:
        name = parse_port_name(text)
    except ParseError:
        return
    assert format_port_name(name) == text
