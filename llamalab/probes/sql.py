"""Probe 3: natural language to SQL (zero-shot), scored by executing the answer.

The 2023 first look at LLaMA gave the models a plain-text continuation prompt::

    -- We have a table `events` with columns `event_id`, `timestamp`, `user_id`, `rpc_method`.
    -- We want to count how many users issued request "Login" over the last week.
    -- SQL query for this is:

and judged the four answers (LLaMA-7B/13B/33B, ChatGPT) by eye. Here every item names a fixture
database (``db``: a setup ``.sql`` file next to the JSONL); the prompt's schema lines are derived from
that database's tables (one ``-- We have a table ...`` line per table, ``_``-prefixed tables hidden),
and the answer is run in :class:`llamalab.sqlbox.SQLBox` (read-only, time- and row-bounded, "now"
pinned to the data set's reference time) and compared with the result of the item's gold query.

Scores per item: ``valid_sql`` (DuckDB accepted the query and ran it; a query cut off by the time or
row bound counts as valid, a refused one does not), ``correct`` (same result as the gold query) and
``failure``: None or one of :data:`FAILURES`. Result comparison (:func:`results_match`): rows as a
multiset, or as a list when the gold query has a top-level ORDER BY; column names ignored, column
order too when the columns can be matched up; numbers compared by value (``7 == 7.0``), floats to 6
significant digits; a timestamp at midnight equals its date. Execution accuracy says nothing about
how a query would behave on other data: the fixture is small and chosen to tell the published
answers apart (see data/probes/sql/README.md).
"""

from __future__ import annotations

import itertools
import math
import re
import threading
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp

from llamalab import paths
from llamalab.data import Field, read_jsonl, single_line
from llamalab.sqlbox import SQLBox

NAME = "sql"
DEFAULT_DATA = "probes/sql/questions.jsonl"  # relative to paths.data_dir()
MAX_NEW_TOKENS = 128  # the longest gold query is ~110 LLaMA tokens; find_end stops most answers early

DIFFICULTIES = ("easy", "medium", "hard")
FAILURES = ("no_sql", "parse_error", "refused", "runtime_error", "timeout", "too_many_rows", "wrong_result")
PREVIEW_ROWS = 5


# -- data ------------------------------------------------------------------------------------------



def load_items(path: str | Path | None = None) -> list[dict]:
    """Read and validate a SQL probe JSONL.

    Rows: ``{"id", "question", "gold_sql", "db", "difficulty"?}``; ``db`` is a setup ``.sql`` file
    relative to the JSONL, ``difficulty`` one of :data:`DIFFICULTIES` when present. Each returned
    item gets ``_db_path`` (the resolved setup file; the runner drops ``_`` keys from its output).
    Raises :class:`llamalab.data.DataError` (``file:line: field 'x': ...``).
    """
    path = Path(path) if path is not None else paths.data_dir() / DEFAULT_DATA
    base = path.resolve().parent

    def db_exists(value: str) -> str | None:
        if not value.endswith(".sql"):
            return f"{value!r} is not a setup .sql file"
        if not (base / value).is_file():
            return f"setup file {value!r} not found (relative to {base})"
        return None

    fields = [
        Field("id", (str, int)),
        Field("question", check=single_line),
        Field("gold_sql"),
        Field("db", check=db_exists),
        Field("difficulty", required=False, choices=DIFFICULTIES),
    ]
    items = read_jsonl(path, fields, unique="id")
    for item in items:
        item["_db_path"] = str((base / item["db"]).resolve())
    return items


def db_path(item: dict) -> Path:
    """The item's setup file: ``_db_path`` from :func:`load_items`, else ``db`` (absolute, or relative
    to the default data folder)."""
    if item.get("_db_path"):
        return Path(item["_db_path"])
    db = Path(item["db"])
    return db if db.is_absolute() else paths.data_dir() / Path(DEFAULT_DATA).parent / db


