"""Probe 3 (sql): data, exact prompt, answer extraction, stop condition, scoring of the four
published answers, result comparison and summary."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from llamalab import paths
from llamalab.data import DataError
from llamalab.probes import sql

SEED = Path(__file__).resolve().parents[2] / "shared" / "seed_probes.md"
SQL_DIR = paths.data_dir() / "probes" / "sql"
LOGIN_ID = "events-login-last-week"

# The original prompt (seed_probes.md section 3), three lines.
PROMPT_LITERAL = """-- We have a table `events` with columns `event_id`, `timestamp`, `user_id`, `rpc_method`.
-- We want to count how many users issued request "Login" over the last week.
-- SQL query for this is:"""

# The published outputs, verbatim (seed_probes.md section 3).
PUBLISHED = {
    "LLaMA-7B": """SELECT count (*)
FROM events
WHERE user_id IN (SELECT user_id
FROM events
WHERE timestamp >= NOW () - INTERVAL 7 DAY)
AND rpc_method = 'Login';""",
    "LLaMA-13B": """SELECT COUNT (*) FROM events WHERE rpc_method = "Login"
AND UNIX_TIMESTAMP (timestamp) >= UNIX_TIMESTAMP (CURRENT_DATE - INTERVAL 7 DAY)""",
    "LLaMA-33B": """SELECT user_id,
COUNT (DISTINCT user_id) AS total
FROM events
WHERE timestamp BETWEEN TIMESTAMP '2013-08-14 00:00:00' AND TIMESTAMP '2013-08-21 00:00:00'
AND rpc_method = 'Login'
GROUP BY user_id""",
    "ChatGPT": """SELECT COUNT (DISTINCT user_id)
FROM events
WHERE rpc_method = 'Login'
AND timestamp >= DATE_SUB (NOW (), INTERVAL 1 WEEK);""",
}


@pytest.fixture(scope="module", autouse=True)
def isolated_cache(tmp_path_factory):
    """Build the fixture databases in a temporary LLAMALAB_HOME, not the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LLAMALAB_HOME", str(tmp_path_factory.mktemp("llamalab-home")))
    sql._BOXES.clear()
    sql._GOLD.clear()
    yield
    for box in sql._BOXES.values():
        box.close()
    sql._BOXES.clear()
    sql._GOLD.clear()
    mp.undo()


@pytest.fixture(scope="module")
def items():
    return sql.load_items()


@pytest.fixture(scope="module")
def login(items):
    return next(x for x in items if x["id"] == LOGIN_ID)


def seed_section_3() -> str | None:
    if not SEED.is_file():
        return None
    text = SEED.read_text(encoding="utf-8")
    m = re.search(r"^## 3\..*?(?=^## )", text, re.S | re.M)
    return m.group(0) if m else None


# --- prompt ---------------------------------------------------------------------------------------


def test_login_prompt_is_the_original_exactly(login):
    assert sql.build_prompt(login) == PROMPT_LITERAL + "\n"


def test_literal_copies_match_seed_probes_md():
    section = seed_section_3()
    if section is None:
        pytest.skip("../shared/seed_probes.md not available")
    blocks = re.findall(r"^```[^\n]*\n(.*?)\n```", section, re.S | re.M)
    assert blocks[0] == PROMPT_LITERAL
    assert blocks[1:5] == list(PUBLISHED.values())


def test_prompt_for_a_multi_table_database(items):
    item = next(x for x in items if x["db"] == "library.sql")
    prompt = sql.build_prompt(item)
    lines = prompt.splitlines()
    assert lines[:3] == [
        "-- We have a table `books` with columns `book_id`, `title`, `author`, `genre`, `published_year`.",
        "-- We have a table `members` with columns `member_id`, `name`, `city`, `joined_on`.",
        "-- We have a table `loans` with columns `loan_id`, `book_id`, `member_id`, `loaned_on`, `due_on`, "
        "`returned_on`.",
    ]
    assert lines[3] == "-- We want to " + item["question"]
    assert prompt.endswith("\n-- SQL query for this is:\n")
    assert "_meta" not in prompt


