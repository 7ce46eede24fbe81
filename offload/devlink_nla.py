"""devlink generic netlink: the attribute table flowpath needs, declared once.

pyroute2 0.9.7 ships ``pyroute2.netlink.devlink.devlinkcmd`` whose attribute
table is correct (checked against the kernel's include/uapi/linux/devlink.h)
up to ``DEVLINK_ATTR_PORT_SPLITTABLE`` (148) and stops there.  Since pyroute2
drops unknown attributes silently on encode and reports them as ``UNKNOWN`` on
decode, everything past 148 -- among them ``DEVLINK_ATTR_PORT_EXTERNAL``,
``DEVLINK_ATTR_PORT_CONTROLLER_NUMBER`` and ``DEVLINK_ATTR_PORT_PCI_SF_NUMBER``
that representor discovery needs -- is declared here, in pyroute2's ``nla_map``
style, with the kernel's names verbatim and in the kernel's order (the position
in the tuple *is* the attribute number).  ``DEVLINK_ATTR_PORT_FUNCTION`` is a
nest in its own namespace (``DEVLINK_PORT_FUNCTION_ATTR_*``), not a devlink
nest as pyroute2 declares it; that entry is corrected too.

The commands, eswitch modes and port flavours are plain integer constants of
the same header.  Nothing here does I/O except ``DevlinkSocket.bind()``, which
resolves the "devlink" generic netlink family id.
"""

from __future__ import annotations

from typing import Any

from pyroute2.netlink import nla
from pyroute2.netlink.devlink import devlinkcmd
from pyroute2.netlink.generic import GenericNetlinkSocket

# enum devlink_command (the subset flowpath sends or receives)
DEVLINK_CMD_GET = 1
DEVLINK_CMD_NEW = 3
DEVLINK_CMD_PORT_GET = 5
DEVLINK_CMD_PORT_NEW = 7
DEVLINK_CMD_ESWITCH_GET = 29
DEVLINK_CMD_ESWITCH_SET = 30

# enum devlink_eswitch_mode
DEVLINK_ESWITCH_MODE_LEGACY = 0
DEVLINK_ESWITCH_MODE_SWITCHDEV = 1

# enum devlink_port_flavour
DEVLINK_PORT_FLAVOUR_PHYSICAL = 0
DEVLINK_PORT_FLAVOUR_CPU = 1
DEVLINK_PORT_FLAVOUR_DSA = 2
DEVLINK_PORT_FLAVOUR_PCI_PF = 3
DEVLINK_PORT_FLAVOUR_PCI_VF = 4
DEVLINK_PORT_FLAVOUR_VIRTUAL = 5
DEVLINK_PORT_FLAVOUR_UNUSED = 6
DEVLINK_PORT_FLAVOUR_PCI_SF = 7

# enum devlink_port_type
DEVLINK_PORT_TYPE_NOTSET = 0
DEVLINK_PORT_TYPE_AUTO = 1
DEVLINK_PORT_TYPE_ETH = 2
DEVLINK_PORT_TYPE_IB = 3

_PYROUTE2_LAST = 'DEVLINK_ATTR_PORT_SPLITTABLE'   # last entry pyroute2 0.9.7 knows
_PORT_FUNCTION = 145

