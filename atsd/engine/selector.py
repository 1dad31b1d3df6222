"""Selectors: which resources a request means, said by their tags instead of their names.

    board=imx8 and usb            board=imx8 && (usb || !slow)      not lab=b

Grammar (``and`` binds tighter than ``or``; ``!``/``&&``/``||`` are Jenkins' spellings)::

    expr    := term (("or" | "||") term)*
    term    := factor (("and" | "&&") factor)*
    factor  := ("not" | "!") factor | "(" expr ")" | KEY [("=" | "!=") VALUE]

A bare KEY asks that the tag be present; ``KEY=VALUE`` that it be present with that value;
``KEY!=VALUE`` that it be absent or different. Values compare as text (a YAML ``true`` is
``true``, ``4`` is ``4``); a value with spaces or operator characters is quoted ('...' or
"..."). ``and``, ``or`` and ``not`` are words of the language: a tag with such a name is
quoted too. A selector that does not parse is refused with the position (0-based) where it
went wrong, so the caller can point at it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .errors import BadRequest

MAX_LENGTH = 1024       # characters of selector text
MAX_DEPTH = 32          # nested parentheses and negations: bounds the parser's recursion

Match = Callable[[dict], bool]

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<op>&&|\|\||!=|==|=|!|\(|\))
  | (?P<quoted>'[^']*'|"[^"]*")
  | (?P<word>[A-Za-z0-9_.:/@+-]+)
""", re.VERBOSE)

_KEYWORDS = {"and": "&&", "or": "||", "not": "!"}


@dataclass(slots=True)
class Token:
    kind: str       # op, word, quoted, end
    text: str
    pos: int


def tag_text(value) -> str:
    """How a tag value reads in a selector: YAML booleans as true/false, numbers as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _tokens(text: str) -> list[Token]:
    out = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise _error(f"unexpected character {text[pos]!r}", pos)
        kind = m.lastgroup
        if kind == "word" and m.group() in _KEYWORDS:
            out.append(Token("op", _KEYWORDS[m.group()], pos))
        elif kind == "quoted":
            out.append(Token("quoted", m.group()[1:-1], pos))
        elif kind != "space":
            out.append(Token(kind, m.group(), pos))
        pos = m.end()
    out.append(Token("end", "", len(text)))
    return out


def _error(what: str, pos: int) -> BadRequest:
    return BadRequest(f"selector: {what} at position {pos}", position=pos)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self, *ops: str) -> Token | None:
        t = self.tok
        if t.kind == "op" and t.text in ops:
            self.i += 1
            return t
        return None

    def expr(self) -> Match:
        parts = [self.term()]
        while self.take("||"):
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else (lambda tags: any(p(tags) for p in parts))

    def term(self) -> Match:
        parts = [self.factor()]
        while self.take("&&"):
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else (lambda tags: all(p(tags) for p in parts))

    def factor(self) -> Match:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _error(f"nested more than {MAX_DEPTH} deep", self.tok.pos)
        try:
            if self.take("!"):
                inner = self.factor()
                return lambda tags: not inner(tags)
            opening = self.take("(")
            if opening:
                inner = self.expr()
                if not self.take(")"):
                    raise _error(f"expected ) to close the ( at {opening.pos}, "
                                 f"found {self._found()}", self.tok.pos)
                return inner
            return self.comparison()
        finally:
            self.depth -= 1

    def comparison(self) -> Match:
        if self.tok.kind not in ("word", "quoted"):
            raise _error(f"expected a tag name, found {self._found()}", self.tok.pos)
        key = self.tok.text
        self.i += 1
        op = self.take("=", "==", "!=")
        if op is None:
            return lambda tags: key in tags
        if self.tok.kind not in ("word", "quoted"):
            raise _error(f"expected a value after {op.text}, found {self._found()}",
                         self.tok.pos)
        value = self.tok.text
        self.i += 1
        if op.text == "!=":
            return lambda tags: key not in tags or tag_text(tags[key]) != value
        return lambda tags: key in tags and tag_text(tags[key]) == value

    def _found(self) -> str:
        t = self.tok
        return "the end" if t.kind == "end" else repr(t.text)


def parse(text: str) -> Match:
    """The predicate over a resource's tags that ``text`` says, or BadRequest saying where
    it is wrong."""
    if not text.strip():
        raise _error("empty selector", 0)
    if len(text) > MAX_LENGTH:
        raise _error(f"longer than {MAX_LENGTH} characters", MAX_LENGTH)
    p = _Parser(text)
    match = p.expr()
    if p.tok.kind != "end":
        raise _error(f"unexpected {p._found()}", p.tok.pos)
    return match
