"""sqlbox: hostile queries are refused or cut off (with a reason), the database file never changes,
MySQL-style SQL transpiles, and "now" is the data set's reference time, not the wall clock."""

from __future__ import annotations

import hashlib
from datetime import date, datetime

import pytest

from llamalab import paths
from llamalab.sqlbox import CATEGORIES, SQLBox, build_database

SQL_DIR = paths.data_dir() / "probes" / "sql"
EVENTS = SQL_DIR / "events.sql"
REFERENCE = datetime(2023, 3, 10, 12, 0, 0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("sqlbox-cache")


@pytest.fixture(scope="module")
def box(cache):
    with SQLBox(EVENTS, timeout_s=1.0, cache_dir=cache) as b:
        yield b


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# (query, expected category, a piece of the reason)
HOSTILE = [
    ("DROP TABLE events", "refused", "DROP"),
    ("drop table events;", "refused", "DROP"),
    ("DELETE FROM events", "refused", "DELETE"),
    ("UPDATE events SET user_id = 0", "refused", "UPDATE"),
    ("INSERT INTO events VALUES (0, NOW(), 0, 'x')", "refused", "INSERT"),
    ("CREATE TABLE t AS SELECT * FROM events", "refused", "CREATE"),
    ("ALTER TABLE events ADD COLUMN x INTEGER", "refused", "ALTER"),
    ("ATTACH '/tmp/other.duckdb' AS other", "refused", "ATTACH"),
    ("DETACH other", "refused", "DETACH"),
    ("COPY events TO '/tmp/leak.csv'", "refused", "COPY"),
    ("EXPORT DATABASE '/tmp/dump'", "refused", "EXPORT"),
    ("INSTALL httpfs", "refused", "INSTALL"),
    ("LOAD httpfs", "refused", "LOAD"),
    ("PRAGMA database_list", "refused", "PRAGMA"),
    ("SET memory_limit = '100GB'", "refused", "SET"),
    ("RESET memory_limit", "refused", "RESET"),
    ("CALL pragma_version()", "refused", "CALL"),
    ("-- innocent comment\nDROP TABLE events", "refused", "DROP"),
    ("SELECT 1; DROP TABLE events", "refused", "2 statements"),
    ("SELECT * FROM read_csv('/etc/passwd')", "refused", "read_csv"),
    ("SELECT * FROM read_text('/etc/passwd')", "refused", "read_text"),
    ("SELECT read_text('/etc/passwd')", "refused", "read_text"),
    ("SELECT * FROM '/etc/passwd'", "refused", "/etc/passwd"),
    ("SELECT * FROM glob('/etc/*')", "refused", "glob"),
    ("SELECT * FROM parquet_scan('/tmp/x.parquet')", "refused", "parquet_scan"),
    ("SELECT * FROM query('DROP TABLE events')", "refused", "query"),
    ("SELECT load_file('/etc/passwd')", "refused", "load_file"),
    ("SELECT * FROM events, LATERAL (SELECT * FROM read_csv('/etc/passwd'))", "refused", "read_csv"),
    ("WITH x AS (DELETE FROM events RETURNING *) SELECT * FROM x", "refused", "DELETE"),
    ("SELECT * INTO OUTFILE '/tmp/leak' FROM events", "refused", "OUTFILE"),
    ("SELECT current_setting('memory_limit')", "refused", "current_setting"),
    ("SELECT * FROM duckdb_settings()", "refused", "duckdb_settings"),
    ("SELECT * FROM information_schema.tables", "refused", "main"),
    ("SELECT * FROM other.main.events", "refused", "other databases"),
    (
        "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT COUNT(*) FROM t",
        "timeout",
        "cut off",
    ),
    ("SELECT COUNT(*) FROM events a, events b, events c, events d", "timeout", "cut off"),
    ("SELECT * FROM events a CROSS JOIN events b", "too_many_rows", "more than 10000 rows"),
]


def test_hostile_queries_are_refused_or_cut_off_and_the_file_is_unchanged(box, cache):
    before = sha256(box.db_path)
    files_before = sorted(p.name for p in cache.iterdir())
    for sql, category, reason in HOSTILE:
        r = box.run(sql)
        assert not r.ok, sql
        assert r.category == category, (sql, r.category, r.error)
        assert reason.lower() in (r.error or "").lower(), (sql, r.error)
    assert box.run("SELECT COUNT(*) FROM events").rows == [(640,)]  # still intact and usable
    assert sha256(box.db_path) == before
    assert sorted(p.name for p in cache.iterdir()) == files_before  # no WAL, no temp files
    assert not any(p.exists() for p in (cache.parent / "leak.csv", cache.parent / "dump"))


def test_timeouts_are_bounded_in_wall_time(box):
    r = box.run("SELECT COUNT(*) FROM events a, events b, events c, events d")
    assert r.category == "timeout"
    assert r.elapsed_s < 5  # timeout_s=1.0 plus slack
    assert box.run("SELECT 42").rows == [(42,)]  # the interrupt does not leak into the next query


def test_row_bound(cache):
    with SQLBox(EVENTS, max_rows=10, cache_dir=cache) as small:
        r = small.run("SELECT * FROM events")
        assert (r.ok, r.category, len(r.rows)) == (False, "too_many_rows", 10)
        assert small.run("SELECT * FROM events LIMIT 10").ok


def test_engine_layer_blocks_files_even_without_the_sql_checks(box):
    import duckdb

    with pytest.raises(duckdb.PermissionException):
        box._con.execute("SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(duckdb.InvalidInputException, match="locked"):
        box._con.execute("SET enable_external_access = true")


def test_comment_tricks_run_only_the_select(box):
    r = box.run("SELECT 1 -- */ ; DROP TABLE events")
    assert r.ok and r.rows == [(1,)]
    assert "DROP" not in r.sql_executed


def test_bad_sql_categories(box):
    assert box.run("SELECT FROM WHERE").category == "parse_error"
    assert box.run("   ;  ").category == "parse_error"
    r = box.run("SELECT * FROM users")
    assert r.category == "runtime_error" and "users" in r.error
    assert box.run("SELECT 'a' + 1").category == "runtime_error"
    assert set(CATEGORIES) == {"refused", "parse_error", "runtime_error", "timeout", "too_many_rows"}
    with pytest.raises(TypeError):
        box.run(None)  # a programmer error, not model SQL


def test_tables_hide_meta_and_reference_time(box):
    assert box.tables() == {"events": ["event_id", "timestamp", "user_id", "rpc_method"]}
    assert box.reference_time == REFERENCE


@pytest.mark.parametrize(
    "sql, equivalent",
    [
        (
            "SELECT COUNT(*) FROM events WHERE timestamp >= NOW() - INTERVAL 7 DAY",
            "SELECT COUNT(*) FROM events WHERE timestamp >= TIMESTAMP '2023-03-10 12:00:00' - INTERVAL 7 DAY",
        ),
        (
            "SELECT COUNT(*) FROM events WHERE timestamp >= DATE_SUB(NOW(), INTERVAL 1 WEEK)",
            "SELECT COUNT(*) FROM events WHERE timestamp >= TIMESTAMP '2023-03-03 12:00:00'",
        ),
        (
            'SELECT COUNT (*) FROM events WHERE rpc_method = "Login"',
            "SELECT COUNT(*) FROM events WHERE rpc_method = 'Login'",
        ),
        (
            "SELECT COUNT(*) FROM events WHERE UNIX_TIMESTAMP(timestamp) >= UNIX_TIMESTAMP(CURRENT_DATE - INTERVAL 7 DAY)",
            "SELECT COUNT(*) FROM events WHERE timestamp >= TIMESTAMP '2023-03-03 00:00:00'",
        ),
        (
            "SELECT COUNT(*) FROM events WHERE timestamp BETWEEN TIMESTAMP '2023-02-01 00:00:00' AND TIMESTAMP '2023-02-08 00:00:00'",
            "SELECT COUNT(*) FROM events WHERE timestamp >= TIMESTAMP '2023-02-01' AND timestamp <= TIMESTAMP '2023-02-08'",
        ),
        (
            'SELECT "user_id", COUNT(*) FROM events WHERE "timestamp" > NOW() - INTERVAL \'1 day\' GROUP BY "user_id"',
            "SELECT user_id, COUNT(*) FROM events WHERE timestamp > TIMESTAMP '2023-03-09 12:00:00' GROUP BY user_id",
        ),
        (
            "SELECT COUNT(*) FROM events WHERE timestamp >= CURDATE()",
            "SELECT COUNT(*) FROM events WHERE timestamp >= TIMESTAMP '2023-03-10 00:00:00'",
        ),
    ],
)
def test_dialect_cases_transpile_and_run(box, sql, equivalent):
    got, want = box.run(sql), box.run(equivalent, read="duckdb")
    assert got.ok and want.ok, (got.error, want.error)
    assert sorted(got.rows) == sorted(want.rows)
    assert got.rows and got.rows != [(0,)]  # the comparison is not vacuous


def test_now_is_pinned_to_the_reference_time(box):
    r = box.run(
        "SELECT NOW(), CURRENT_TIMESTAMP, LOCALTIMESTAMP, SYSDATE(), CURRENT_DATE, CURDATE(), "
        "UNIX_TIMESTAMP(), UNIX_TIMESTAMP(NOW())"
    )
    assert r.ok, r.error
    assert r.rows == [
        (
            REFERENCE,
            REFERENCE,
            REFERENCE,
            REFERENCE,
            date(2023, 3, 10),
            date(2023, 3, 10),
            1678449600,
            1678449600.0,
        )
    ]
    for fn in ("NOW()", "CURRENT_DATE", "CURRENT_TIMESTAMP", "UNIX_TIMESTAMP"):
        assert fn not in r.sql_executed.upper()
    # the wall clock is years later: an unpinned "last week" would find no events at all
    assert box.run("SELECT COUNT(*) FROM events WHERE timestamp >= NOW() - INTERVAL 7 DAY").rows[0][0] > 0


def test_build_is_cached_by_content(tmp_path):
    setup = tmp_path / "tiny.sql"
    setup.write_text("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2);")
    first = build_database(setup, tmp_path / "c")
    assert build_database(setup, tmp_path / "c") == first
    setup.write_text("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2), (3);")
    second = build_database(setup, tmp_path / "c")
    assert second != first and second.is_file()
    with SQLBox(setup, cache_dir=tmp_path / "c") as b:
        assert b.run("SELECT SUM(x) FROM t").rows == [(6,)]
        assert b.reference_time is None  # no _meta table: nothing to pin to
    assert not [p for p in (tmp_path / "c").iterdir() if ".tmp" in p.name]


def test_setup_errors_raise(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_database(tmp_path / "missing.sql", tmp_path)
    bad = tmp_path / "bad.sql"
    bad.write_text("CREATE TABLE t (x INTEGER); INSERT INTO nope VALUES (1);")
    with pytest.raises(ValueError, match="bad.sql"):
        build_database(bad, tmp_path)
    assert not list(tmp_path.glob("*.duckdb"))
