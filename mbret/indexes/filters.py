"""Metadata filters: a user's condition in SQLite syntax, checked and turned into SQL over the document
store's `metadata` JSON column before it runs.

Hand-written (a tokenizer and a recursive-descent parser) because nothing in `sqlite3` can say, before a
condition runs, which functions, tables and sub-selects it uses: an authorizer callback still lets function
calls through, and pasting a condition into SQL unparsed is an injection. The grammar is small:

    condition := and_expr (OR and_expr)*
    and_expr  := not_expr (AND not_expr)*
    not_expr  := NOT not_expr | predicate
    predicate := '(' condition ')'
               | operand ('=' | '==' | '!=' | '<>' | '<' | '<=' | '>' | '>=') operand
               | operand [NOT] IN '(' operand (',' operand)* ')'
               | operand [NOT] LIKE operand
               | operand [NOT] BETWEEN operand AND operand
               | operand IS [NOT] NULL
    operand   := field | '?'
    field     := a name ([A-Za-z_][A-Za-z0-9_]*, not a keyword) or a "double-quoted name"

Values are always bound parameters (`?`), never literals; fields must be known to the index.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mbret.errors import MbretError

KEYWORDS = {"AND", "OR", "NOT", "IN", "LIKE", "BETWEEN", "IS", "NULL"}
COMPARISONS = {"=", "==", "!=", "<>", "<", "<=", ">", ">="}
_TOKEN = re.compile(
    r'\s*(?:(?P<op><=|>=|==|!=|<>|[=<>(),?])|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<quoted>"(?:[^"]|"")*")'
    r"|(?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)|(?P<string>'(?:[^']|'')*')|(?P<other>\S))"
)


@dataclass(frozen=True)
class Filter:
    """A checked condition: `sql` (a boolean SQL expression over the `metadata` column, fields as
    `json_extract` calls), its `params` in order, and the `fields` it names."""

    sql: str
    params: tuple[object, ...]
    fields: tuple[str, ...]


@dataclass(frozen=True)
class _Token:
    kind: str  # op, name, keyword, field, end
    text: str
    position: int  # 1-based character position


def _fail(message: str) -> MbretError:
    return MbretError(f"--where: {message}")


def _tokens(where: str) -> list[_Token]:
    out, at = [], 0
    while at < len(where):
        match = _TOKEN.match(where, at)
        if match is None:  # only trailing whitespace is left
            break
        kind = match.lastgroup or "other"
        text = match.group(kind)
        position = match.start(kind) + 1
        at = match.end()
        if kind == "other":
            if where.startswith(("--", "/*"), match.start(kind)) or text == ";":
                raise _fail(
                    f"{text!r} at position {position} is not allowed (one condition, no comments or statements)"
                )
            raise _fail(f"unexpected {text!r} at position {position}")
        if kind in ("number", "string"):
            raise _fail(
                f"literal {text} at position {position}: pass values as parameters, a ? in the condition and "
                "its value in params (CLI: --param VALUE)"
            )
        if kind == "name":
            if text.upper() in KEYWORDS:
                kind, text = "keyword", text.upper()
            elif where[at:].lstrip().startswith("("):
                raise _fail(f"function calls are not allowed: {text}( at position {position}")
            elif text.upper() in {"SELECT", "FROM", "WHERE", "UNION", "EXISTS", "CASE", "CAST", "TRUE", "FALSE"}:
                raise _fail(f"{text!r} at position {position} is not allowed in a condition")
            else:
                kind = "field"
        elif kind == "quoted":
            kind, text = "field", text[1:-1].replace('""', '"')
        out.append(_Token(kind, text, position))
    out.append(_Token("end", "", len(where) + 1))
    return out


class _Parser:
    def __init__(self, tokens: list[_Token], fields: set[str]) -> None:
        self.tokens, self.at, self.known = tokens, 0, fields
        self.used: list[str] = []
        self.placeholders = 0

    def peek(self) -> _Token:
        return self.tokens[self.at]

    def take(self) -> _Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def expect(self, kind: str, text: str | None = None) -> _Token:
        token = self.take()
        if token.kind != kind or (text is not None and token.text != text):
            wanted = text or kind
            found = repr(token.text) if token.kind != "end" else "the end"
            raise _fail(f"expected {wanted} at position {token.position}, found {found}")
        return token

    def is_keyword(self, *words: str) -> bool:
        token = self.peek()
        return token.kind == "keyword" and token.text in words

    def condition(self) -> str:
        parts = [self.and_expr()]
        while self.is_keyword("OR"):
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def and_expr(self) -> str:
        parts = [self.not_expr()]
        while self.is_keyword("AND"):
            self.take()
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def not_expr(self) -> str:
        if self.is_keyword("NOT"):
            self.take()
            return f"(NOT {self.not_expr()})"
        return self.predicate()

    def operand(self) -> str:
        token = self.take()
        if token.kind == "op" and token.text == "?":
            self.placeholders += 1
            return "?"
        if token.kind == "field":
            if token.text not in self.known:
                known = ", ".join(sorted(self.known)) if self.known else "none (the index has no metadata fields)"
                raise _fail(f"unknown field {token.text!r} at position {token.position}; known fields: {known}")
            if token.text not in self.used:
                self.used.append(token.text)
            path = "$." + json.dumps(token.text)  # a JSON path member, quoted
            return "json_extract(metadata, '" + path.replace("'", "''") + "')"
        found = repr(token.text) if token.kind != "end" else "the end"
        raise _fail(f"expected a field name or ? at position {token.position}, found {found}")

    def predicate(self) -> str:
        token = self.peek()
        if token.kind == "op" and token.text == "(":
            self.take()
            inner = self.condition()
            self.expect("op", ")")
            return f"({inner})"
        left = self.operand()
        token = self.peek()
        if token.kind == "op" and token.text in COMPARISONS:
            self.take()
            return f"({left} {token.text} {self.operand()})"
        if self.is_keyword("IS"):
            self.take()
            negate = self.is_keyword("NOT") and self.take() is not None
            self.expect("keyword", "NULL")
            return f"({left} IS {'NOT ' if negate else ''}NULL)"
        negate = self.is_keyword("NOT") and self.take() is not None
        prefix = "NOT " if negate else ""
        if self.is_keyword("IN"):
            self.take()
            self.expect("op", "(")
            items = [self.operand()]
            while self.peek().kind == "op" and self.peek().text == ",":
                self.take()
                items.append(self.operand())
            self.expect("op", ")")
            return f"({left} {prefix}IN ({', '.join(items)}))"
        if self.is_keyword("LIKE"):
            self.take()
            return f"({left} {prefix}LIKE {self.operand()})"
        if self.is_keyword("BETWEEN"):
            self.take()
            low = self.operand()
            self.expect("keyword", "AND")
            return f"({left} {prefix}BETWEEN {low} AND {self.operand()})"
        found = repr(token.text) if token.kind != "end" else "the end"
        raise _fail(
            f"expected a comparison, IN, LIKE, BETWEEN or IS [NOT] NULL at position {token.position}, found {found}"
        )


def _bind(value: object, number: int) -> object:
    if isinstance(value, bool):
        return int(value)  # what json_extract gives for true and false
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise _fail(f"parameter {number} is a {type(value).__name__}; use a string, number, boolean or null")


def compile_where(where: str, params: Sequence[object] = (), fields: Iterable[str] = ()) -> Filter:
    """Check `where` against the grammar and the known `fields`, and `params` against its `?`s; the SQL
    that selects the matching rows of the document store. Every refusal is one line naming what and where."""
    if not where or not where.strip():
        raise _fail("empty condition")
    parser = _Parser(_tokens(where), set(fields))
    sql = parser.condition()
    rest = parser.peek()
    if rest.kind != "end":
        raise _fail(f"unexpected {rest.text!r} at position {rest.position} after a complete condition")
    if parser.placeholders != len(params):
        raise _fail(f"the condition has {parser.placeholders} `?` placeholders but {len(params)} parameters were given")
    return Filter(sql, tuple(_bind(v, i) for i, v in enumerate(params, 1)), tuple(parser.used))


def parse_param(text: str) -> object:
    """A --param value: a JSON number, true, false, null or "string" as that; any other text as a string."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, (list, dict)):
        raise MbretError(f"--param {text}: use a string, number, boolean or null")
    return value