_BOXES: dict[str, SQLBox] = {}
_BOXES_LOCK = threading.Lock()


def get_box(setup_path: str | Path) -> SQLBox:
    """One cached :class:`SQLBox` per setup file (built on first use)."""
    key = str(Path(setup_path).resolve())
    with _BOXES_LOCK:
        if key not in _BOXES:
            _BOXES[key] = SQLBox(key)
        return _BOXES[key]


# -- prompt ----------------------------------------------------------------------------------------


def schema_lines(tables: dict[str, list[str]]) -> list[str]:
    return [
        f"-- We have a table `{table}` with columns {', '.join(f'`{c}`' for c in columns)}."
        for table, columns in tables.items()
    ]


def question_line(question: str) -> str:
    """``-- We want to <question>`` for a question written as a verb phrase ("count how many ..."),
    ``-- <question>`` for one written as a sentence ("How many ...?"); a final period is added when
    the question has no final punctuation."""
    q = question.strip()
    line = f"-- We want to {q}" if q[:1].islower() else f"-- {q}"
    return line if line.endswith((".", "?", "!")) else line + "."


def build_prompt(item: dict) -> str:
    """The original probe's plain-text prompt for the item's database and question."""
    tables = get_box(db_path(item)).tables()
    return (
        "\n".join([*schema_lines(tables), question_line(item["question"]), "-- SQL query for this is:"])
        + "\n"
    )


# -- finding the answer in the text ----------------------------------------------------------------

_FENCE = re.compile(r"^[ \t]*```", re.M)
_FENCE_BLOCK = re.compile(r"```[^\n`]*\n?(.*?)(?:```|\Z)", re.S)
_SQL_LINE = re.compile(
    r"^[ \t]*\(?[ \t]*(?:select\b|with\s+(?:recursive\s+)?[\w\"`]+\s*(?:\(|as\b))", re.I | re.M
)
# Other statements (upper case only, so prose like "Update the table" is not taken for SQL): extracted
# so that the sandbox refuses them with a reason, rather than reported as "no SQL".
_OTHER_STATEMENT_LINE = re.compile(
    r"^[ \t]*(?:INSERT|UPDATE|DELETE|DROP|CREATE|ALTER|TRUNCATE|REPLACE|MERGE|ATTACH|DETACH|COPY|EXPORT|"
    r"IMPORT|PRAGMA|INSTALL|LOAD|SET|RESET|CALL)\b",
    re.M,
)
_SQL_INLINE = re.compile(r"\b(?:SELECT|WITH\s+(?:RECURSIVE\s+)?\w+\s+AS\s*\()")
_PROMPT_ECHO = re.compile(r"^[ \t]*--[ \t]*(?:We have a table|We want|SQL query for this)", re.M | re.I)
_BLANK_LINE = re.compile(r"\n[ \t]*\r?\n")


def _sql_start(text: str) -> int | None:
    """Where the SQL starts: the first line that begins a statement, else an inline SELECT."""
    starts = [m.start() for m in (_SQL_LINE.search(text), _OTHER_STATEMENT_LINE.search(text)) if m]
    if starts:
        return min(starts)
    m = _SQL_INLINE.search(text)
    return m.start() if m else None


def _statement_end(body: str) -> int | None:
    """Index just after the first ``;`` outside quotes and comments in ``body``, else None."""
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c in "'\"`":
            j = body.find(c, i + 1)
            while j != -1 and j + 1 < n and body[j + 1] == c:  # doubled quote inside the literal
                j = body.find(c, j + 2)
            if j == -1:
                return None
            i = j + 1
            continue
        if body.startswith("--", i):
            j = body.find("\n", i)
            if j == -1:
                return None
            i = j + 1
            continue
        if body.startswith("/*", i):
            j = body.find("*/", i + 2)
            if j == -1:
                return None
            i = j + 2
            continue
        if c == ";":
            return i + 1
        i += 1
    return None


