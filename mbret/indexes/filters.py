"""Metadata filters: a user's `--where` condition, checked and turned into a safe SQL fragment.

Each document's metadata is a flat JSON object stored as text in the `metadata` column of the SQLite table
`documents`. A condition is written in a small subset of SQLite's expression syntax, over the metadata's
field names, with every value passed as a `?` parameter:

    year >= ? AND venue IN (?, ?) AND NOT "pub date" IS NULL        --param 2020 --param ACL --param EMNLP

The accepted grammar (keywords are case-insensitive, whitespace is free):

    condition  := or_expr
    or_expr    := and_expr ( OR and_expr )*
    and_expr   := not_expr ( AND not_expr )*
    not_expr   := NOT not_expr | predicate
    predicate  := '(' condition ')'
                | operand ( '=' | '==' | '!=' | '<>' | '<' | '<=' | '>' | '>=' ) operand
                | operand [NOT] IN '(' operand ( ',' operand )* ')'
                | operand [NOT] LIKE operand
                | operand [NOT] BETWEEN operand AND operand
                | operand IS [NOT] NULL
    operand    := field | '?'
    field      := [A-Za-z_][A-Za-z0-9_]* (not a keyword)  |  "double-quoted name" ("" escapes a quote)

Everything else is refused with a one-line `MbretError` that names the offending token and its 1-based
character position: literals (values must be `?` parameters), semicolons, comments, function calls, SQL
keywords outside the grammar (so no subqueries), operators outside the grammar, unknown field names,
unbalanced parentheses and trailing tokens.

Why a hand-written tokenizer and recursive-descent parser rather than handing the text to SQLite: the
`sqlite3` module cannot tell us which functions or tables a condition uses before running it, and an
authorizer callback (`Connection.set_authorizer`) still lets function calls through (`SQLITE_FUNCTION` is
reported per call, but the whole library of built-ins, `load_extension` settings aside, is reachable and a
deny-list is fragile). Parsing the condition ourselves means the SQL we return is *generated* from the parse
tree, never copied from the user's text: a field becomes `json_extract(metadata, '$."NAME"')` (only for
names in the index's known fields), a value is always a bound `?`, and every node of the tree is
parenthesised, so the fragment can be combined with other SQL (`... AND <sql>`) without precedence surprises.

A field that is missing from a document and a field whose value is JSON null both read as SQL NULL, so
`IS NULL` matches both, and (as in SQL) a comparison with NULL is neither true nor false. JSON true/false read
as 1/0, so boolean parameters are bound as 1/0. Field names that contain a double quote can only be matched by
SQLite 3.45 or newer (older versions do not unescape JSON path labels).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mbret.errors import MbretError, ParameterError

__all__ = ["Filter", "compile_where", "field_sql", "parse_param"]

_VALUE_HINT = "write `?` and pass the value in params"
_OPERATOR_HINT = "use =, !=, <, <=, >, >=, [NOT] IN, [NOT] LIKE, [NOT] BETWEEN, IS [NOT] NULL, AND, OR, NOT"
_MAX_DEPTH = 100
_INT64 = (-(2**63), 2**63 - 1)

# Keywords of the grammar above.
_GRAMMAR_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "LIKE", "BETWEEN", "IS", "NULL"})
_LITERAL_WORDS = frozenset({"TRUE", "FALSE"})
_SUBQUERY_KEYWORDS = frozenset({"SELECT", "WITH", "VALUES", "EXISTS"})
# SQLite's keywords (https://www.sqlite.org/lang_keywords.html): refused unquoted, so a condition cannot
# smuggle in any other SQL. A field with one of these names can still be written in double quotes.
_SQLITE_KEYWORDS = """
    ABORT ACTION ADD AFTER ALL ALTER ALWAYS ANALYZE AND AS ASC ATTACH AUTOINCREMENT BEFORE BEGIN BETWEEN BY
    CASCADE CASE CAST CHECK COLLATE COLUMN COMMIT CONFLICT CONSTRAINT CREATE CROSS CURRENT CURRENT_DATE
    CURRENT_TIME CURRENT_TIMESTAMP DATABASE DEFAULT DEFERRABLE DEFERRED DELETE DESC DETACH DISTINCT DO DROP
    EACH ELSE END ESCAPE EXCEPT EXCLUDE EXCLUSIVE EXISTS EXPLAIN FAIL FILTER FIRST FOLLOWING FOR FOREIGN FROM
    FULL GENERATED GLOB GROUP GROUPS HAVING IF IGNORE IMMEDIATE IN INDEX INDEXED INITIALLY INNER INSERT INSTEAD
    INTERSECT INTO IS ISNULL JOIN KEY LAST LEFT LIKE LIMIT MATCH MATERIALIZED NATURAL NO NOT NOTHING NOTNULL
    NULL NULLS OF OFFSET ON OR ORDER OTHERS OUTER OVER PARTITION PLAN PRAGMA PRECEDING PRIMARY QUERY RAISE
    RANGE RECURSIVE REFERENCES REGEXP REINDEX RELEASE RENAME REPLACE RESTRICT RETURNING RIGHT ROLLBACK ROW
    ROWS SAVEPOINT SELECT SET TABLE TEMP TEMPORARY THEN TIES TO TRANSACTION TRIGGER UNBOUNDED UNION UNIQUE
    UPDATE USING VACUUM VALUES VIEW VIRTUAL WHEN WHERE WINDOW WITH WITHOUT
    """
_SQL_KEYWORDS = frozenset(_SQLITE_KEYWORDS.split())
_COMPARISONS = {"=": "=", "==": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class Filter:
    """A checked condition: `sql` is a boolean SQL expression over `documents.metadata` to use with `params`."""

    sql: str
    params: tuple
    fields: tuple[str, ...]


@dataclass(frozen=True)
class _Token:
    kind: str  # "name" (a field: plain or quoted), "kw", "op", "(", ")", ",", "?", "end"
    text: str  # the source text (for "kw": upper-cased)
    pos: int  # 1-based character position of the token's first character
    value: str = ""  # "name": the field name; "op": the normalised comparison operator


def _fail(message: str) -> ParameterError:
    return ParameterError("where", message)


def _show(text: str, limit: int = 40) -> str:
    """A token's text for an error message: quoted, escaped onto one line, shortened."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)


