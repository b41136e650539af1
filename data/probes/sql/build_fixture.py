"""Write the SQL probe's fixture databases: ``events.sql`` and ``library.sql``.

Deterministic: a fixed seed and a fixed reference time, no wall clock, no environment. Run it from
anywhere (``python data/probes/sql/build_fixture.py``); it rewrites the two files next to itself.
``--check`` exits 1 when the files on disk differ from what it would write (a CI guard against hand
edits). The questions in ``questions.jsonl`` are written against these exact rows, so changing the
seed or the generator means re-checking every gold query (``pytest tests/test_probe_sql.py``).
"""

from __future__ import annotations

import random
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent

EVENTS_REFERENCE = datetime(2023, 3, 10, 12, 0, 0)  # "now" for the events data set (a Friday, noon)
LIBRARY_REFERENCE = datetime(2024, 6, 14, 10, 0, 0)  # "now" for the library data set

RPC_METHODS = [  # (name, weight)
    ("Login", 20),
    ("Logout", 12),
    ("GetProfile", 18),
    ("UpdateProfile", 6),
    ("Search", 22),
    ("ListOrders", 10),
    ("PlaceOrder", 8),
    ("ResetPassword", 4),
]


def _q(value) -> str:
    """A SQL literal."""
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, datetime):
        return f"'{value:%Y-%m-%d %H:%M:%S}'"
    if isinstance(value, date):
        return f"'{value:%Y-%m-%d}'"
    return "'" + str(value).replace("'", "''") + "'"


def _values(rows: list[tuple]) -> str:
    return ",\n".join("(" + ", ".join(_q(v) for v in row) + ")" for row in rows) + ";\n"


def _meta(reference: datetime) -> str:
    return (
        '-- The data set\'s "now": sqlbox pins NOW(), CURRENT_DATE, CURRENT_TIMESTAMP, ... to this value.\n'
        "CREATE TABLE _meta (reference_time TIMESTAMP NOT NULL);\n"
        f"INSERT INTO _meta VALUES ({_q(reference)});\n"
    )


def events_sql() -> str:
    rng = random.Random(20230310)
    ref = EVENTS_REFERENCE
    start = ref - timedelta(days=42)  # six weeks of history, all before the reference time
    users = list(range(1, 51))
    # Each user: an activity weight and an active window [first, last] inside the six weeks.
    profile = {}
    for u in users:
        weight = rng.choice([0.3, 0.6, 1.0, 1.0, 1.5, 2.5])
        first, last = start, ref - timedelta(minutes=5)
        kind = rng.random()
        if kind < 0.22:  # dormant: nothing in the last ten days
            last = ref - timedelta(days=rng.randint(10, 30))
        elif kind < 0.34:  # newcomer: first seen in the last two weeks
            first = ref - timedelta(days=rng.randint(3, 14))
        profile[u] = (weight, first, last)
    no_login = set(rng.sample(users, 4))  # a few users never call Login
    methods = [m for m, _ in RPC_METHODS]
    weights = [w for _, w in RPC_METHODS]
    rows = []
    picks = users + rng.choices(users, weights=[profile[x][0] for x in users], k=640 - len(users))
    for u in picks:  # every user has at least one event
        _, first, last = profile[u]
        span = int((last - first).total_seconds())
        ts = first + timedelta(seconds=rng.randrange(span))
        method = rng.choices(methods, weights=weights)[0]
        if u in no_login and method == "Login":
            method = "GetProfile"
        rows.append((ts, u, method))
    rows.sort()
    table = [(i, ts, u, m) for i, (ts, u, m) in enumerate(rows, start=1)]
    return (
        "-- The events data set of the SQL probe: the table of the 2023 LLaMA text-to-SQL prompt, with a\n"
        "-- generated fixture (640 events, 50 users, six weeks before the reference time).\n"
        "-- Written by build_fixture.py (seeded); do not edit by hand, rerun the script.\n"
        f"-- reference_time: {ref:%Y-%m-%d %H:%M:%S}\n"
        "CREATE TABLE events (\n"
        "    event_id INTEGER PRIMARY KEY,\n"
        "    timestamp TIMESTAMP NOT NULL,\n"
        "    user_id INTEGER NOT NULL,\n"
        "    rpc_method VARCHAR NOT NULL\n"
        ");\n"
        "INSERT INTO events VALUES\n" + _values(table) + _meta(ref)
    )


