"""Metadata filters (`mbret.indexes.filters`): compiled conditions select exactly what a hand-written Python
predicate selects from a real SQLite table, and everything outside the grammar is refused with a one-line
message that names the offending token and its position."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mbret.errors import MbretError
from mbret.indexes.filters import Filter, compile_where, parse_param

VENUES = ["ACL", "EMNLP", "NAACL", "SIGIR", "acl-short"]
EDITORS = ["Ana", "Bo", "Cy"]


def _rows(n: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        year = rng.randint(2000, 2024)
        meta: dict[str, Any] = {
            "year": year,
            "venue": rng.choice(VENUES),
            "score": round(rng.random(), 3),
            "open": rng.random() < 0.5,
            "pub date": f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "it's": rng.randint(0, 2),
        }
        editor = rng.random()
        if editor < 1 / 3:
            meta["editor"] = None  # present but null
        elif editor < 2 / 3:
            meta["editor"] = rng.choice(EDITORS)
        rows.append(meta)  # else: no editor at all
    return rows


ROWS = _rows()
FIELDS = sorted({key for meta in ROWS for key in meta})


@pytest.fixture(scope="module")
def db() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE documents(pos INTEGER PRIMARY KEY, metadata TEXT)")
    conn.executemany("INSERT INTO documents VALUES (?, ?)", [(i, json.dumps(m)) for i, m in enumerate(ROWS)])
    yield conn
    conn.close()


def _select(db: sqlite3.Connection, compiled: Filter) -> list[int]:
    return [r[0] for r in db.execute(f"SELECT pos FROM documents WHERE {compiled.sql} ORDER BY pos", compiled.params)]


def _like_prefix(value: str, prefix: str) -> bool:  # SQLite's LIKE is case-insensitive for ASCII
    return value.lower().startswith(prefix.lower())


Predicate = Callable[[dict[str, Any]], bool]
# name -> (condition, params, the rows it must select, written by hand with SQL's NULL rules: a comparison
# with a missing or null field is neither true nor false, so neither it nor its NOT selects the row)
CONDITIONS: dict[str, tuple[str, list[Any], Predicate]] = {
    "equal": ("year = ?", [2010], lambda m: m["year"] == 2010),
    "not equal <>": ("venue <> ?", ["ACL"], lambda m: m["venue"] != "ACL"),
    "range": ("year >= ? AND year < ?", [2005, 2010], lambda m: 2005 <= m["year"] < 2010),
    "float": ("score > ?", [0.5], lambda m: m["score"] > 0.5),
    "boolean true": ("open = ?", [True], lambda m: m["open"] is True),
    "boolean false ==": ("open == ?", [False], lambda m: m["open"] is False),
    "in": ("venue IN (?, ?)", ["ACL", "SIGIR"], lambda m: m["venue"] in ("ACL", "SIGIR")),
    "not in": ("venue NOT IN (?, ?, ?)", ["ACL", "EMNLP", "NAACL"], lambda m: m["venue"] in ("SIGIR", "acl-short")),
    "like": ("venue LIKE ?", ["acl%"], lambda m: _like_prefix(m["venue"], "acl")),
    "not like": ("venue NOT LIKE ?", ["%l"], lambda m: not m["venue"].lower().endswith("l")),
    "between": ("score BETWEEN ? AND ?", [0.25, 0.5], lambda m: 0.25 <= m["score"] <= 0.5),
    "not between": ("year NOT BETWEEN ? AND ?", [2005, 2019], lambda m: not 2005 <= m["year"] <= 2019),
    "is null (missing or null)": ("editor IS NULL", [], lambda m: m.get("editor") is None),
    "is not null": ("editor IS NOT NULL", [], lambda m: m.get("editor") is not None),
    "!= skips nulls": ("editor != ?", ["Ana"], lambda m: m.get("editor") not in (None, "Ana")),
    "NOT skips nulls too": ("NOT editor = ?", ["Ana"], lambda m: m.get("editor") not in (None, "Ana")),
    "AND before OR": (
        "venue = ? OR year < ? AND open = ?",
        ["SIGIR", 2005, True],
        lambda m: m["venue"] == "SIGIR" or (m["year"] < 2005 and m["open"]),
    ),
    "parentheses": (
        "(venue = ? OR year < ?) AND open = ?",
        ["SIGIR", 2005, True],
        lambda m: (m["venue"] == "SIGIR" or m["year"] < 2005) and m["open"],
    ),
    "NOT before AND": ("NOT open = ? AND year > ?", [True, 2015], lambda m: not m["open"] and m["year"] > 2015),
    "NOT over parentheses": (
        "NOT (open = ? AND year > ?)",
        [True, 2015],
        lambda m: not (m["open"] and m["year"] > 2015),
    ),
    "NOT NOT": ("NOT NOT open = ?", [False], lambda m: not m["open"]),
    "quoted field with a space": ('"pub date" >= ?', ["2015-06-01"], lambda m: m["pub date"] >= "2015-06-01"),
    "quoted field with a quote": ('"it\'s" = ?', [1], lambda m: m["it's"] == 1),
    "field against field": ('score < "it\'s"', [], lambda m: m["score"] < m["it's"]),
    "keywords in any case": (
        "year between ? and ? Or venue in (?) aNd NOT editor is null",
        [2000, 2003, "NAACL"],
        lambda m: 2000 <= m["year"] <= 2003 or (m["venue"] == "NAACL" and m.get("editor") is not None),
    ),
    "? against ?": ("? = ? AND year = ?", [1, 1, 2010], lambda m: m["year"] == 2010),
    "free whitespace": (
        "\tyear>=?\nAND(venue=?)  ",
        [2020, "ACL"],
        lambda m: m["year"] >= 2020 and m["venue"] == "ACL",
    ),
}


@pytest.mark.parametrize("name", list(CONDITIONS))
def test_condition_selects_what_the_python_predicate_selects(db: sqlite3.Connection, name: str) -> None:
    where, params, predicate = CONDITIONS[name]
    expected = [i for i, m in enumerate(ROWS) if predicate(m)]
    assert 0 < len(expected) < len(ROWS), (name, len(expected))  # the condition discriminates
    compiled = compile_where(where, params, FIELDS)
    assert _select(db, compiled) == expected, name


def test_the_fragment_combines_safely_with_more_sql(db: sqlite3.Connection) -> None:
    """Every node is parenthesised: an OR condition stays one term under an outer AND."""
    compiled = compile_where("venue = ? OR venue = ?", ["ACL", "SIGIR"], FIELDS)
    got = [
        r[0] for r in db.execute(f"SELECT pos FROM documents WHERE pos < ? AND {compiled.sql}", (50, *compiled.params))
    ]
    assert got == [i for i, m in enumerate(ROWS[:50]) if m["venue"] in ("ACL", "SIGIR")]


def test_compiled_sql_params_and_fields() -> None:
    compiled = compile_where('"pub date" = ? OR year == ? OR "pub date" IS NULL', ["2020-01-01", True], FIELDS)
    assert compiled == Filter(
        sql="((json_extract(metadata, '$.\"pub date\"') = ?) OR (json_extract(metadata, '$.\"year\"') = ?)"
        " OR (json_extract(metadata, '$.\"pub date\"') IS NULL))",
        params=("2020-01-01", 1),
        fields=("pub date", "year"),
    )
    assert compile_where("open = ?", [False], FIELDS).params == (0,)
    assert compile_where("editor IS NOT NULL OR editor = ?", [None], FIELDS).params == (None,)
    assert type(compile_where("score < ?", [1], FIELDS).params[0]) is int  # other types kept as given


def test_field_names_are_escaped_into_the_json_path(db: sqlite3.Connection) -> None:
    name = "a\"b'c\\d"
    compiled = compile_where('"a""b\'c\\d" = ?', [7], [name])
    assert compiled.fields == (name,)
    assert compiled.sql == "(json_extract(metadata, '$.\"a\\\"b''c\\\\d\"') = ?)"
    row = db.execute(f"SELECT {compiled.sql.replace('metadata', '?', 1)}", (json.dumps({name: 7}), 7)).fetchone()
    if sqlite3.sqlite_version_info >= (3, 45, 0):  # older SQLite does not unescape a quote in a path label
        assert row == (1,)
    # a backslash alone works on every version
    slash = compile_where('"x\\y" = ?', [7], ["x\\y"])
    assert db.execute(f"SELECT {slash.sql.replace('metadata', '?', 1)}", (json.dumps({"x\\y": 7}), 7)).fetchone() == (
        1,
    )


def test_an_sql_keyword_can_be_a_field_in_double_quotes(db: sqlite3.Connection) -> None:
    with pytest.raises(MbretError, match=r"SQL keyword 'key' at position 1 .*write it in double quotes: \"key\""):
        compile_where("key = ?", [1], ["key"])
    compiled = compile_where('"key" = ?', [1], ["key"])
    assert compiled.fields == ("key",)


REFUSED = [  # (condition, params, what the message must say)
    (
        "year = 2020",
        [],
        ["literal values are not allowed: '2020' at position 8", "write `?`", "pass the value in params"],
    ),
    ("year = '2020'", [], ["literal values are not allowed: \"'2020'\" at position 8", "pass the value in params"]),
    ("year = -1.5e3", [], ["literal values are not allowed: '-1.5e3' at position 8"]),
    ("year = x'07'", [], ["literal values are not allowed: \"x'07'\" at position 8"]),
    ("open = TRUE", [], ["literal values are not allowed: 'TRUE' at position 8", "pass the value in params"]),
    ("editor = NULL", [], ["'NULL' at position 10", "IS NULL"]),
    ("year = ?; DROP TABLE documents", [1], ["semicolons are not allowed: ';' at position 9"]),
    ("year = ? -- x", [1], ["comments are not allowed: '--' at position 10"]),
    ("year = ? /* */", [1], ["comments are not allowed: '/*' at position 10"]),
    ("length(venue) > ?", [3], ["function calls are not allowed: length( at position 1"]),
    ('"length" (venue) > ?', [3], ['function calls are not allowed: "length"( at position 1']),
    ("pos IN (SELECT pos FROM documents)", [], ["subqueries are not allowed", "'SELECT' at position 9"]),
    ("NOT EXISTS (?)", [1], ["subqueries are not allowed", "'EXISTS' at position 5"]),
    ("year = ? UNION ?", [1, 2], ["SQL keyword 'UNION' at position 10 is not allowed"]),
    ("year = ? ORDER BY year", [1], ["SQL keyword 'ORDER' at position 10"]),
    ("venue GLOB ?", ["A*"], ["SQL keyword 'GLOB' at position 7"]),
    (
        "yeer = ?",
        [2020],
        ['unknown field \'yeer\' at position 1; known fields: editor, "it\'s", open, "pub date", score, venue, year'],
    ),
    ("rowid = ?", [1], ["unknown field 'rowid' at position 1"]),  # a column name is not a field
    ("metadata IS NULL", [], ["unknown field 'metadata' at position 1"]),
    ("year = ?", [], ["the condition has 1 `?` placeholders but 0 parameters were given"]),
    ("year = ?", [2020, 2021], ["the condition has 1 `?` placeholders but 2 parameters were given"]),
    ("(year = ?", [1], ["unbalanced parentheses: '(' at position 1 is never closed"]),
    ("year = ?)", [1], ["unbalanced parentheses: ')' at position 9 has no matching '('"]),
    ("(year = ? venue = ?)", [1, "ACL"], ["expected ')'", "'venue' at position 11"]),
    ("", [], ["empty condition"]),
    ("  \n ", [], ["empty condition"]),
    ("year = ? AND", [1], ["expected a field name or `?`", "ends after 'AND' at position 10"]),
    ("year = ? venue = ?", [1, "ACL"], ["unexpected 'venue' at position 10 after a complete condition"]),
    ("year", [], ["expected a comparison", "ends after 'year' at position 1"]),
    ("year + ? > ?", [1, 2], ["operator '+' at position 6 is not allowed"]),
    ("venue || ? = ?", ["a", "b"], ["operator '||' at position 7 is not allowed"]),
    ("t.year = ?", [1], ["operator '.' at position 2"]),
    ("year = :y", [1], ["named placeholders are not allowed: ':y' at position 8"]),
    ("year = ?1", [1], ["numbered placeholders are not allowed: '?1' at position 8"]),
    ("year IS ?", [1], ["expected NULL after IS", "'?' at position 9"]),
    ("year NOT IS NULL", [], ["expected IN, LIKE or BETWEEN after NOT", "'IS' at position 10"]),
    ("year BETWEEN ? OR ?", [1, 2], ["expected AND", "'OR' at position 16"]),
    ("year IN ()", [], ["expected a field name or `?`", "')' at position 10"]),
    ("année = ?", [1], ["field name 'année' at position 1 must be written in double quotes: \"année\""]),
    ("`year` = ?", [1], ["'`' at position 1", "double quotes"]),
    ('"year = ?', [1], ["unterminated quoted field name", "position 1"]),
    ("year = ?\x00", [1], ["unexpected character '\\x00' at position 9"]),
    ("(" * 150 + "year = ?" + ")" * 150, [1], ["nests too deeply at position 101"]),
    ("year = ?", [[2020]], ["parameter 1 is a list; use a string, number, boolean or null"]),
    ("year = ? AND venue = ?", [2020, {"a": 1}], ["parameter 2 is a dict; use a string, number, boolean or null"]),
    ("year = ?", [b"2020"], ["parameter 1 is a bytes"]),
    ("year = ?", [2**64], ["parameter 1 is an integer outside SQLite's 64-bit range"]),
]


@pytest.mark.parametrize(("where", "params", "message"), REFUSED, ids=[repr(r[0])[:40] for r in REFUSED])
def test_refused_with_a_one_line_message(where: str, params: list[Any], message: list[str]) -> None:
    with pytest.raises(MbretError) as caught:
        compile_where(where, params, FIELDS)
    text = str(caught.value)
    assert text.startswith("where: ") and "\n" not in text, text
    for part in message:
        assert part in text, text


def test_unknown_field_message_lists_the_known_fields_or_says_there_are_none() -> None:
    with pytest.raises(MbretError) as caught:
        compile_where("yeer = ?", [2020], ["year", "venue"])
    assert str(caught.value) == "where: unknown field 'yeer' at position 1; known fields: venue, year"
    with pytest.raises(MbretError) as caught:
        compile_where("year = ?", [2020])
    assert str(caught.value) == "where: unknown field 'year' at position 1; the index has no metadata fields"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020", 2020),
        ("-3", -3),
        ("2.5", 2.5),
        ("1e3", 1000.0),
        ("true", True),
        ("false", False),
        ("null", None),
        ('"2020"', "2020"),
        ('"a \\"b\\""', 'a "b"'),
        ("ACL", "ACL"),
        ("2020-01-01", "2020-01-01"),
        ("NaN", "NaN"),  # not JSON: the raw text
        ("", ""),
    ],
)
def test_parse_param(text: str, expected: object) -> None:
    value = parse_param(text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text", ["[1]", '{"a": 1}', "[]"])
def test_parse_param_refuses_arrays_and_objects(text: str) -> None:
    with pytest.raises(MbretError) as caught:
        parse_param(text)
    assert str(caught.value).startswith(f"params: {text}: use a string, number, boolean or null")


def test_cli_params_select_the_same_rows_as_python_values(db: sqlite3.Connection) -> None:
    texts = ["2010", "true", '"SIGIR"']
    compiled = compile_where("year >= ? AND open = ? OR venue = ?", [parse_param(t) for t in texts], FIELDS)
    assert _select(db, compiled) == [
        i for i, m in enumerate(ROWS) if (m["year"] >= 2010 and m["open"]) or m["venue"] == "SIGIR"
    ]
