"""A rule: table, priority, match, actions, cookie, timeouts, flags.

A value only.  Its counters (n_packets, n_bytes, created, last used) live in
``ofproto.tables.FlowTables`` keyed by the stable id the tables give each
stored rule, so a ``Rule`` stays frozen and hashable and two rules with the
same content are equal.  Text: ``ofproto.ruletext``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpif.errors import ValidationError
from ofproto.ofactions import OfActions
from ofproto.offields import OfMatch

OFP_DEFAULT_PRIORITY = 32768
N_TABLES = 255  # tables 0..254, like OVS
FLOW_FLAGS = ("send_flow_rem", "check_overlap", "reset_counts", "no_packet_counts",
              "no_byte_counts")


@dataclass(frozen=True, slots=True)
class Rule:
    match: OfMatch
    actions: OfActions = ()
    table: int = 0
    priority: int = OFP_DEFAULT_PRIORITY
    cookie: int = 0
    idle_timeout: int = 0  # seconds, 0 = none
    hard_timeout: int = 0
    importance: int = 0
    flags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not 0 <= self.table < N_TABLES:
            raise ValidationError("table out of range 0..254", table=self.table)
        if not 0 <= self.priority <= 0xFFFF:
            raise ValidationError("priority out of range 0..65535", priority=self.priority)
        if not 0 <= self.cookie < 1 << 64:
            raise ValidationError("cookie out of range", cookie=self.cookie)
        for n in ("idle_timeout", "hard_timeout", "importance"):
            if not 0 <= getattr(self, n) <= 0xFFFF:
                raise ValidationError(f"{n} out of range 0..65535", **{n: getattr(self, n)})
        bad = self.flags - set(FLOW_FLAGS)
        if bad:
            raise ValidationError("unknown flow flag", flags=",".join(sorted(bad)))

    @property
    def identity(self) -> tuple[int, int, OfMatch]:
        """What OpenFlow calls "the same flow": table, priority and match."""
        return self.table, self.priority, self.match


@dataclass(frozen=True, slots=True)
class RuleStats:
    """Counters the tables keep for a stored rule (times in the caller's clock)."""

    n_packets: int = 0
    n_bytes: int = 0
    created: float = 0.0
    used: float = 0.0  # last time a packet hit it (== created until then)


@dataclass(frozen=True, slots=True)
class RuleSelector:
    """Which rules a mod-flows / del-flows (loose or --strict) acts on.

    ``table`` None is every table.  Loose: every rule whose match is at least
    as specific as ``match`` (``match.covers(rule.match)``).  Strict: the rule
    whose match equals ``match`` and whose priority is ``priority``.  Both:
    ``rule.cookie & cookie_mask == cookie & cookie_mask`` and, when
    ``out_port`` is set, an action that outputs to it.  ``actions`` and
    ``new_cookie`` are what mod-flows writes.
    """

    match: OfMatch = OfMatch(0, 0)
    table: int | None = None
    priority: int = OFP_DEFAULT_PRIORITY
    cookie: int = 0
    cookie_mask: int = 0
    out_port: int | None = None
    actions: OfActions | None = None
    new_cookie: int | None = None
    flags: frozenset[str] = frozenset()

    def cookie_ok(self, rule: Rule) -> bool:
        return rule.cookie & self.cookie_mask == self.cookie & self.cookie_mask