BOOKS = [  # title, author, genre, published_year (public-domain classics)
    ("Pride and Prejudice", "Jane Austen", "Fiction", 1813),
    ("Emma", "Jane Austen", "Fiction", 1815),
    ("Persuasion", "Jane Austen", "Fiction", 1817),
    ("Frankenstein", "Mary Shelley", "Science Fiction", 1818),
    ("The Time Machine", "H. G. Wells", "Science Fiction", 1895),
    ("The War of the Worlds", "H. G. Wells", "Science Fiction", 1898),
    ("The Invisible Man", "H. G. Wells", "Science Fiction", 1897),
    ("Twenty Thousand Leagues Under the Seas", "Jules Verne", "Science Fiction", 1870),
    ("Around the World in Eighty Days", "Jules Verne", "Adventure", 1872),
    ("Treasure Island", "Robert Louis Stevenson", "Adventure", 1883),
    ("Kidnapped", "Robert Louis Stevenson", "Adventure", 1886),
    ("The Hound of the Baskervilles", "Arthur Conan Doyle", "Mystery", 1902),
    ("A Study in Scarlet", "Arthur Conan Doyle", "Mystery", 1887),
    ("The Sign of the Four", "Arthur Conan Doyle", "Mystery", 1890),
    ("The Moonstone", "Wilkie Collins", "Mystery", 1868),
    ("The Woman in White", "Wilkie Collins", "Mystery", 1859),
    ("Moby-Dick", "Herman Melville", "Fiction", 1851),
    ("Great Expectations", "Charles Dickens", "Fiction", 1861),
    ("A Tale of Two Cities", "Charles Dickens", "Historical", 1859),
    ("Bleak House", "Charles Dickens", "Fiction", 1853),
    ("War and Peace", "Leo Tolstoy", "Historical", 1869),
    ("Ivanhoe", "Walter Scott", "Historical", 1819),
    ("Leaves of Grass", "Walt Whitman", "Poetry", 1855),
    ("Songs of Innocence and of Experience", "William Blake", "Poetry", 1794),
    ("The Republic", "Plato", "Philosophy", -375),
    ("Meditations", "Marcus Aurelius", "Philosophy", 180),
    ("Walden", "Henry David Thoreau", "Philosophy", 1854),
    ("On the Origin of Species", "Charles Darwin", "Science", 1859),
    ("The Voyage of the Beagle", "Charles Darwin", "Science", 1839),
    ("Dracula", "Bram Stoker", "Horror", 1897),
]

FIRST = [
    "Ada",
    "Bruno",
    "Chiara",
    "Dmitri",
    "Elif",
    "Farah",
    "Goran",
    "Hana",
    "Ines",
    "Jonas",
    "Kaito",
    "Lena",
    "Marek",
    "Nadia",
    "Oskar",
    "Priya",
    "Quentin",
    "Rosa",
    "Sven",
    "Tariq",
    "Uma",
    "Viktor",
    "Wen",
    "Yara",
]
LAST = [
    "Almeida",
    "Becker",
    "Costa",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Horvat",
    "Ivanova",
    "Jansen",
    "Kowalski",
    "Laine",
    "Moreau",
    "Novak",
    "Okafor",
    "Petrov",
    "Rossi",
    "Silva",
    "Tanaka",
    "Weber",
]
CITIES = ["Ghent", "Leeds", "Lyon", "Porto", "Turin"]


