"""Read-only, time- and row-bounded execution of untrusted (model-written) SQL on a real database.

The SQL probe runs whatever a model wrote. This module makes that safe and reproducible::

    box = SQLBox(data_dir() / "probes/sql/events.sql")
    box.tables()          # {"events": ["event_id", "timestamp", "user_id", "rpc_method"]}
    box.reference_time    # datetime(2023, 3, 10, 12, 0): the data set's "now"
    r = box.run('SELECT COUNT(DISTINCT user_id) FROM events WHERE rpc_method = "Login"')
    r.ok, r.rows, r.category, r.error, r.sql_executed

``run`` never raises for bad SQL: every outcome is a :class:`QueryResult` with ``category`` None
(success) or one of ``CATEGORIES``. Only programmer errors raise (a missing setup file, a setup
file that does not execute, a non-string query).

Why DuckDB rather than SQLite (both embedded, both in-process):

- the models write MySQL/Postgres-flavoured SQL (``NOW() - INTERVAL 7 DAY``, typed ``TIMESTAMP``
  literals, date arithmetic). DuckDB has real TIMESTAMP/DATE/INTERVAL types and arithmetic, and
  sqlglot has a maintained ``duckdb`` dialect to transpile into; SQLite stores dates as text and
  would need every date expression rewritten into ``datetime(..., '-7 days')`` strings;
- ``connection.interrupt()`` cancels a running query from another thread (the time bound);
- ``enable_external_access=false`` turns off every file, network, ATTACH and extension path of
  the engine, and ``lock_configuration`` keeps the query from turning it back on (``SET``);
- ``memory_limit``/``threads`` bound a cartesian blow-up, and the database opens ``read_only``.

Layers, in order (any one refuses):

1. the first keyword: DROP, DELETE, UPDATE, INSERT, CREATE, ALTER, ATTACH, DETACH, COPY,
   EXPORT, IMPORT, INSTALL, LOAD, PRAGMA, SET, RESET, CALL, ... are refused before parsing;
2. sqlglot parses the text (``mysql`` first, then ``duckdb``, then ``postgres``); it must be
   exactly one query (SELECT, WITH ... SELECT, UNION/INTERSECT/EXCEPT); no DML/DDL/command node
   anywhere in the tree, no ``SELECT ... INTO``; table references must be plain identifiers (so
   ``FROM '/etc/passwd'`` is refused) in no schema other than ``main``; table functions other
   than ``range``/``generate_series``/``unnest`` and file/engine functions (``read_csv``,
   ``read_text``, ``glob``, ``query``, ``*_scan``, ``duckdb_*``, ``pragma_*``, ...) are refused;
3. the transpiled text is re-parsed by DuckDB itself: exactly one statement of type SELECT;
4. the engine: read-only file, ``enable_external_access=false``, no extension auto-install or
   auto-load, configuration locked, ``memory_limit``, ``threads``, no spilling to disk;
5. bounds: ``timeout_s`` (a timer calls ``interrupt()``) and ``max_rows`` (``fetchmany``).

Time: the data set's reference time lives in the setup file as a one-row table
``_meta(reference_time TIMESTAMP)``. Every "now" function (NOW(), CURRENT_TIMESTAMP,
CURRENT_DATE, CURDATE(), SYSDATE(), LOCALTIMESTAMP, GETDATE(), TODAY(), UNIX_TIMESTAMP(), ...)
is replaced by that constant in the syntax tree, so no result depends on the wall clock. Without a
``_meta`` table the functions are left alone (``reference_time`` is None). TIMESTAMPTZ types are
rewritten to TIMESTAMP (MySQL's ``TIMESTAMP '...'`` literal reads as TIMESTAMPTZ in sqlglot) and
the session time zone is UTC, so the host's time zone does not matter either.

Dialect: sqlglot reads MySQL first, as the published answers are MySQL-flavoured: double-quoted
``"Login"`` is a string there, ``COUNT (*)`` and ``NOW ()`` parse, ``DATE_SUB(NOW(), INTERVAL 1
WEEK)`` becomes interval arithmetic, ``UNIX_TIMESTAMP(x)`` becomes ``EPOCH(x)``. When a
double-quoted token names one of the database's tables or columns (``"timestamp"``), the text is
Postgres/DuckDB style and DuckDB's reading is tried first instead; ``run(sql, read=...)`` forces a
dialect (the gold queries are read as DuckDB).

The database file is built once per setup file content (and DuckDB version) under
``paths.home()/"sqlbox"/`` (written to a temporary name, then renamed; concurrent builders
each write their own temporary file and the last rename wins with identical content).
DuckDB shares one engine per file inside a process, so every SQLBox on the same file must use
the same ``memory_limit`` and ``threads``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from llamalab import paths

__all__ = ["CATEGORIES", "QueryResult", "SQLBox", "build_database"]

CATEGORIES = ("refused", "parse_error", "runtime_error", "timeout", "too_many_rows")
READ_DIALECTS = ("mysql", "duckdb", "postgres")

# Statements refused on their first keyword (some do not even parse in sqlglot, e.g. EXPORT).
_FORBIDDEN_KEYWORDS = frozenset(
    "ALTER ANALYZE ATTACH BEGIN CALL CHECKPOINT COMMENT COMMIT COPY CREATE DEALLOCATE DELETE DESCRIBE "
    "DETACH DROP EXECUTE EXPLAIN EXPORT FORCE GRANT HANDLER IMPORT INSERT INSTALL KILL LOAD LOCK MERGE "
    "OPTIMIZE PRAGMA PREPARE RENAME REPLACE RESET REVOKE ROLLBACK SET SHOW SHUTDOWN START SUMMARIZE "
    "TRUNCATE UNLOCK UPDATE UPSERT USE VACUUM".split()
)
# Nodes that must not appear anywhere in an accepted query's tree.
_FORBIDDEN_NODES = tuple(
    getattr(exp, name)
    for name in (
        "Insert Update Delete Merge Create Drop Alter AlterColumn Command Copy Pragma Set Attach Detach "
        "Use Transaction Commit Rollback Into LoadData Describe Show Kill Analyze Grant Revoke Cache "
        "Uncache Refresh TruncateTable Export Install"
    ).split()
    if hasattr(exp, name)
)
# Table-valued functions a query may use in FROM (they read nothing outside the query).
_ALLOWED_TABLE_FUNCTIONS = frozenset({"RANGE", "GENERATE_SERIES", "UNNEST", "EXPLODE"})
# File, network, catalog and engine functions: refused by name (DuckDB's own enable_external_access
# blocks the file ones again; query()/query_table() would run a second SQL string).
_DENIED_FUNCTIONS = frozenset(
    "GLOB SNIFF_CSV QUERY QUERY_TABLE GETENV CURRENT_SETTING CHECKPOINT FORCE_CHECKPOINT "
    "JSON_EXECUTE_SERIALIZED_SQL JSON_SERIALIZE_SQL JSON_DESERIALIZE_SQL WHICH_SECRET LOAD_AWS_CREDENTIALS "
    "ENABLE_PROFILING DISABLE_PROFILING ENABLE_OPTIMIZER DISABLE_OPTIMIZER SETSEED NEXTVAL CURRVAL "
    "TEST_ALL_TYPES TEST_VECTOR_TYPES SUMMARY ICU_CALENDAR_NAMES".split()
)
_DENIED_PREFIXES = (
    "READ_",
    "DUCKDB_",
    "PRAGMA_",
    "PARQUET_",
    "ICEBERG_",
    "DELTA_",
    "SQLITE_",
    "POSTGRES_",
    "MYSQL_",
    "HTTP",
    "S3_",
    "FTS_",
    "LOAD_",
    "INSTALL_",
    "EXPORT_",
    "IMPORT_",
    "COPY_",
)
_DENIED_SUFFIXES = ("_SCAN", "_METADATA", "_ATTACH")

# "Now" functions pinned to the reference time (by sqlglot class name or by function name).
_NOW_TIMESTAMP = frozenset(
    "NOW SYSDATE GETDATE SYSTIMESTAMP LOCALTIMESTAMP CURRENT_TIMESTAMP CURRENT_DATETIME TRANSACTION_TIMESTAMP "
    "STATEMENT_TIMESTAMP CLOCK_TIMESTAMP GET_CURRENT_TIMESTAMP CURRENT_LOCALTIMESTAMP UTC_TIMESTAMP "
    "CURRENT_TIMESTAMP_LTZ".split()
)
_NOW_DATE = frozenset("CURRENT_DATE CURDATE TODAY UTC_DATE GET_CURRENT_DATE SYSDATE_DATE".split())
_NOW_TIME = frozenset("CURRENT_TIME CURTIME LOCALTIME UTC_TIME GET_CURRENT_TIME".split())

_INTO_FILE = re.compile(r"\bINTO\s+(?:OUTFILE|DUMPFILE)\b", re.I)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LEADING_NOISE = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\(|#[^\n]*(?:\n|$))*", re.S)



@dataclass
class QueryResult:
    """The outcome of :meth:`SQLBox.run`.

    ``ok`` is True only for a query that ran to completion within the bounds. ``category`` is None
    then, else one of :data:`CATEGORIES`; ``error`` says why in words. ``rows`` holds at most
    ``max_rows`` rows (for ``too_many_rows``: the first ``max_rows``). ``sql_executed`` is the
    DuckDB text that ran (or would have run), None when the text never got that far.
    """

    ok: bool
    columns: list[str] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)
    error: str | None = None
    category: str | None = None
    sql_executed: str | None = None
    read_dialect: str | None = None
    elapsed_s: float = 0.0

    @classmethod
    def fail(cls, category: str, error: str, **kw: Any) -> QueryResult:
        assert category in CATEGORIES, category
        return cls(ok=False, category=category, error=error, **kw)


class _Refused(Exception):
    def __init__(self, category: str, reason: str):
        super().__init__(reason)
        self.category, self.reason = category, reason


def _cache_key(setup: bytes) -> str:
    h = hashlib.sha256(setup)
    h.update(b"\0duckdb=" + duckdb.__version__.encode())
    return h.hexdigest()[:16]


def build_database(setup_sql_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Build (once) the DuckDB file for a setup .sql file; return its path.

    The file name holds a hash of the setup file's content and of the DuckDB version, so an edited
    fixture gets a new file and a stale one is never reused. Raises FileNotFoundError for a missing
    setup file and ValueError when the setup SQL does not execute.
    """
    setup_path = Path(setup_sql_path)
    if not setup_path.is_file():
        raise FileNotFoundError(f"SQL setup file not found: {setup_path}")
    setup = setup_path.read_bytes()
    cache = Path(cache_dir) if cache_dir is not None else paths.home() / "sqlbox"
    target = cache / f"{setup_path.stem}-{_cache_key(setup)}.duckdb"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{target.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.duckdb"
    try:
        con = duckdb.connect(str(tmp), config={"enable_external_access": False})
        try:
            con.execute(setup.decode("utf-8"))
            con.execute("CHECKPOINT")
        except duckdb.Error as exc:
            raise ValueError(f"{setup_path}: setup SQL failed: {exc}") from None
        finally:
            con.close()
        os.replace(tmp, target)
    finally:
        for leftover in (tmp, Path(str(tmp) + ".wal")):
            if leftover.exists():
                leftover.unlink()
    return target


def _func_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).upper()
    try:
        return node.sql_name().upper()
    except Exception:  # pragma: no cover - a class without a SQL name
        return type(node).__name__.upper()