def _written(name: str) -> str:
    """How a field name is written in a condition (plain when it can be, otherwise double-quoted)."""
    if _PLAIN_NAME.match(name) and name.upper() not in _SQL_KEYWORDS and name.upper() not in _LITERAL_WORDS:
        return name
    quoted = '"' + name.replace('"', '""') + '"'
    return quoted if quoted.isprintable() else repr(quoted)


def field_sql(name: str) -> str:
    """The SQL expression a condition reads field `name` with (the document store indexes exactly this)."""
    path = '$."' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "json_extract(metadata, '" + path.replace("'", "''") + "')"


# ---------------------------------------------------------------------------------------------- tokenizer


def _word_end(text: str, i: int) -> int:
    """End of the SQL-ish word (identifier characters as SQLite sees them) that starts at `i`."""
    n = len(text)
    while i < n and (text[i].isalnum() or text[i] in "_$"):
        i += 1
    return i


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _tokenize(text: str, known: frozenset[str]) -> list[_Token]:
    tokens: list[_Token] = []
    n = len(text)
    i = 0
    while True:
        i = _skip_space(text, i)
        if i >= n:
            tokens.append(_Token("end", "", n + 1))
            return tokens
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        pos = i + 1
        if c == ";":
            raise _fail(f"semicolons are not allowed: ';' at position {pos}; the condition is a single expression")
        if (c == "-" and nxt == "-") or (c == "/" and nxt == "*"):
            raise _fail(f"comments are not allowed: {c + nxt!r} at position {pos}")
        if c == "'" or (c in "xX" and nxt == "'"):  # a string or a blob literal
            j = i + 1 if c == "'" else i + 2
            while j < n:
                if text[j] == "'":
                    if j + 1 < n and text[j + 1] == "'":
                        j += 2
                        continue
                    j += 1
                    break
                j += 1
            raise _fail(f"literal values are not allowed: {_show(text[i:j])} at position {pos}; {_VALUE_HINT}")
        if c.isdigit() or (c == "." and nxt.isdigit()) or (c in "+-" and (nxt.isdigit() or nxt == ".")):
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] in "._" or (text[j] in "+-" and text[j - 1] in "eE")):
                j += 1
            raise _fail(f"literal values are not allowed: {_show(text[i:j])} at position {pos}; {_VALUE_HINT}")
        if c == '"':
            j = i + 1
            parts = []
            while True:
                k = text.find('"', j)
                if k < 0:
                    raise _fail(f"unterminated quoted field name {_show(text[i:])} at position {pos}")
                parts.append(text[j:k])
                if k + 1 < n and text[k + 1] == '"':
                    parts.append('"')
                    j = k + 2
                    continue
                j = k + 1
                break
            name = "".join(parts)
            if "\x00" in name:
                raise _fail(f"field names may not contain NUL characters: {_show(text[i:j])} at position {pos}")
            tokens.append(_field_token(text, i, j, name))
            i = j
            continue
        if c == "?":
            if nxt.isdigit():
                j = _word_end(text, i + 1)
                raise _fail(f"numbered placeholders are not allowed: {_show(text[i:j])} at position {pos}; use `?`")
            tokens.append(_Token("?", "?", pos))
            i += 1
            continue
        if c in ":@$" and nxt and (nxt.isalnum() or nxt == "_"):
            j = _word_end(text, i + 1)
            raise _fail(f"named placeholders are not allowed: {_show(text[i:j])} at position {pos}; use `?`")
        if c in "(),":
            tokens.append(_Token(c, c, pos))
            i += 1
            continue
        two = text[i : i + 2]
        if two in ("<<", ">>", "||"):
            raise _fail(f"operator {two!r} at position {pos} is not allowed; {_OPERATOR_HINT}")
        if two in _COMPARISONS:
            tokens.append(_Token("op", two, pos, _COMPARISONS[two]))
            i += 2
            continue
        if c in _COMPARISONS:
            tokens.append(_Token("op", c, pos, _COMPARISONS[c]))
            i += 1
            continue
        if c.isalpha() or c == "_":
            j = _word_end(text, i)
            word = text[i:j]
            if not _PLAIN_NAME.match(word):
                raise _fail(
                    f"field name {_show(word)} at position {pos} must be written in double quotes: {_written(word)}"
                )
            upper = word.upper()
            if upper in _GRAMMAR_KEYWORDS:
                tokens.append(_Token("kw", upper, pos))
            elif upper in _LITERAL_WORDS:
                raise _fail(
                    f"literal values are not allowed: {word!r} at position {pos}; {_VALUE_HINT} (booleans bind as 1/0)"
                )
            elif upper in _SUBQUERY_KEYWORDS:
                raise _fail(f"subqueries are not allowed: SQL keyword {word!r} at position {pos}")
            elif text[_skip_space(text, j) : _skip_space(text, j) + 1] == "(":
                raise _fail(f"function calls are not allowed: {word}( at position {pos}")
            elif upper in _SQL_KEYWORDS:
                hint = ""
                if word in known:
                    hint = f"; to use the field {word!r}, write it in double quotes: {_written(word)}"
                raise _fail(f"SQL keyword {word!r} at position {pos} is not allowed{hint}")
            else:
                tokens.append(_field_token(text, i, j, word))
            i = j
            continue
        if c in "`[":
            raise _fail(f"unexpected character {c!r} at position {pos}; write field names in double quotes")
        if c in "+-*/%&|~!<>=.":
            raise _fail(f"operator {c!r} at position {pos} is not allowed; {_OPERATOR_HINT}")
        raise _fail(f"unexpected character {c!r} at position {pos}")