def library_sql() -> str:
    rng = random.Random(20240614)
    ref = LIBRARY_REFERENCE
    today = ref.date()
    books = [(i, *b) for i, b in enumerate(BOOKS, start=1)]
    names = [f"{f} {last}" for f, last in zip(rng.sample(FIRST, 24), rng.sample(LAST * 2, 24), strict=True)]
    members = []
    for i, name in enumerate(names, start=1):
        joined = today - timedelta(days=rng.randint(20, 900))
        members.append((i, name, rng.choice(CITIES), joined))
    popular = [b[0] for b in books]
    book_w = [rng.choice([0.2, 0.5, 1, 1, 2, 4]) for _ in books]
    never_loaned = set(rng.sample(popular, 3))  # a few books nobody borrowed
    member_w = [rng.choice([0, 0.5, 1, 1, 2, 3]) for _ in members]  # weight 0: never borrowed
    loans = []
    loan_id = 0
    for _ in range(160):
        m = rng.choices(members, weights=member_w)[0]
        b = rng.choices(
            books, weights=[0 if x[0] in never_loaned else w for x, w in zip(books, book_w, strict=True)]
        )[0]
        earliest = max(m[3], today - timedelta(days=240))
        span = (today - earliest).days
        if span <= 1:
            continue
        loaned = earliest + timedelta(days=rng.randrange(span))
        due = loaned + timedelta(days=21)
        kept = rng.choice([3, 7, 12, 18, 20, 21, 25, 30, 45])
        returned = loaned + timedelta(days=kept)
        if returned >= today or rng.random() < 0.04:
            returned = None  # still out
        loan_id += 1
        loans.append((loan_id, b[0], m[0], loaned, due, returned))
    loans.sort(key=lambda r: (r[3], r[0]))
    loans = [(i, *r[1:]) for i, r in enumerate(loans, start=1)]
    return (
        '-- The library data set of the SQL probe (the "unseen schema" split): books, members, loans.\n'
        "-- Written by build_fixture.py (seeded); do not edit by hand, rerun the script.\n"
        f"-- reference_time: {ref:%Y-%m-%d %H:%M:%S}\n"
        "CREATE TABLE books (\n"
        "    book_id INTEGER PRIMARY KEY,\n"
        "    title VARCHAR NOT NULL,\n"
        "    author VARCHAR NOT NULL,\n"
        "    genre VARCHAR NOT NULL,\n"
        "    published_year INTEGER NOT NULL\n"
        ");\n"
        "INSERT INTO books VALUES\n" + _values(books) + "CREATE TABLE members (\n"
        "    member_id INTEGER PRIMARY KEY,\n"
        "    name VARCHAR NOT NULL,\n"
        "    city VARCHAR NOT NULL,\n"
        "    joined_on DATE NOT NULL\n"
        ");\n"
        "INSERT INTO members VALUES\n" + _values(members) + "CREATE TABLE loans (\n"
        "    loan_id INTEGER PRIMARY KEY,\n"
        "    book_id INTEGER NOT NULL REFERENCES books (book_id),\n"
        "    member_id INTEGER NOT NULL REFERENCES members (member_id),\n"
        "    loaned_on DATE NOT NULL,\n"
        "    due_on DATE NOT NULL,\n"
        "    returned_on DATE\n"
        ");\n"
        "INSERT INTO loans VALUES\n" + _values(loans) + _meta(ref)
    )


def main(argv: list[str]) -> int:
    outputs = {HERE / "events.sql": events_sql(), HERE / "library.sql": library_sql()}
    if "--check" in argv:
        stale = [
            p.name for p, text in outputs.items() if not p.is_file() or p.read_text(encoding="utf-8") != text
        ]
        if stale:
            print(f"out of date: {', '.join(stale)} (rerun {Path(__file__).name})", file=sys.stderr)
            return 1
        return 0
    for path, text in outputs.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