def test_question_line_forms():
    assert sql.question_line("count the users") == "-- We want to count the users."
    assert sql.question_line("How many users are there?") == "-- How many users are there?"


# --- the four published answers -------------------------------------------------------------------


def test_published_answers_four_results_only_chatgpt_correct(login):
    scored = {name: sql.score_item(login, answer) for name, answer in PUBLISHED.items()}
    assert scored["ChatGPT"]["correct"] and scored["ChatGPT"]["failure"] is None
    for name in ("LLaMA-7B", "LLaMA-13B", "LLaMA-33B"):
        assert scored[name]["valid_sql"], (name, scored[name]["error"])
        assert not scored[name]["correct"] and scored[name]["failure"] == "wrong_result", name
    results = {name: json.dumps(s["result_preview"]) for name, s in scored.items()}
    assert len(set(results.values())) == 4, results
    assert scored["ChatGPT"]["result_preview"] == scored["ChatGPT"]["gold_preview"]
    # the readings in seed_probes.md: 7B counts Login events of recently active users, 13B counts
    # events rather than users, 33B looks at 2013 and returns one row per user (none here)
    assert scored["LLaMA-7B"]["result_preview"][0][0] > scored["LLaMA-13B"]["result_preview"][0][0]
    assert scored["LLaMA-13B"]["result_preview"][0][0] > scored["ChatGPT"]["result_preview"][0][0]
    assert scored["LLaMA-33B"]["n_rows"] == 0


def test_fixture_shape():
    box = sql.get_box(SQL_DIR / "events.sql")
    ref = box.reference_time
    assert ref == datetime(2023, 3, 10, 12, 0)
    n, users, methods, first, last = box.run(
        "SELECT COUNT(*), COUNT(DISTINCT user_id), LIST(DISTINCT rpc_method), MIN(timestamp), MAX(timestamp) "
        "FROM events",
        read="duckdb",
    ).rows[0]
    assert n >= 500 and users == 50 and "Login" in methods and len(methods) >= 5
    assert last <= ref and ref - first >= timedelta(weeks=4)
    assert not (first.year <= 2013 <= last.year)  # 33B's hard-coded dates find nothing


# --- data -----------------------------------------------------------------------------------------


def test_question_counts(items):
    assert len(items) >= 40
    per_db = Counter(x["db"] for x in items)
    assert per_db["events.sql"] >= 25 and per_db["library.sql"] >= 12
    for db in per_db:
        assert {x["difficulty"] for x in items if x["db"] == db} == {"easy", "medium", "hard"}
    assert all(Path(x["_db_path"]).is_file() for x in items)


def test_every_gold_query_is_correct_against_itself_and_nontrivial(items):
    for item in items:
        rows, _ = sql.gold_result(item)
        assert rows and rows != [(0,)] and rows != [(None,)], item["id"]
        s = sql.score_item(item, item["gold_sql"] + ";")
        assert s["correct"], (item["id"], s["failure"], s["error"])