def _field_token(text: str, start: int, end: int, name: str) -> _Token:
    after = _skip_space(text, end)
    if text[after : after + 1] == "(":
        raise _fail(f"function calls are not allowed: {_show(text[start:end])[1:-1]}( at position {start + 1}")
    return _Token("name", text[start:end], start + 1, name)


# ------------------------------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, tokens: list[_Token], known: frozenset[str]) -> None:
        self.tokens = tokens
        self.known = known
        self.i = 0
        self.depth = 0
        self.fields: dict[str, None] = {}
        self.placeholders = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at_kw(self, *words: str) -> bool:
        return self.tok.kind == "kw" and self.tok.text in words

    def expected(self, what: str) -> MbretError:
        tok = self.tok
        if tok.kind == "end":
            prev = self.tokens[self.i - 1]
            return _fail(f"expected {what} but the condition ends after {_show(prev.text)} at position {prev.pos}")
        return _fail(f"expected {what} but found {_show(tok.text)} at position {tok.pos}")

    def condition(self) -> str:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _fail(f"the condition nests too deeply at position {self.tok.pos} (more than {_MAX_DEPTH} levels)")
        terms = [self.and_expr()]
        while self.at_kw("OR"):
            self.take()
            terms.append(self.and_expr())
        self.depth -= 1
        return terms[0] if len(terms) == 1 else "(" + " OR ".join(terms) + ")"

    def and_expr(self) -> str:
        terms = [self.not_expr()]
        while self.at_kw("AND"):
            self.take()
            terms.append(self.not_expr())
        return terms[0] if len(terms) == 1 else "(" + " AND ".join(terms) + ")"

    def not_expr(self) -> str:
        nots = 0
        while self.at_kw("NOT"):
            self.take()
            nots += 1
            if nots > _MAX_DEPTH:
                raise _fail(f"too many NOTs in a row at position {self.tok.pos}")
        sql = self.predicate()
        for _ in range(nots):
            sql = f"(NOT {sql})"
        return sql

    def predicate(self) -> str:
        if self.tok.kind == "(":
            opening = self.take()
            inner = self.condition()
            if self.tok.kind == ")":
                self.take()
                return inner
            if self.tok.kind == "end":
                raise _fail(f"unbalanced parentheses: '(' at position {opening.pos} is never closed")
            raise self.expected(f"')' to close '(' at position {opening.pos}")
        left = self.operand()
        tok = self.tok
        if tok.kind == "op":
            self.take()
            return f"({left} {tok.value} {self.operand()})"
        negate = ""
        if self.at_kw("NOT"):
            self.take()
            negate = "NOT "
            if not self.at_kw("IN", "LIKE", "BETWEEN"):
                raise self.expected("IN, LIKE or BETWEEN after NOT")
        if self.at_kw("IN"):
            self.take()
            if self.tok.kind != "(":
                raise self.expected("'(' after IN")
            self.take()
            items = [self.operand()]
            while self.tok.kind == ",":
                self.take()
                items.append(self.operand())
            if self.tok.kind != ")":
                raise self.expected("',' or ')' in the IN list")
            self.take()
            return f"({left} {negate}IN ({', '.join(items)}))"
        if self.at_kw("LIKE"):
            self.take()
            return f"({left} {negate}LIKE {self.operand()})"
        if self.at_kw("BETWEEN"):
            self.take()
            low = self.operand()
            if not self.at_kw("AND"):
                raise self.expected("AND in BETWEEN ... AND ...")
            self.take()
            return f"({left} {negate}BETWEEN {low} AND {self.operand()})"
        if not negate and self.at_kw("IS"):
            self.take()
            if self.at_kw("NOT"):
                self.take()
                negate = "NOT "
            if not self.at_kw("NULL"):
                raise self.expected("NULL after IS" + (" NOT" if negate else "") + " (compare values with = or !=)")
            self.take()
            return f"({left} IS {negate}NULL)"
        raise self.expected("a comparison (=, !=, <, <=, >, >=), IN, LIKE, BETWEEN or IS")

    def operand(self) -> str:
        tok = self.tok
        if tok.kind == "?":
            self.take()
            self.placeholders += 1
            return "?"
        if tok.kind == "name":
            if tok.value not in self.known:
                if self.known:
                    known = "known fields: " + ", ".join(_written(f) for f in sorted(self.known))
                else:
                    known = "the index has no metadata fields"
                raise _fail(f"unknown field {_show(tok.value)} at position {tok.pos}; {known}")
            self.take()
            self.fields.setdefault(tok.value, None)
            return field_sql(tok.value)
        if self.at_kw("NULL"):
            raise _fail(
                f"literal values are not allowed: 'NULL' at position {tok.pos}; "
                "to test for a missing value use `IS NULL` or `IS NOT NULL`"
            )
        raise self.expected("a field name or `?`")


