"""``phys_port_name``: the kernel's name for a netdev's place on its switch.

A switchdev driver names each eswitch port through devlink
(net/core/devlink.c, ``__devlink_port_phys_port_name_get``); the text shows
up as ``IFLA_PHYS_PORT_NAME`` and ``/sys/class/net/X/phys_port_name``:

    form            flavour    meaning
    p<port>         physical   uplink / front-panel port
    p<port>s<sub>   physical   split sub-port of a physical port
    [c<C>]pf<P>     pcipf      PF representor (c<C>: external controller C)
    [c<C>]pf<P>vf<V> pcivf     VF representor
    [c<C>]pf<P>sf<S> pcisf     SF (sub-function) representor

Numbers are decimal without leading zeros, as the kernel prints them.  The
parser is strict: anything else (older out-of-tree forms, a typo) raises
``ParseError`` naming the text, and ``format_port_name(parse_port_name(s)) ==
s`` for every accepted ``s``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from dpif.errors import ParseError, ValidationError


class PortFlavour(enum.Enum):
    """devlink port flavour; the value is iproute2's spelling."""

    PHYSICAL = 'physical'
    CPU = 'cpu'
    DSA = 'dsa'
    PCI_PF = 'pcipf'
    PCI_VF = 'pcivf'
    VIRTUAL = 'virtual'
    UNUSED = 'unused'
    PCI_SF = 'pcisf'

    @property
    def is_representor(self) -> bool:
        """True for ports that represent a PCI function (PF, VF or SF)."""
        return self in (PortFlavour.PCI_PF, PortFlavour.PCI_VF, PortFlavour.PCI_SF)


@dataclass(frozen=True)
class PortName:
    """A parsed ``phys_port_name``.

    ``controller`` is None for the local controller (the kernel prints ``c<N>``
    only for external ones).  Physical ports carry ``port`` and optionally
    ``split``; PCI ports carry ``pf`` and, for VF/SF, ``vf``/``sf``.
    """

    flavour: PortFlavour
    controller: int | None = None
    pf: int | None = None
    vf: int | None = None
    sf: int | None = None
    port: int | None = None
    split: int | None = None

    def __post_init__(self) -> None:
        f = self.flavour
        given = {k: getattr(self, k) for k in ('controller', 'pf', 'vf', 'sf', 'port', 'split')
                 if getattr(self, k) is not None}
        allowed = {
            PortFlavour.PHYSICAL: ({'port'}, {'port', 'split'}),
            PortFlavour.PCI_PF: ({'pf'}, {'pf', 'controller'}),
            PortFlavour.PCI_VF: ({'pf', 'vf'}, {'pf', 'vf', 'controller'}),
            PortFlavour.PCI_SF: ({'pf', 'sf'}, {'pf', 'sf', 'controller'}),
        }.get(f)
        if allowed is None:
            raise ValidationError('flavour has no phys_port_name form', flavour=f.value)
        need, may = allowed
        if not need <= given.keys() <= may:
            raise ValidationError('port name fields do not fit the flavour', flavour=f.value,
                                  fields=','.join(sorted(given)))
        for k, v in given.items():
            if v < 0:
                raise ValidationError('port name number is negative', field=k, value=v)


_NUM = r'(0|[1-9][0-9]*)'
_PHYSICAL = re.compile(rf'p{_NUM}(?:s{_NUM})?')
_PCI = re.compile(rf'(?:c{_NUM})?pf{_NUM}(?:(vf|sf){_NUM})?')


def parse_port_name(text: str) -> PortName:
    """Parse a ``phys_port_name``; raise ParseError naming ``text`` if unknown."""
    m = _PHYSICAL.fullmatch(text)
    if m:
        port, split = m.groups()
        return PortName(PortFlavour.PHYSICAL, port=int(port),
                        split=None if split is None else int(split))
    m = _PCI.fullmatch(text)
    if m:
        controller, pf, kind, num = m.groups()
        c = None if controller is None else int(controller)
        if kind is None:
            return PortName(PortFlavour.PCI_PF, controller=c, pf=int(pf))
        if kind == 'vf':
            return PortName(PortFlavour.PCI_VF, controller=c, pf=int(pf), vf=int(num))
        return PortName(PortFlavour.PCI_SF, controller=c, pf=int(pf), sf=int(num))
    raise ParseError('unknown phys_port_name form', text=text, pos=0,
                     expected='p<N>, p<N>s<M>, [c<C>]pf<P>, [c<C>]pf<P>vf<V>, [c<C>]pf<P>sf<S>')


def format_port_name(name: PortName) -> str:
    """The kernel's text for ``name`` (inverse of ``parse_port_name``)."""
    if name.flavour is PortFlavour.PHYSICAL:
        return f'p{name.port}' + ('' if name.split is None else f's{name.split}')
    text = '' if name.controller is None else f'c{name.controller}'
    text += f'pf{name.pf}'
    if name.flavour is PortFlavour.PCI_VF:
        text += f'vf{name.vf}'
    elif name.flavour is PortFlavour.PCI_SF:
        text += f'sf{name.sf}'
    return text
