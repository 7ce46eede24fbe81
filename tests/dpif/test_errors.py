"""dpif.errors: one line per error, and ``ParseError.at`` keeps everything."""

from __future__ import annotations

from dpif.errors import ParseError


def test_at_prefixes_where_and_keeps_text_position_and_context() -> None:
    e = ParseError("rule: tp_dst: value '99999' does not fit in 16 bits",
                   text="udp,tp_dst=99999,actions=drop", pos=11, expected="dec value",
                   field="tp_dst", value="99999")
    for where, drop, message in (("rules.txt:7", "", "rules.txt:7: " + e.message),
                                 ("rule 3", "rule: ", "rule 3: tp_dst: value '99999' does not "
                                                      "fit in 16 bits")):
        a = e.at(where, drop=drop)
        assert isinstance(a, ParseError) and a.message == message
        assert (a.text, a.pos, a.expected) == (e.text, e.pos, e.expected)
        assert a.context == e.context  # field, value, pos, expected: all of it
        assert str(a) == str(e).replace(e.message, message, 1)