# ------------------------------------------------------------------------------------------------- public


def _coerce(index: int, value: object) -> object:
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise _fail(f"parameter {index} is an integer outside SQLite's 64-bit range: {value}")
        return value if type(value) is int else int(value)
    if isinstance(value, float):
        return value if type(value) is float else float(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise _fail(f"parameter {index} contains a NUL character")
        return value if type(value) is str else str(value)
    kind = type(value).__name__
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    raise _fail(f"parameter {index} is {article} {kind}; use a string, number, boolean or null")


def compile_where(where: str, params: Sequence[object] = (), fields: Iterable[str] = ()) -> Filter:
    """Check a `--where` condition against the grammar and the known `fields`; raise `MbretError` if refused.

    Returns the SQL boolean expression (over the `metadata` column of `documents`), the parameters to bind
    with it (booleans as 1/0), and the fields the condition uses, in first-use order.
    """
    known = frozenset(fields)
    tokens = _tokenize(where or "", known)
    if tokens[0].kind == "end":
        raise _fail("empty condition; write e.g. `year >= ?` and pass the value (2020) in params")
    parser = _Parser(tokens, known)
    sql = parser.condition()
    tok = parser.tok
    if tok.kind == ")":
        raise _fail(f"unbalanced parentheses: ')' at position {tok.pos} has no matching '('")
    if tok.kind != "end":
        raise _fail(
            f"unexpected {_show(tok.text)} at position {tok.pos} after a complete condition; "
            "combine conditions with AND or OR"
        )
    params = tuple(params)
    if parser.placeholders != len(params):
        raise _fail(f"the condition has {parser.placeholders} `?` placeholders but {len(params)} parameters were given")
    coerced = tuple(_coerce(i, p) for i, p in enumerate(params, start=1))
    return Filter(sql=sql, params=coerced, fields=tuple(parser.fields))


def parse_param(text: str) -> object:
    """A `--param` value: a JSON number, true, false, null or "string" if the text is one, else the raw text."""

    def no_constant(name: str) -> object:  # NaN / Infinity are not JSON
        raise ValueError(name)

    try:
        value = json.loads(text, parse_constant=no_constant)
    except ValueError:
        return text
    if isinstance(value, (list, dict)):
        raise ParameterError(
            "params",
            f"{text}: use a string, number, boolean or null "
            f"(to pass this text as a string, write it as a JSON string: {json.dumps(text)})",
        )
    return value
