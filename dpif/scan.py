"""A tiny scanner for OVS-style nested text: ``name(a=1,b=(2)),x``.

It tracks the position so every ParseError names where the text went wrong
and what was expected there.
"""

from __future__ import annotations

from dpif.errors import ParseError


class Scanner:
    __slots__ = ("text", "pos", "what")

    def __init__(self, text: str, what: str = "flow", pos: int = 0) -> None:
        self.text = text
        self.pos = pos
        self.what = what

    def error(self, message: str, expected: str | None = None,
              pos: int | None = None) -> ParseError:
        return ParseError(f"{self.what}: {message}", text=self.text,
                          pos=self.pos if pos is None else pos, expected=expected)

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self, s: str) -> bool:
        return self.text.startswith(s, self.pos)

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def accept(self, s: str) -> bool:
        if self.text.startswith(s, self.pos):
            self.pos += len(s)
            return True
        return False

    def expect(self, s: str) -> None:
        if not self.accept(s):
            found = self.text[self.pos:self.pos + 10] or "end of text"
            raise self.error(f"expected {s!r}, found {found!r}", expected=repr(s))

    def ident(self) -> str:
        start = self.pos
        t = self.text
        while self.pos < len(t) and (t[self.pos].isalnum() or t[self.pos] in "_"):
            self.pos += 1
        if start == self.pos:
            found = t[start:start + 10] or "end of text"
            raise self.error(f"expected a name, found {found!r}", expected="name")
        return t[start:self.pos]

    def peek_ident(self) -> str | None:
        """The name at the cursor, without moving, or None."""
        end = self.pos
        t = self.text
        while end < len(t) and (t[end].isalnum() or t[end] == "_"):
            end += 1
        return t[self.pos:end] or None

    def until(self, stops: str) -> str:
        """Text up to (not including) a char of ``stops`` at paren depth 0."""
        start, depth, t = self.pos, 0, self.text
        while self.pos < len(t):
            c = t[self.pos]
            if c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and c in stops:
                break
            self.pos += 1
        return t[start:self.pos]