def _denied_function(name: str) -> bool:
    return name in _DENIED_FUNCTIONS or name.startswith(_DENIED_PREFIXES) or name.endswith(_DENIED_SUFFIXES)


def _args(node: exp.Expression) -> list[exp.Expression]:
    if isinstance(node, exp.Anonymous):
        return list(node.expressions)
    found = [node.args.get("this"), *(node.args.get("expressions") or [])]
    return [a for a in found if isinstance(a, exp.Expression)]


def _first_keyword(sql: str) -> str:
    m = re.match(r"[A-Za-z_]+", _LEADING_NOISE.sub("", sql, count=1))
    return m.group(0).upper() if m else ""


def _statement_kind(node: exp.Expression) -> str:
    if isinstance(node, exp.Command):
        return str(node.this).upper()
    return type(node).__name__.upper()


class SQLBox:
    """One fixture database, opened read-only, running one bounded query at a time.

    ``SQLBox(setup_sql_path, timeout_s=2.0, max_rows=10_000, memory_limit="512MB", threads=2,
    cache_dir=None)``; ``cache_dir`` defaults to ``paths.home()/"sqlbox"``. Attributes:
    ``setup_path``, ``db_path`` (the built DuckDB file), ``reference_time`` (datetime or None).
    Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        setup_sql_path: str | Path,
        timeout_s: float = 2.0,
        max_rows: int = 10_000,
        *,
        memory_limit: str = "512MB",
        threads: int = 2,
        cache_dir: str | Path | None = None,
    ):
        if timeout_s <= 0 or max_rows < 1:
            raise ValueError("timeout_s must be > 0 and max_rows >= 1")
        self.setup_path = Path(setup_sql_path).resolve()
        self.timeout_s = float(timeout_s)
        self.max_rows = int(max_rows)
        self.db_path = build_database(self.setup_path, cache_dir)
        config = {
            "enable_external_access": False,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
            "memory_limit": memory_limit,
            "threads": int(threads),
            "temp_directory": "",  # no spilling: a blow-up hits memory_limit instead of the disk
        }
        self._con = duckdb.connect(str(self.db_path), read_only=True, config=config)
        try:  # global, so it holds for every connection DuckDB shares this file's engine with
            self._con.execute("SET GLOBAL TimeZone = 'UTC'")
            self._con.execute("SET lock_configuration = true")
        except duckdb.InvalidInputException:
            pass  # another SQLBox on this file already set and locked the configuration
        self._lock = threading.Lock()
        rows = self._con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() "
            "WHERE database_name = current_database() AND schema_name = 'main' "
            "ORDER BY table_oid, column_index"
        ).fetchall()
        self._all_tables: dict[str, list[str]] = {}
        for table, column in rows:
            self._all_tables.setdefault(table, []).append(column)
        self.reference_time: datetime | None = None
        if "_meta" in self._all_tables and "reference_time" in self._all_tables["_meta"]:
            ref = self._con.execute("SELECT CAST(reference_time AS TIMESTAMP) FROM _meta LIMIT 1").fetchone()
            self.reference_time = ref[0] if ref else None

    # -- public -------------------------------------------------------------------------------

    def tables(self) -> dict[str, list[str]]:
        """Tables and their columns in creation order, without the ``_``-prefixed ones (``_meta``)."""
        return {t: list(cols) for t, cols in self._all_tables.items() if not t.startswith("_")}

    def transpile(self, sql: str, read: str | None = None) -> tuple[str, str]:
        """Check and translate one query to DuckDB; return ``(duckdb_sql, read_dialect)``.

        Raises ValueError with the refusal/parse reason (``run`` reports these as a QueryResult).
        """
        try:
            with self._lock:
                return self._prepare(sql, read)
        except _Refused as exc:
            raise ValueError(f"{exc.category}: {exc.reason}") from None

    def run(self, sql: str, read: str | None = None) -> QueryResult:
        """Run one untrusted query within the bounds; never raises for bad SQL.

        ``read`` forces sqlglot's input dialect (the gold queries are DuckDB: ``read="duckdb"``);
        by default MySQL, DuckDB and Postgres are tried in turn (see the module docstring).
        """
        if not isinstance(sql, str):
            raise TypeError(f"sql must be a str, got {type(sql).__name__}")
        if read is not None and read not in READ_DIALECTS:
            raise ValueError(f"read must be one of {READ_DIALECTS}, got {read!r}")
        t0 = time.monotonic()
        with self._lock:
            try:
                executed, dialect = self._prepare(sql, read)
            except _Refused as exc:
                return QueryResult.fail(exc.category, exc.reason, elapsed_s=time.monotonic() - t0)
            result = self._execute(executed)
        result.read_dialect = dialect
        result.elapsed_s = time.monotonic() - t0
        return result

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> SQLBox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLBox({str(self.setup_path)!r}, timeout_s={self.timeout_s}, max_rows={self.max_rows})"

    # -- checking and translating -------------------------------------------------------------

    def _prepare(self, sql: str, read: str | None = None) -> tuple[str, str]:
        if not isinstance(sql, str):
            raise TypeError(f"sql must be a str, got {type(sql).__name__}")
        text = sql.strip()
        if not text.strip(";").strip():
            raise _Refused("parse_error", "empty query")
        keyword = _first_keyword(text)
        if keyword in _FORBIDDEN_KEYWORDS:
            raise _Refused(
                "refused", f"{keyword} statements are not allowed: only one read-only SELECT query runs"
            )
        if _INTO_FILE.search(text):
            raise _Refused("refused", "SELECT ... INTO OUTFILE/DUMPFILE is not allowed")
        statements, dialect = self._parse(text, (read,) if read else self._read_dialects(text))
        if len(statements) != 1:
            raise _Refused(
                "refused", f"{len(statements)} statements in one string: only one SELECT query runs"
            )
        tree = statements[0]
        self._check_tree(tree, keyword)
        tree = self._rewrite(tree)
        try:
            out = tree.sql(dialect="duckdb", comments=False)
        except Exception as exc:  # sqlglot cannot render some constructs into DuckDB
            raise _Refused("parse_error", f"cannot translate to DuckDB: {exc}") from None
        try:
            parsed = self._con.extract_statements(out)
        except duckdb.Error as exc:
            raise _Refused(
                "parse_error", f"DuckDB cannot parse the translated query: {_short(exc)}"
            ) from None
        if len(parsed) != 1 or parsed[0].type != duckdb.StatementType.SELECT:
            kinds = ", ".join(str(p.type).rsplit(".", 1)[-1] for p in parsed) or "nothing"
            raise _Refused("refused", f"DuckDB sees {kinds}, not one SELECT query")
        return out, dialect

    def _read_dialects(self, text: str) -> tuple[str, ...]:
        """MySQL first, unless a double-quoted "string" names one of our tables or columns: then the
        text is Postgres/DuckDB style (``"timestamp"`` is an identifier) and DuckDB's reading goes first."""
        try:
            tokens = sqlglot.Dialect.get_or_raise("mysql").tokenize(text)
        except Exception:
            return READ_DIALECTS
        names = {t.lower() for t in self._all_tables} | {
            c.lower() for cols in self._all_tables.values() for c in cols
        }
        for tok in tokens:
            if tok.token_type == sqlglot.TokenType.STRING and text[tok.start : tok.start + 1] == '"':
                if tok.text.lower() in names:
                    return ("duckdb", "postgres", "mysql")
        return READ_DIALECTS

    def _parse(self, text: str, dialects: tuple[str, ...]) -> tuple[list[exp.Expression], str]:
        first_error = None
        sqlglot_logger = logging.getLogger("sqlglot")
        level = sqlglot_logger.level
        sqlglot_logger.setLevel(logging.ERROR)  # "falling back to parsing as a Command" is our refusal
        try:
            for dialect in dialects:
                try:
                    statements = [s for s in sqlglot.parse(text, read=dialect) if s is not None]
                except (ParseError, TokenError) as exc:
                    first_error = first_error or exc
                    continue
                except Exception as exc:  # sqlglot bug on odd input: treat as unparseable
                    first_error = first_error or exc
                    continue
                if statements:
                    return statements, dialect
        finally:
            sqlglot_logger.setLevel(level)
        raise _Refused("parse_error", f"not valid SQL: {_short(first_error)}")

    def _check_tree(self, tree: exp.Expression, keyword: str = "") -> None:
        if not isinstance(tree, exp.Query):
            kind = keyword or _statement_kind(tree)
            raise _Refused("refused", f"a {kind} statement is not a query: only one SELECT query runs")
        ctes = {str(c.alias_or_name).lower() for c in tree.find_all(exp.CTE)}
        for node in tree.walk():
            if isinstance(node, _FORBIDDEN_NODES):
                raise _Refused("refused", f"{_statement_kind(node)} inside a query is not allowed")
            if isinstance(node, exp.Select) and node.args.get("into"):
                raise _Refused("refused", "SELECT ... INTO is not allowed")
            if isinstance(node, exp.Table):
                self._check_table(node, ctes)
            elif isinstance(node, exp.Func):
                name = _func_name(node)
                if _denied_function(name):
                    raise _Refused(
                        "refused", f"function {name.lower()}() is not allowed (file/engine access)"
                    )

    def _check_table(self, node: exp.Table, ctes: set[str]) -> None:
        target = node.this
        if isinstance(target, exp.Func):
            name = _func_name(target)
            if name not in _ALLOWED_TABLE_FUNCTIONS:
                raise _Refused("refused", f"table function {name.lower()}() is not allowed")
            return
        if not isinstance(target, exp.Identifier):
            raise _Refused("refused", f"table reference {node.sql()!r} is not a plain table name")
        name = str(target.this)
        if not _IDENT.match(name):
            raise _Refused(
                "refused", f"table name {name!r} is not a plain identifier (file paths are not allowed)"
            )
        if node.args.get("catalog") is not None:
            raise _Refused("refused", f"table {node.sql()!r}: other databases are not allowed")
        schema = node.args.get("db")
        if schema is not None and str(schema.name).lower() != "main" and name.lower() not in ctes:
            raise _Refused("refused", f"table {node.sql()!r}: only the 'main' schema is allowed")

    def _rewrite(self, tree: exp.Expression) -> exp.Expression:
        ref = self.reference_time

        def pin(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.DataType) and node.this in (
                exp.DataType.Type.TIMESTAMPTZ,
                exp.DataType.Type.TIMESTAMPLTZ,
            ):
                return exp.DataType.build("TIMESTAMP")
            if ref is None or not isinstance(node, exp.Func):
                return node
            name = _func_name(node)
            if name == "UNIX_TIMESTAMP" and not _args(node):
                return exp.Literal.number(int(ref.replace(tzinfo=UTC).timestamp()))
            if name in _NOW_TIMESTAMP:
                return exp.cast(exp.Literal.string(f"{ref:%Y-%m-%d %H:%M:%S.%f}"), "TIMESTAMP")
            if name in _NOW_DATE:
                return exp.cast(exp.Literal.string(f"{ref:%Y-%m-%d}"), "DATE")
            if name in _NOW_TIME:
                return exp.cast(exp.Literal.string(f"{ref:%H:%M:%S.%f}"), "TIME")
            return node

        def unix_timestamp(node: exp.Expression) -> exp.Expression:  # MySQL's; DuckDB calls it EPOCH
            if isinstance(node, exp.Func) and _func_name(node) == "UNIX_TIMESTAMP" and _args(node):
                return exp.Anonymous(this="EPOCH", expressions=[exp.cast(_args(node)[0], "TIMESTAMP")])
            return node

        # Two passes: sqlglot does not descend into a node that a transform has just replaced.
        return tree.transform(pin, copy=True).transform(unix_timestamp, copy=False)

    # -- executing ----------------------------------------------------------------------------

    def _execute(self, sql: str) -> QueryResult:
        fired = threading.Event()

        def stop() -> None:
            fired.set()
            self._con.interrupt()

        timer = threading.Timer(self.timeout_s, stop)
        timer.daemon = True
        timer.start()
        try:
            cur = self._con.execute(sql)
            columns = [d[0] for d in (cur.description or [])]
            rows = cur.fetchmany(self.max_rows + 1)
        except duckdb.InterruptException:
            return QueryResult.fail("timeout", f"cut off after {self.timeout_s:g} s", sql_executed=sql)
        except duckdb.OutOfMemoryException as exc:
            return QueryResult.fail(
                "runtime_error", f"out of memory (memory limit): {_short(exc)}", sql_executed=sql
            )
        except duckdb.PermissionException as exc:
            return QueryResult.fail("refused", f"blocked by the engine: {_short(exc)}", sql_executed=sql)
        except duckdb.ParserException as exc:
            return QueryResult.fail("parse_error", _short(exc), sql_executed=sql)
        except Exception as exc:  # duckdb.Error and result conversion errors: the query's fault
            if fired.is_set():
                return QueryResult.fail("timeout", f"cut off after {self.timeout_s:g} s", sql_executed=sql)
            return QueryResult.fail("runtime_error", _short(exc), sql_executed=sql)
        finally:
            timer.cancel()
            timer.join()
        if len(rows) > self.max_rows:
            return QueryResult.fail(
                "too_many_rows",
                f"more than {self.max_rows} rows",
                columns=columns,
                rows=[tuple(r) for r in rows[: self.max_rows]],
                sql_executed=sql,
            )
        return QueryResult(ok=True, columns=columns, rows=[tuple(r) for r in rows], sql_executed=sql)


def _short(exc: BaseException | None, limit: int = 300) -> str:
    if exc is None:
        return "unknown error"
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