# Attributes 149.. of enum devlink_attr, kernel order, kernel names.
_ATTRS_AFTER_SPLITTABLE: tuple[tuple[str, str], ...] = (
    ('DEVLINK_ATTR_PORT_EXTERNAL', 'uint8'),                    # 149
    ('DEVLINK_ATTR_PORT_CONTROLLER_NUMBER', 'uint32'),          # 150
    ('DEVLINK_ATTR_FLASH_UPDATE_STATUS_TIMEOUT', 'uint64'),     # 151
    ('DEVLINK_ATTR_FLASH_UPDATE_OVERWRITE_MASK', 'binary'),     # 152 bitfield32
    ('DEVLINK_ATTR_RELOAD_ACTION', 'uint8'),                    # 153
    ('DEVLINK_ATTR_RELOAD_ACTIONS_PERFORMED', 'binary'),        # 154 bitfield32
    ('DEVLINK_ATTR_RELOAD_LIMITS', 'binary'),                   # 155 bitfield32
    ('DEVLINK_ATTR_DEV_STATS', 'binary'),                       # 156 nest
    ('DEVLINK_ATTR_RELOAD_STATS', 'binary'),                    # 157 nest
    ('DEVLINK_ATTR_RELOAD_STATS_ENTRY', 'binary'),              # 158 nest
    ('DEVLINK_ATTR_RELOAD_STATS_LIMIT', 'uint8'),               # 159
    ('DEVLINK_ATTR_RELOAD_STATS_VALUE', 'uint32'),              # 160
    ('DEVLINK_ATTR_REMOTE_RELOAD_STATS', 'binary'),             # 161 nest
    ('DEVLINK_ATTR_RELOAD_ACTION_INFO', 'binary'),              # 162 nest
    ('DEVLINK_ATTR_RELOAD_ACTION_STATS', 'binary'),             # 163 nest
    ('DEVLINK_ATTR_PORT_PCI_SF_NUMBER', 'uint32'),              # 164
    ('DEVLINK_ATTR_RATE_TYPE', 'uint16'),                       # 165
    ('DEVLINK_ATTR_RATE_TX_SHARE', 'uint64'),                   # 166
    ('DEVLINK_ATTR_RATE_TX_MAX', 'uint64'),                     # 167
    ('DEVLINK_ATTR_RATE_NODE_NAME', 'asciiz'),                  # 168
    ('DEVLINK_ATTR_RATE_PARENT_NODE_NAME', 'asciiz'),           # 169
    ('DEVLINK_ATTR_REGION_MAX_SNAPSHOTS', 'uint32'),            # 170
    ('DEVLINK_ATTR_LINECARD_INDEX', 'uint32'),                  # 171
    ('DEVLINK_ATTR_LINECARD_STATE', 'uint8'),                   # 172
    ('DEVLINK_ATTR_LINECARD_TYPE', 'asciiz'),                   # 173
    ('DEVLINK_ATTR_LINECARD_SUPPORTED_TYPES', 'binary'),        # 174 nest
    ('DEVLINK_ATTR_NESTED_DEVLINK', 'binary'),                  # 175 nest
    ('DEVLINK_ATTR_SELFTESTS', 'binary'),                       # 176 nest
)


def _extend(base: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """pyroute2's table 0..148 with PORT_FUNCTION fixed, then 149.. above."""
    names = [name for name, _ in base]
    last = names.index(_PYROUTE2_LAST)
    assert last == 148, f'pyroute2 devlink table moved: {_PYROUTE2_LAST} at {last}'
    assert names[_PORT_FUNCTION] == 'DEVLINK_ATTR_PORT_FUNCTION'
    table = list(base[: last + 1])
    table[_PORT_FUNCTION] = ('DEVLINK_ATTR_PORT_FUNCTION', 'port_function')
    return tuple(table) + _ATTRS_AFTER_SPLITTABLE


class devlinkmsg(devlinkcmd):
    """A devlink generic netlink message with the full 6.1 attribute table."""

    prefix = 'DEVLINK_ATTR_'
    nla_map = _extend(tuple(devlinkcmd.nla_map))

    class port_function(nla):
        """enum devlink_port_function_attr (nested in DEVLINK_ATTR_PORT_FUNCTION)."""

        prefix = 'DEVLINK_PORT_FUNCTION_ATTR_'
        nla_map = (
            ('DEVLINK_PORT_FUNCTION_ATTR_UNSPEC', 'none'),
            ('DEVLINK_PORT_FUNCTION_ATTR_HW_ADDR', 'l2addr'),
            ('DEVLINK_PORT_FN_ATTR_STATE', 'uint8'),
            ('DEVLINK_PORT_FN_ATTR_OPSTATE', 'uint8'),
        )


def attr_number(name: str) -> int:
    """The wire number of a devlink attribute in our table (KeyError if absent)."""
    for number, (entry, _) in enumerate(devlinkmsg.nla_map):
        if entry == name:
            return number
    raise KeyError(name)


class DevlinkSocket(GenericNetlinkSocket):
    """A generic netlink socket bound to the "devlink" family with ``devlinkmsg``."""

    def bind(self, groups: int = 0, **kwarg: Any) -> Any:
        return super().bind('devlink', devlinkmsg, groups, None, **kwarg)