def _sql_end(body: str) -> int | None:
    """Where the SQL that starts ``body`` ends: a ``;``, a blank line, a fence, a prompt echo."""
    ends = []
    semi = _statement_end(body)
    if semi is not None:
        ends.append(semi)
    for pattern in (_BLANK_LINE, _FENCE, _PROMPT_ECHO):
        m = pattern.search(body, 1)
        if m:
            ends.append(m.start())
    return min(ends) if ends else None


def find_end(text: str) -> int | None:
    """Index where the answer ends in the generated text so far, or None to keep generating.

    A fenced answer (an opening ````` before any SQL) ends after its closing fence. Otherwise, once
    SQL has started (a line beginning with SELECT, WITH ... or another statement keyword), it ends after the first ``;`` outside
    quotes and comments, at a blank line, at a closing fence, or where the model starts echoing the
    prompt (``-- We have a table`` ...); whichever comes first. Blank lines and prose before any SQL
    do not end the answer (chat models write "Here is the query:" first).
    """
    start = _sql_start(text)
    fence = _FENCE.search(text)
    if fence is not None and (start is None or fence.start() < start):
        close = _FENCE.search(text, fence.end())
        return close.end() if close else None
    if start is None:
        return None
    end = _sql_end(text[start:])
    return None if end is None else start + end


def extract_sql(completion: str) -> str | None:
    """The first SQL query in a completion (fenced or not, with or without prose around it),
    without its final ``;``; None when there is none."""
    text = completion.replace("\r\n", "\n")
    body = None
    for block in _FENCE_BLOCK.finditer(text):
        start = _sql_start(block.group(1))
        if start is not None:
            body = block.group(1)[start:]
            break
    if body is None:
        start = _sql_start(text)
        if start is None:
            return None
        body = text[start:]
    end = _sql_end(body)
    sql = (body if end is None else body[:end]).strip().rstrip(";").strip()
    return sql or None


# -- scoring ---------------------------------------------------------------------------------------


def _norm_cell(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, (float, Decimal)):
        x = float(value)
        if math.isnan(x) or math.isinf(x):
            return repr(x)
        if x.is_integer() and abs(x) < 2**53:
            return int(x)
        return float(f"{x:.6g}")
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        if value.time() == time(0):
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return _norm_cell(value.total_seconds())
    return repr(value)


def _norm_rows(rows: list[tuple]) -> list[tuple]:
    return [tuple(_norm_cell(v) for v in row) for row in rows]


def _same(pred: list[tuple], gold: list[tuple], ordered: bool) -> bool:
    return pred == gold if ordered else Counter(pred) == Counter(gold)


def results_match(pred_rows: list[tuple], gold_rows: list[tuple], ordered: bool = False) -> bool:
    """Do two query results agree? (see the module docstring for the rules)."""
    pred, gold = _norm_rows(pred_rows), _norm_rows(gold_rows)
    if len(pred) != len(gold):
        return False
    if not gold:
        return True
    width = len(gold[0])
    if any(len(r) != width for r in pred):
        return False
    if _same(pred, gold, ordered):
        return True
    if width == 1 or width > 6:
        return False
    # Same columns in another order: try the permutations whose columns hold the same values.
    gold_cols = [Counter(r[i] for r in gold) for i in range(width)]
    pred_cols = [Counter(r[i] for r in pred) for i in range(width)]
    for perm in itertools.permutations(range(width)):
        if all(pred_cols[p] == gold_cols[i] for i, p in enumerate(perm)):
            if _same([tuple(r[p] for p in perm) for r in pred], gold, ordered):
                return True
    return False


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (date, time)):
        return value.isoformat()
    return str(value)


def _preview(rows: list[tuple]) -> list[list]:
    return [[_jsonable(v) for v in row] for row in rows[:PREVIEW_ROWS]]


def is_ordered(sql: str) -> bool:
    """Does the query have a top-level ORDER BY (so its row order is part of the answer)?"""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except Exception:
        return False
    return isinstance(tree, exp.Query) and tree.args.get("order") is not None