def test_fixture_files_are_generated_output():
    spec = importlib.util.spec_from_file_location("build_fixture", SQL_DIR / "build_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--check"]) == 0


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def row(**kw) -> dict:
    base = {
        "id": "q1",
        "question": "count the rows.",
        "gold_sql": "SELECT 1",
        "db": "x.sql",
        "difficulty": "easy",
    }
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    "bad, field",
    [
        (row(id="q2", gold_sql=None), "gold_sql"),
        (row(id="q2", difficulty="trivial"), "difficulty"),
        (row(id="q2", db="nope.sql"), "db"),
        (row(id="q2", question="two\nlines"), "question"),
        (row(id="q1"), "id"),  # duplicate
    ],
)
def test_load_items_errors_name_file_line_field(tmp_path, bad, field):
    (tmp_path / "x.sql").write_text("CREATE TABLE t (x INTEGER);")
    path = write_jsonl(tmp_path / "q.jsonl", [row(), bad])
    with pytest.raises(DataError) as err:
        sql.load_items(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:2: field '{field}'"), msg


def test_load_items_resolves_db_relative_to_the_jsonl(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.sql").write_text("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (5);")
    path = write_jsonl(tmp_path / "q.jsonl", [row(db="sub/x.sql", gold_sql="SELECT x FROM t")])
    [item] = sql.load_items(path)
    assert Path(item["_db_path"]) == (tmp_path / "sub" / "x.sql").resolve()
    assert sql.build_prompt(item) == (
        "-- We have a table `t` with columns `x`.\n-- We want to count the rows.\n-- SQL query for this is:\n"
    )
    assert sql.score_item(item, "SELECT 5")["correct"]
    assert sql.score_item(item, "SELECT 6")["failure"] == "wrong_result"


# --- extraction and stop condition ----------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("SELECT COUNT(*) FROM events;", "SELECT COUNT(*) FROM events"),
        ("SELECT 1;\n-- We have a table `x` with columns `y`.", "SELECT 1"),
        (
            "Here is the query:\n\n```sql\nSELECT COUNT(DISTINCT user_id)\nFROM events;\n```\nThis counts users.",
            "SELECT COUNT(DISTINCT user_id)\nFROM events",
        ),
        ("```\nselect a from t\n```", "select a from t"),
        ("```sql\nSELECT a FROM t WHERE b = 1", "SELECT a FROM t WHERE b = 1"),  # unclosed fence
        ("Sure! You can use:\nSELECT a FROM t\n\nIt returns a.", "SELECT a FROM t"),
        ("The answer is SELECT a FROM t; done", "SELECT a FROM t"),
        ("SELECT ';' AS s, \"a;b\" FROM t; SELECT 2;", "SELECT ';' AS s, \"a;b\" FROM t"),
        ("WITH x AS (SELECT 1 AS a) SELECT a FROM x;\nmore", "WITH x AS (SELECT 1 AS a) SELECT a FROM x"),
        ("SELECT a -- pick; a\nFROM t;", "SELECT a -- pick; a\nFROM t"),
        ("  \nSELECT 1\n```\ntrailing", "SELECT 1"),
        ("I do not know.", None),
        ("", None),
        ("```\nno query here\n```", None),
    ],
)
def test_extract_sql(completion, expected):
    assert sql.extract_sql(completion) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("SELECT COUNT(*) FROM events", None),  # still going
        ("SELECT COUNT(*) FROM events;", len("SELECT COUNT(*) FROM events;")),
        ("SELECT 1;\nSELECT 2;", len("SELECT 1;")),
        ("SELECT a FROM t WHERE s = 'x;", None),  # inside an open string
        ("SELECT a FROM t WHERE s = 'x;y'", None),
        ("SELECT a\nFROM t\n\nThe", len("SELECT a\nFROM t")),
        ("SELECT a\nFROM t\n-- We have a table", len("SELECT a\nFROM t\n")),
        ("\n\nHere is the query:\n\n", None),  # blank lines before any SQL do not end it
        ("Here is the query:\n```sql\nSELECT 1;\n", None),  # fenced: wait for the closing fence
        ("Here is the query:\n```sql\nSELECT 1;\n```", len("Here is the query:\n```sql\nSELECT 1;\n```")),
        ("SELECT 1\n```", len("SELECT 1\n")),
    ],
)
def test_find_end(text, expected):
    assert sql.find_end(text) == expected


def test_find_end_cut_then_extract_gives_the_published_answer():
    text = PUBLISHED["LLaMA-7B"] + "\n\n-- We have a table `users` with columns `id`."
    end = sql.find_end(text)
    assert text[:end] == PUBLISHED["LLaMA-7B"]
    assert sql.extract_sql(text[:end]) == PUBLISHED["LLaMA-7B"].rstrip(";")


