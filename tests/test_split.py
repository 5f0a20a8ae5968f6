"""pggit_export.read.sqlsplit gives exactly sqlparse.split()'s pieces, on every input.

Every check compares against sqlparse itself (never a hard-coded answer): the fixtures'
history texts, a generated benchmark corpus, hand-written edge cases, random joins of real
statements and random character soup. Checks on ``fast_split`` (the scanner alone, None
when it hands over to sqlparse) also assert that the fast path really takes the common
texts, so a scanner that always gave up could not pass.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import random
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import sqlparse

from pggit_export.read.sqlsplit import fast_split, split

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look the module up while building the class
    spec.loader.exec_module(module)
    return module


def _mismatches(texts: list[str]) -> list[tuple[str, list[str], list[str]]]:
    """The texts where split() and sqlparse.split() differ, with both answers."""
    out = []
    for text in texts:
        expected = sqlparse.split(text)
        got = split(text)
        if got != expected:
            out.append((text, got, expected))
    return out


def _fast_mismatches(texts: list[str]) -> tuple[list[tuple[str, list[str], list[str]]], int]:
    """Like _mismatches, for the scanner alone; also how many texts it handed over."""
    out = []
    fallbacks = 0
    for text in texts:
        got = fast_split(text)
        if got is None:
            fallbacks += 1
            continue
        expected = sqlparse.split(text)
        if got != expected:
            out.append((text, got, expected))
    return out, fallbacks


# ----------------------------------------------------------------------------- corpora


@functools.lru_cache(maxsize=None)
def fixture_texts() -> tuple[str, ...]:
    """Every SQL text the fixtures hold: migration texts, history rows, whole files."""
    texts: set[str] = set()
    demo = _load("split_demo_migrations", FIXTURES / "demo" / "migrations.py")
    texts.update(m.sql for m in demo.MIGRATIONS)
    fidelity = _load("split_fidelity_migrations", FIXTURES / "fidelity" / "migrations.py")
    texts.update(m.sql for m in fidelity.MIGRATIONS)
    adversarial = _load("split_adversarial_build", FIXTURES / "adversarial" / "build.py")
    texts.update(r.sql for r in adversarial.ROWS if r.sql is not None)
    files = sorted(FIXTURES.glob("*.sql")) + sorted(FIXTURES.glob("*/*.sql"))
    assert len(files) >= 7, files
    for path in files:
        content = path.read_text(encoding="utf-8")
        texts.add(content)
        # The history rows' sql_executed (and every other literal: more inputs, no harm).
        # E'' escapes are left as they are; any text is a valid input.
        for lit in re.finditer(r"'((?:[^']|'')*)'", content):
            texts.add(lit.group(1).replace("''", "'"))
    return tuple(sorted(texts))


@functools.lru_cache(maxsize=None)
def bench_migrations() -> tuple[object, ...]:
    generate = _load("split_bench_generate", ROOT / "bench" / "generate.py")
    return tuple(generate.generate_migrations(300, 100, 20220101))


def bench_texts() -> list[str]:
    texts = []
    for m in bench_migrations():
        texts.append(m.sql)  # type: ignore[attr-defined]
        texts.extend(m.statements)  # type: ignore[attr-defined]
    return texts


@functools.lru_cache(maxsize=None)
def other_test_texts() -> tuple[str, ...]:
    """String constants of the other test modules that look like SQL."""
    texts: set[str] = set()
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        if path.name == "test_split.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if ";" in node.value or re.match(r"\s*(CREATE|ALTER|DROP|SELECT|DO)\b", node.value, re.I):
                    texts.add(node.value)
    return tuple(sorted(texts))


@functools.lru_cache(maxsize=None)
def statement_pool() -> tuple[str, ...]:
    """Real statements, for the random joins."""
    pool: set[str] = set()
    for m in bench_migrations():
        pool.update(m.statements)  # type: ignore[attr-defined]
    for text in fixture_texts():
        if len(text) < 5000:
            pool.update(p for p in sqlparse.split(text) if p)
    return tuple(sorted(pool))


# ----------------------------------------------------------------------------- corpus tests


def test_fixture_texts() -> None:
    texts = list(fixture_texts())
    assert len(texts) > 500
    assert _mismatches(texts) == []
    wrong, fallbacks = _fast_mismatches(texts)
    assert wrong == []
    assert fallbacks < len(texts) * 0.05  # the fast path takes almost all of them


def test_fixture_histories_take_the_fast_path() -> None:
    demo = _load("split_demo_migrations", FIXTURES / "demo" / "migrations.py")
    fidelity = _load("split_fidelity_migrations", FIXTURES / "fidelity" / "migrations.py")
    for m in [*demo.MIGRATIONS, *fidelity.MIGRATIONS]:
        assert fast_split(m.sql) == sqlparse.split(m.sql), m.name


def test_bench_corpus() -> None:
    texts = bench_texts()
    assert len(texts) > 500
    wrong, fallbacks = _fast_mismatches(texts)
    assert wrong == []
    assert fallbacks == 0  # BEGIN;/COMMIT;, plpgsql bodies, comment headers: all fast


def test_other_test_modules_sql() -> None:
    texts = list(other_test_texts())
    assert len(texts) > 50
    assert _mismatches(texts) == []


# ----------------------------------------------------------------------------- edge cases

TRICKY = [
    # empty, whitespace, comments only
    "", " ", "\n\n", "\r\n", " \t\x0b\x0c ", ";", ";;", " ; ; ", "a;;b", ";\n;",
    "-- only", "-- only\n", "--only\n\n", "/* only */", "/* a */ -- b\n", "-- a\n-- b",
    "--+ hint", "SELECT 1; --+ hint\nSELECT 2", "/*+ hint */ SELECT 1;",
    # no trailing semicolon, whitespace and comments around statements
    "SELECT 1", "SELECT 1;", "SELECT 1; SELECT 2", "SELECT 1;\nSELECT 2;\n",
    "SELECT 1; -- trailing\nSELECT 2;", "SELECT 1; -- trailing", "SELECT 1; -- a\n-- b\nSELECT 2",
    "SELECT 1;\n-- header\nSELECT 2;", "SELECT 1; /* c */ SELECT 2;", "SELECT 1;/* c */\n",
    "SELECT 1;\r\nSELECT 2;\r\n", "SELECT 1;\rSELECT 2", "SELECT 1; -- c\r\nSELECT 2",
    "SELECT 1; -- c\rSELECT 2", "SELECT 1;\t\x0b\x0c-- c\r\n\tSELECT 2", "SELECT 1;\u00a0SELECT 2",
    "SELECT 1;\u2028SELECT 2", "SELECT 1;\x1cSELECT 2", "SELECT 1;\x85x", "SELECT 1;   \n   ",
    "  SELECT 1  ;  SELECT 2  ", "SELECT 1 -- c; not a split\n; SELECT 2", "SELECT 1;--c",
    # single-quoted strings
    "SELECT 'a;b'; SELECT 2", "SELECT 'it''s;'; x", "SELECT ''';'; x", "SELECT ''; x",
    "SELECT E'\\''; SELECT 2;", "SELECT 'a\\'; SELECT 2; -- '", "SELECT E'a\\\\'; b;",
    "SELECT 'a\\''; b'; c", "SELECT 'unterminated; SELECT 2", "SELECT 'a''; x",
    "SELECT 'x'--c\n; y", "COMMENT ON TABLE t IS 'a -- b /* c'; x", "SELECT U&'\\0041;'; x",
    "SELECT e'\\n;'; x", "SELECT B'1;'; x",
    # double-quoted identifiers
    'SELECT "a;b" FROM t; SELECT 2', 'CREATE TABLE "x""y;" (id int); z;', '"unterminated; x',
    'SELECT "a\\"b;"; x', 'SELECT "a\\"; x', 'SELECT ""; x', 'SELECT "a\nb;"; x',
    # dollar quotes and $n parameters
    "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql; SELECT 2;",
    "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $fn$\nBEGIN\n  IF x THEN RETURN 1; END IF;\n"
    "  LOOP EXIT; END LOOP;\n  RETURN CASE WHEN a THEN 1 END;\nEND;\n$fn$;\nSELECT 1;",
    "DO $$ BEGIN CREATE TABLE x (); END $$; SELECT 1", "$a$ ; $b$ ; $a$; x", "$$ unterminated; x",
    "SELECT $1; SELECT $2;", "PREPARE p AS SELECT $1::int; EXECUTE p(1);", "x$$ ; $$; y",
    "DO $fn$ BEGIN END $fn$; SELECT 1", "DO $Tag$ ; $tag$ ; $Tag$; x", "$$$$;x", '"a"$$ ; $$;',
    "SELECT $1$ ; $$ x", "SELECT $_x$;$_x$; y", "SELECT $é$;$é$; y", "SELECT $1x; y", "SELECT $; x",
    "SELECT $a$ x$a$; y", "SELECT 1; $$;$$ ; x",
    # comments
    "SELECT 1 /* ; */; SELECT 2", "SELECT 1 -- ; \n; SELECT 2", "/* /* nested */ ; */ SELECT 1;",
    "/* unterminated ; SELECT 1", "SELECT 1 +-- c;\n 2; SELECT 3", "SELECT 1 +/* c; */ 2; SELECT 3",
    "SELECT 1 -/* c; */ 2; x", "SELECT 1 - -- c;\n 2; x", "SELECT 1 * /* c; */ 2; x",
    "SELECT 1 */ 2; x", "SELECT 1 /**/; x", "SELECT 1 /*/ ; */; x", "SELECT 2 #- '{a}'; x",
    "SELECT 1 # 2; SELECT 3", "SELECT 1 =-- c;\n2; x", "SELECT 1 <-- c;\n2; x", "SELECT 1 @-- c;\n2; x",
    # transaction control around statements
    "BEGIN; CREATE TABLE t (); COMMIT;", "BEGIN TRANSACTION; x; COMMIT;", "begin work;\nx;\nend;",
    "BEGIN ISOLATION LEVEL SERIALIZABLE; CREATE TABLE t(); COMMIT; SELECT 1;",
    "START TRANSACTION; x; COMMIT;", "BEGIN\n;\nx;", "BEGIN -- c\n; x;", "BEGIN /* c */; x;",
    "END; x;", "END TRANSACTION; x", "END IF; x", "END\nLOOP; x", "BEGIN; END; x", "BEGIN;BEGIN; x",
    "SELECT 1; BEGIN", "BEGIN", "( BEGIN; x", "( END; x; y", "SELECT begin; x",
    "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE; x; COMMIT;", "BEGIN READ ONLY; x; COMMIT;",
    "BEGIN TRANSACTION$x; y; z", "BEGIN TRANSACTION(; y", "BEGIN WORKS; x; y", "BEGIN\nWORK\n;x",
    "BEGIN TRANSACTION.x; y", "BEGIN TRAN; x", "BEGIN DEFERRED; x", "BEGIN (; x",
    # SQL-standard bodies, rules, CASE ... END, keywords sqlparse counts
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END; SELECT 3;",
    "CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (1); END; x;",
    "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2)); SELECT 1;",
    "CREATE RULE r AS ON UPDATE TO t DO INSTEAD (SELECT CASE WHEN true THEN 1 END; SELECT 2); SELECT 3;",
    "CREATE VIEW v AS SELECT CASE WHEN x THEN 1 ELSE 2 END AS c FROM t; SELECT 1;",
    "SELECT CASE WHEN a THEN (1) END; x", "SELECT (CASE WHEN a THEN 1 END); x",
    "ALTER TABLE t ADD CONSTRAINT c CHECK (CASE WHEN a THEN b END > 0); x",
    "SELECT t.end FROM t; x", "SELECT t. end FROM t; x", "SELECT end_date FROM t; x",
    'SELECT x AS "end"; y', "SELECT 1 end; x", 'CREATE TABLE t ("end" int, begin_at int); x',
    "SELECT end(1); x", "SELECT end . x; y", "SELECT end .5; y", "SELECT 1e5end; x", "SELECT 0xAGO; x",
    "SELECT :end; x", "SELECT @end; x", "SELECT x::end; y", "SELECT 'a'end; x", "SELECT 1end; x",
    "SELECT (1)end; x", "SELECT a=end; x", "SELECT a%end; x", "SELECT legend, weekend; x",
    "SELECT x$end; y", "SELECT _end, end_; y", "SELECT END\tCASE; x", "SELECT end iff; x",
    "DROP TABLE IF EXISTS t; x", "CREATE TABLE IF NOT EXISTS t (); x", "IF x THEN y; END IF; z",
    "LOOP x; END LOOP; y", "FOR x IN y LOOP z; END LOOP;", "WHILE x LOOP y; END LOOP; z",
    "DECLARE c CURSOR FOR SELECT 1; FETCH c;", "CREATE FUNCTION f() DECLARE x int; BEGIN x := 1; END; y",
    "SELECT 1\nGO\nSELECT 2", "SELECT 1 go SELECT 2", "SELECT 1\nGO 2\nSELECT 3", "SELECT ALGO; x",
    # psql meta commands and backslashes in code
    "\\i file.sql\nSELECT 1;", "\\set x 1\nSELECT :x;", "SELECT 1 \\; SELECT 2", "\\\\; x",
    # AT TIME ZONE literals (one token to sqlparse)
    "SELECT now() AT TIME ZONE 'UTC'; x", "SELECT now() AT TIME ZONE 'a''b;'; x",
    "SELECT x AT TIME ZONE ''; y", "SELECT WITH' TIME ZONE 'x'; y", "SELECT x at time zone 'a\\'; y'; z",
    "CREATE TABLE t (a timestamp with time zone DEFAULT now()); x",
    # brackets, back ticks, placeholders
    "SELECT ARRAY[1,2]; x", "SELECT a [1]; x", "SELECT x [ 'a]' ]; y", "SELECT '{}'::int[]; x",
    "SELECT (a)[1;2]; x", "SELECT [a;b]; x", "SELECT `a;b`; x", "SELECT ´a;b´; x",
    "SELECT %s; SELECT %(x)s; x", "SELECT 5 % 3; x", "CREATE FUNCTION f(x t.c%TYPE) RETURNS int; y",
    "SELECT ?; x", "SELECT :name; x", "SELECT x::int; y",
    # unbalanced parentheses
    "SELECT (1; SELECT 2", "SELECT ); SELECT (;", "SELECT 1)); SELECT (2;", ") ( ; x", "((;));x;",
    # other characters
    "CREATE TABLE café (prénom text); x", "SELECT 'é;'; x", "SELECT {1;2}; x",
    "\x01\x02SELECT\x7f 1;\x1b[2J\x1b]0;pwned\x07", "SELECT\x00; x",
]

# The shapes of ordinary history texts: the fast path must take them itself.
FAST = [
    "", "SELECT 1", "SELECT 1; SELECT 2", "SELECT 1; -- trailing\nSELECT 2;", "-- only",
    "SELECT 'a;b'; SELECT 2", "SELECT E'\\''; SELECT 2;", 'SELECT "a;b" FROM t; SELECT 2',
    "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql; SELECT 2;",
    "DO $fn$ BEGIN END $fn$; SELECT 1", "SELECT $1; SELECT $2;", "SELECT 1 /* ; */; SELECT 2",
    "BEGIN; CREATE TABLE t (); COMMIT;", "begin work;\nx;\nend;",
    "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE; x; COMMIT;",
    "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2)); SELECT 1;",
    "CREATE VIEW v AS SELECT CASE WHEN x THEN 1 ELSE 2 END AS c FROM t; SELECT 1;",
    "DROP TABLE IF EXISTS t; x", "SELECT now() AT TIME ZONE 'UTC'; x", "SELECT ARRAY[1,2]; x",
    "SELECT end_date, legend FROM t; x", "SELECT 5 % 3; x", "SELECT 'a\\'; SELECT 2; -- '",
]


@pytest.mark.parametrize("text", TRICKY)
def test_tricky(text: str) -> None:
    assert split(text) == sqlparse.split(text)
    fast = fast_split(text)
    assert fast is None or fast == sqlparse.split(text)


@pytest.mark.parametrize("text", FAST)
def test_common_shapes_are_fast(text: str) -> None:
    assert fast_split(text) == sqlparse.split(text)


# ----------------------------------------------------------------------------- random inputs

_SEPARATORS = [
    "", " ", "\n", "\n\n", "\r\n", "\t", "  -- note\n", " -- trailing", "\n-- header\n",
    "/* c */", " /* c; */ ", "--+ hint\n", "\x0b", "\u00a0", ";", ";\n;", "\n\n-- a\n-- b\n",
    " --", "\r", "/* multi\nline */\n",
]


def test_random_joins_of_real_statements() -> None:
    """Real statements, with or without their `;`, joined by whitespace and comments."""
    rng = random.Random(20240601)
    pool = statement_pool()
    assert len(pool) > 300
    texts = []
    for _ in range(400):
        parts = []
        for _ in range(rng.randint(1, 6)):
            statement = rng.choice(pool)
            if rng.random() < 0.2:
                statement = statement.rstrip(";")
            parts.append(statement)
            parts.append(rng.choice(_SEPARATORS))
        if rng.random() < 0.5:
            parts.insert(0, rng.choice(_SEPARATORS))
        texts.append("".join(parts))
    assert _mismatches(texts) == []
    wrong, fallbacks = _fast_mismatches(texts)
    assert wrong == []
    assert fallbacks < len(texts) * 0.2


_ATOMS = [
    ";", ";", "(", ")", "'", "''", '"', "$$", "$a$", "$A$", "$1", "$", "--", "--+", "-", "/*", "*/",
    "/", "*", "\n", "\r\n", "\r", " ", " ", "\t", "\x0b", "\u00a0", "E'", "\\", "\\'", "#", "%",
    "%s", "[", "]", "x", "a", "END", "end", "BEGIN", " BEGIN;", "DECLARE", "GO", "IF", "CASE",
    "LOOP", "CREATE", "TRANSACTION", "1", "0x", "e5", "AT TIME ZONE ", ".", ":", "@", "+", "=",
    ",", "`", "é", "_", "ATOMIC",
]


def test_random_character_soup() -> None:
    """Short random texts made of the characters and words the scanner cares about."""
    rng = random.Random(7)
    texts = ["".join(rng.choice(_ATOMS) for _ in range(rng.randint(0, 20))) for _ in range(4000)]
    wrong, fallbacks = _fast_mismatches(texts)
    assert wrong == []
    assert fallbacks < len(texts) * 0.9  # it still decides a good share itself
    assert _mismatches(texts[:500]) == []