_GOLD: dict[tuple[str, str], tuple[list[tuple], bool]] = {}


def gold_result(item: dict) -> tuple[list[tuple], bool]:
    """``(rows, ordered)`` of the item's gold query (cached). A failing gold query is a data bug:
    RuntimeError."""
    setup = db_path(item)
    key = (str(setup), item["gold_sql"])
    if key not in _GOLD:
        r = get_box(setup).run(item["gold_sql"], read="duckdb")
        if not r.ok:
            raise RuntimeError(f"gold query of item {item.get('id')!r} fails ({r.category}): {r.error}")
        _GOLD[key] = (r.rows, is_ordered(item["gold_sql"]))
    return _GOLD[key]


def score_item(item: dict, completion: str) -> dict:
    """Extract the query from ``completion``, run it on the item's database, compare with gold.

    Returns ``parsed`` (the extracted SQL or None), ``valid_sql``, ``correct``, ``failure`` (None or
    one of :data:`FAILURES`), ``error``, ``sql_executed`` (the DuckDB text that ran), ``n_rows``,
    ``result_preview`` and ``gold_preview`` (first rows, JSON-friendly).
    """
    sql = extract_sql(completion or "")
    out: dict[str, Any] = {
        "parsed": sql,
        "valid_sql": False,
        "correct": False,
        "failure": None,
        "error": None,
        "sql_executed": None,
        "n_rows": None,
        "result_preview": None,
    }
    if sql is None:
        out["failure"] = "no_sql"
        return out
    gold_rows, ordered = gold_result(item)
    out["gold_preview"] = _preview(gold_rows)
    r = get_box(db_path(item)).run(sql)
    out["sql_executed"] = r.sql_executed
    if not r.ok:
        out.update(failure=r.category, error=r.error, valid_sql=r.category in ("timeout", "too_many_rows"))
        return out
    out.update(valid_sql=True, n_rows=len(r.rows), result_preview=_preview(r.rows))
    out["correct"] = results_match(r.rows, gold_rows, ordered)
    if not out["correct"]:
        out["failure"] = "wrong_result"
    return out


def _rate(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _group(items: list[dict]) -> dict:
    return {
        "n": len(items),
        "valid_sql_rate": _rate([bool(x.get("valid_sql")) for x in items]),
        "execution_accuracy": _rate([bool(x.get("correct")) for x in items]),
    }


def summarize(scored_items: list[dict]) -> dict:
    """``n, valid_sql_rate, execution_accuracy``, the same per difficulty and per database (the setup
    file's stem), and ``failures``: a count for every category of :data:`FAILURES`."""
    by_difficulty: dict[str, list[dict]] = {}
    by_db: dict[str, list[dict]] = {}
    for x in scored_items:
        by_difficulty.setdefault(x.get("difficulty") or "unknown", []).append(x)
        by_db.setdefault(Path(str(x.get("db", "unknown"))).stem, []).append(x)
    failures = Counter(x.get("failure") for x in scored_items if x.get("failure"))
    order = {d: i for i, d in enumerate(DIFFICULTIES)}
    return {
        **_group(scored_items),
        "by_difficulty": {
            d: _group(v) for d, v in sorted(by_difficulty.items(), key=lambda kv: order.get(kv[0], 99))
        },
        "by_db": {d: _group(v) for d, v in sorted(by_db.items())},
        "failures": {**{f: 0 for f in FAILURES}, **dict(failures)},
    }


PUBLISHED_FILE = "probes/sql/published_answers.jsonl"  # relative to paths.data_dir()


def published_answers(path: str | Path | None = None) -> dict[str, dict]:
    """The four answers published in 2023 for the Login question, verbatim: {system: row}."""
    path = Path(path) if path else paths.data_dir() / PUBLISHED_FILE
    rows = read_jsonl(path, [Field("system"), Field("question_id"), Field("completion")], unique="system")
    return {r["system"]: r for r in rows}