# --- scoring --------------------------------------------------------------------------------------


def test_failure_categories(login):
    assert sql.score_item(login, "I cannot answer that.")["failure"] == "no_sql"
    s = sql.score_item(login, "DELETE FROM events WHERE 1 = 1;")
    assert (s["parsed"], s["failure"], s["valid_sql"]) == ("DELETE FROM events WHERE 1 = 1", "refused", False)
    assert "DELETE" in s["error"]
    s = sql.score_item(login, "SELECT * FROM read_csv('/etc/passwd');")
    assert (s["failure"], s["valid_sql"]) == ("refused", False)
    s = sql.score_item(login, "SELECT COUNT(*) FROM logins;")
    assert (s["failure"], s["valid_sql"]) == ("runtime_error", False) and "logins" in s["error"]
    s = sql.score_item(login, "SELECT COUNT(*) FROM events WHERE;")
    assert (s["failure"], s["valid_sql"]) == ("parse_error", False)
    s = sql.score_item(login, "SELECT * FROM events a, events b;")
    assert (s["failure"], s["valid_sql"], s["correct"]) == ("too_many_rows", True, False)


def test_results_match_rules():
    assert sql.results_match([(7,)], [(7.0,)])
    assert sql.results_match([(0.1 + 0.2,)], [(0.3,)])
    assert not sql.results_match([(0.31,)], [(0.3,)])
    assert sql.results_match([(1, "a"), (2, "b")], [(2, "b"), (1, "a")])  # unordered
    assert not sql.results_match([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], ordered=True)
    assert sql.results_match([("a", 1), ("b", 2)], [(1, "a"), (2, "b")])  # column order
    assert not sql.results_match([(1,), (1,)], [(1,)])  # multisets, not sets
    assert not sql.results_match([(1, 2)], [(1,)])
    assert sql.results_match([(datetime(2023, 3, 3),)], [(datetime(2023, 3, 3).date(),)])
    assert not sql.results_match([(datetime(2023, 3, 3, 1),)], [(datetime(2023, 3, 3).date(),)])
    assert sql.results_match([], [])
    assert not sql.results_match([], [(0,)])


def test_is_ordered():
    assert sql.is_ordered("SELECT a FROM t ORDER BY a")
    assert not sql.is_ordered("SELECT a FROM (SELECT a FROM t ORDER BY a)")
    assert not sql.is_ordered("SELECT a FROM t")


def test_summarize(login):
    scored = [{**login, **sql.score_item(login, answer)} for answer in PUBLISHED.values()]
    scored.append({**login, "difficulty": "hard", "db": "library.sql", **sql.score_item(login, "no query")})
    s = sql.summarize(scored)
    assert s["n"] == 5
    assert s["valid_sql_rate"] == pytest.approx(4 / 5)
    assert s["execution_accuracy"] == pytest.approx(1 / 5)
    assert s["by_difficulty"]["medium"] == {"n": 4, "valid_sql_rate": 1.0, "execution_accuracy": 0.25}
    assert s["by_difficulty"]["hard"]["execution_accuracy"] == 0.0
    assert s["by_db"]["events"]["n"] == 4 and s["by_db"]["library"]["n"] == 1
    assert (
        s["failures"]["wrong_result"] == 3 and s["failures"]["no_sql"] == 1 and s["failures"]["timeout"] == 0
    )
    assert sql.summarize([])["n"] == 0
    json.dumps(s)  # JSON-serialisable for the results file


def test_module_contract():
    assert sql.NAME == "sql"
    assert (paths.data_dir() / sql.DEFAULT_DATA).is_file()
    assert 64 <= sql.MAX_NEW_TOKENS <= 256


def test_published_answers_data_file_is_verbatim():
    rows = sql.published_answers()
    assert {k: v["completion"] for k, v in rows.items()} == PUBLISHED
    assert {v["question_id"] for v in rows.values()} == {"events-login-last-week"}
