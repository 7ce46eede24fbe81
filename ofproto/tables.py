"""Rule storage: OpenFlow flow tables with add / modify / delete and counters.

Theory of operation
-------------------
``FlowTables`` stores rules; it does not look packets up (that is
``ofproto.classifier``, which mirrors this storage through ``subscribe``).

* Every stored rule gets a *rule id*: an int, increasing, never reused.  The
  classifier breaks priority ties by it (older wins), translation reports the
  ids of the rules it hit, and the revalidator credits counters by id.  A
  ``modify`` keeps the id (and the counters, unless ``reset_counts``); an
  ``add`` that replaces a rule with the same table, priority and match
  (OpenFlow's "identical flow") retires the old id and gives a new one with
  fresh counters, as ovs-ofctl's OpenFlow 1.0 add does.
* ``version`` counts changes: it goes up by one on every add, modify, delete
  and expiry that changed anything.  The revalidator compares it with the
  version it last translated against.
* Loose selection (mod-flows, del-flows): every rule whose match is at least
  as specific as the selector's (``selector.match.covers(rule.match)``).
  Strict (``--strict``): the same table, priority and match.  Both filter by
  ``rule.cookie & cookie_mask == cookie & cookie_mask`` and by ``out_port``.
* Counters live here, keyed by rule id: ``credit`` adds packets/bytes and
  moves "last used"; ``expire(now)`` removes rules past their idle or hard
  timeout and returns them.  Time is whatever clock the caller passes in.

Listeners registered with ``subscribe`` get a ``TableChange`` for every rule
added, removed or modified, in order, after the change is made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from dpif.errors import ValidationError
from ofproto import ofactions as A
from ofproto.offields import OfMatch
from ofproto.rule import N_TABLES, Rule, RuleSelector, RuleStats

# reserved port number -> the action that outputs to it (for out_port filters)
_RESERVED_OUTPUT: dict[int, type] = {0xFFF8: A.InPort, 0xFFFA: A.Normal, 0xFFFB: A.Flood,
                                     0xFFFC: A.All, 0xFFFD: A.Controller, 0xFFFE: A.Local}


@dataclass(frozen=True, slots=True)
class TableChange:
    kind: str  # "add", "remove", "modify"
    rule_id: int
    rule: Rule
    old: Rule | None = None  # the rule before a modify
    reason: str = ""  # remove: "delete", "replace", "idle_timeout", "hard_timeout"


def outputs_to(actions: A.OfActions, port: int) -> bool:
    """Does an action list output to ``port`` (OpenFlow's out_port filter)?"""
    reserved = _RESERVED_OUTPUT.get(port)
    for a in actions:
        if isinstance(a, A.Output) and a.port == port:
            return True
        if reserved is not None and isinstance(a, reserved):
            return True
    return False


class FlowTables:
    """``n_tables`` OpenFlow tables of rules, with ids, counters and a version."""

    def __init__(self, n_tables: int = N_TABLES) -> None:
        if not 1 <= n_tables <= N_TABLES:
            raise ValidationError("number of tables out of range 1..255", n_tables=n_tables)
        self.n_tables = n_tables
        self.version = 0
        self._next_id = 1
        self._tables: list[dict[int, Rule]] = [{} for _ in range(n_tables)]
        self._ro = [MappingProxyType(t) for t in self._tables]
        self._by_identity: dict[tuple[int, int, OfMatch], int] = {}
        self._table_of: dict[int, int] = {}
        self._stats: dict[int, RuleStats] = {}
        self._timed: set[int] = set()  # ids of rules with a timeout
        self._listeners: list[Callable[[TableChange], None]] = []

    # --- reading ------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._table_of)

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self._table_of

    def get(self, rule_id: int) -> Rule:
        return self._tables[self._table_of[rule_id]][rule_id]

    def stats(self, rule_id: int) -> RuleStats:
        return self._stats[rule_id]

    def table(self, table: int) -> Mapping[int, Rule]:
        """Read-only {rule id: rule} of one table (for the classifier)."""
        return self._ro[table]

    def find(self, table: int, priority: int, match: OfMatch) -> int | None:
        """The id of the rule with this identity, if stored."""
        return self._by_identity.get((table, priority, match))

    def rules(self, table: int | None = None) -> Iterator[tuple[int, Rule]]:
        """(id, rule) by table, then priority high to low, then id: dump-flows order."""
        tables = range(self.n_tables) if table is None else (table,)
        for t in tables:
            yield from sorted(self._tables[t].items(), key=lambda kv: (-kv[1].priority, kv[0]))

    def select(self, sel: RuleSelector, *, strict: bool = False) -> list[int]:
        """Ids of the rules a mod-flows/del-flows selector picks."""
        if strict:
            tables = range(self.n_tables) if sel.table is None else (sel.table,)
            ids = [self._by_identity.get((t, sel.priority, sel.match)) for t in tables]
            cands = [i for i in ids if i is not None]
        else:
            cands = [i for i, r in self.rules(sel.table) if sel.match.covers(r.match)]
        out = []
        for i in cands:
            r = self.get(i)
            if not sel.cookie_ok(r):
                continue
            if sel.out_port is not None and not outputs_to(r.actions, sel.out_port):
                continue
            out.append(i)
        return out

    # --- changing -----------------------------------------------------------

    def subscribe(self, listener: Callable[[TableChange], None]) -> None:
        self._listeners.append(listener)

    def _emit(self, change: TableChange) -> None:
        for fn in self._listeners:
            fn(change)

    def _check_table(self, table: int) -> None:
        if not 0 <= table < self.n_tables:
            raise ValidationError("no such table", table=table, n_tables=self.n_tables)

    def add(self, rule: Rule, now: float = 0.0) -> int:
        """Store ``rule``; an identical (table, priority, match) rule is replaced.

        With ``check_overlap`` in ``rule.flags``, refuse the rule when another
        rule of the same table and priority can match the same packet.
        """
        self._check_table(rule.table)
        if "check_overlap" in rule.flags:
            for i, r in self._tables[rule.table].items():
                if r.priority == rule.priority and r.match.overlaps(rule.match) \
                        and r.match != rule.match:
                    raise ValidationError("rule overlaps an existing rule of the same "
                                          "priority", table=rule.table, rule_id=i)
        old = self._by_identity.get(rule.identity)
        if old is not None:
            self._remove(old, "replace")
        rid = self._next_id
        self._next_id += 1
        self._tables[rule.table][rid] = rule
        self._table_of[rid] = rule.table
        self._by_identity[rule.identity] = rid
        self._stats[rid] = RuleStats(0, 0, now, now)
        if rule.idle_timeout or rule.hard_timeout:
            self._timed.add(rid)
        self.version += 1
        self._emit(TableChange("add", rid, rule))
        return rid

    def _remove(self, rid: int, reason: str) -> Rule:
        t = self._table_of.pop(rid)
        rule = self._tables[t].pop(rid)
        del self._by_identity[rule.identity]
        del self._stats[rid]
        self._timed.discard(rid)
        self._emit(TableChange("remove", rid, rule, reason=reason))
        return rule

    def modify(self, sel: RuleSelector, actions: A.OfActions | None = None, *,
               strict: bool = False, now: float = 0.0,
               add_if_missing: bool = False) -> list[int]:
        """mod-flows: new actions (and cookie, if ``sel.new_cookie``) on the selected rules.

        Ids, timeouts and flags are kept; counters too unless ``reset_counts``
        is in ``sel.flags``.  With ``add_if_missing`` and nothing selected, the
        selector becomes a new rule (OpenFlow 1.0's modify-may-add); off by
        default.  Returns the ids changed (or the one added).
        """
        acts = sel.actions if actions is None else actions
        if acts is None:
            raise ValidationError("modify needs actions")
        ids = self.select(sel, strict=strict)
        if not ids and add_if_missing:
            return [self.add(Rule(sel.match, acts, sel.table or 0, sel.priority,
                                  sel.new_cookie or 0, flags=sel.flags - {"reset_counts"}),
                             now)]
        for rid in ids:
            old = self.get(rid)
            new = replace(old, actions=acts,
                          cookie=old.cookie if sel.new_cookie is None else sel.new_cookie)
            self._tables[old.table][rid] = new
            if "reset_counts" in sel.flags:
                self._stats[rid] = RuleStats(0, 0, now, now)
            self._emit(TableChange("modify", rid, new, old=old))
        if ids:
            self.version += 1
        return ids

    def delete(self, sel: RuleSelector, *, strict: bool = False) -> list[tuple[int, Rule]]:
        """del-flows: remove the selected rules; returns (id, rule) of each."""
        out = [(rid, self._remove(rid, "delete")) for rid in self.select(sel, strict=strict)]
        if out:
            self.version += 1
        return out

    def delete_id(self, rule_id: int) -> Rule:
        rule = self._remove(rule_id, "delete")
        self.version += 1
        return rule

    def clear(self) -> None:
        self.delete(RuleSelector())

    # --- counters and time ------------------------------------------------------

    def credit(self, rule_id: int, packets: int, bytes: int, used: float | None = None) -> bool:
        """Add counters to a rule; False (and nothing done) if the rule is gone.

        Does not bump ``version``: counters are not a rule change.
        """
        st = self._stats.get(rule_id)
        if st is None:
            return False
        last = st.used if used is None else max(st.used, used)
        self._stats[rule_id] = RuleStats(st.n_packets + packets, st.n_bytes + bytes,
                                         st.created, last)
        return True

    @property
    def has_timeouts(self) -> bool:
        """Whether any stored rule has an idle or hard timeout."""
        return bool(self._timed)

    def expire(self, now: float) -> list[Rule]:
        """Remove and return rules idle for ``idle_timeout`` or older than ``hard_timeout``."""
        gone: list[tuple[int, str]] = []
        for rid in self._timed:
            r = self.get(rid)
            st = self._stats[rid]
            if r.hard_timeout and now - st.created >= r.hard_timeout:
                gone.append((rid, "hard_timeout"))
            elif r.idle_timeout and now - st.used >= r.idle_timeout:
                gone.append((rid, "idle_timeout"))
        out = [self._remove(rid, why) for rid, why in gone]
        if out:
            self.version += 1
        return out
