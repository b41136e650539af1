"""Training data for SFT, the reward model and PPO: built from templates and hand-written pieces.

Everything in ``data/train/`` is written by :func:`build_all` (seeded, no clock, no network) and
committed; ``tests/test_trainsets.py`` rebuilds it and checks that the files are byte-identical.

Files (TRL's conversational formats, so hub data sets plug into the same code):

- ``sft.jsonl``: ``{"messages": [user, assistant], "task", "schema", "split"}``;
- ``preferences.jsonl``: ``{"prompt": [user], "chosen": [assistant], "rejected": [assistant], "task",
  "failure", "schema", "split"}``;
- ``ppo_prompts.jsonl`` / ``ppo_prompts_heldout.jsonl``: ``{"prompt": [user], "task", "schema",
  "reference"}`` (``reference``: the gold SQL, the clickbait label, a reference explanation or a
  reference answer, for reward functions and reports);
- ``schemas/<name>.sql``: the training-only databases (setup files in the convention of the probe
  databases: one-row ``_meta(reference_time)`` table, DuckDB dialect).

For the three probe tasks the user turn is exactly the probe's own plain-text prompt (built with
``llamalab.probes.<task>.build_prompt``), so a model tuned here learns the probe's format. Nothing
overlaps the probe sets (titles, questions and jokes, compared after lowercasing and stripping
punctuation and spaces), and the probe's "unseen" ``library`` schema never appears.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from llamalab import paths
from llamalab.data import Field, read_jsonl, write_jsonl

__all__ = [
    "FAILURES",
    "HUB_DATASETS",
    "TASKS",
    "build_all",
    "build_ppo_prompts",
    "build_preferences",
    "build_schemas",
    "build_sft",
    "counts",
    "counts_markdown",
    "from_alpaca",
    "from_hh_rlhf",
    "from_stack_exchange_paired",
    "load_hub_dataset",
    "load_ppo_prompts",
    "load_preferences",
    "load_sft",
    "main",
    "norm_text",
    "probe_texts",
    "prompt_item",
    "run_sql",
    "schema_path",
]

SFT_FILE = "sft.jsonl"
PREFERENCES_FILE = "preferences.jsonl"
PPO_FILE = "ppo_prompts.jsonl"
PPO_HELDOUT_FILE = "ppo_prompts_heldout.jsonl"
SCHEMA_DIR = "schemas"

TASKS = ("sql", "clickbait", "joke", "general")
SPLITS = ("train", "eval")
ROLES = ("system", "user", "assistant")
SQL_FAILURES = (
    "count_star_for_users",  # COUNT(*) where distinct users are asked for
    "missing_time_window",  # the "last N days" condition left out
    "wrong_time_window",  # a window of the wrong length or unit
    "hardcoded_dates",  # literal dates instead of NOW()/CURRENT_DATE (LLaMA-33B's answer)
    "row_per_user",  # GROUP BY user: one row per user instead of one count
    "wrong_column_or_table",  # a plausible but wrong column or table
)
FAILURES = (*SQL_FAILURES, "not_yes_no", "wrong_label", "rambling", "vague_explanation")
EVAL_FRACTION = 0.10

# Sizes (per task). SFT ~1,400 (sql 45%, clickbait 25%, joke ~8%, general ~22%).
N_SFT = {"sql": 630, "clickbait": 350, "general": 310}  # jokes: 2 explanations per training joke
N_PPO = {"sql": 160, "clickbait": 112, "joke": 24, "general": 24}
N_PPO_HELDOUT = {"sql": 32, "clickbait": 22}  # + every held-out joke and general question
N_PREF_SQL = {f: 100 for f in SQL_FAILURES} | {"rambling": 60}
N_PREF_CLICKBAIT = {"wrong_label": 180, "not_yes_no": 180, "rambling": 100}
N_PREF_GENERAL_RAMBLING = 80
SQL_SCHEMA_SHARE = {"events": 0.30, "shop": 0.175, "flights": 0.175, "sensors": 0.175, "issues": 0.175}


def train_dir() -> Path:
    """``data/train/`` (where the committed files live)."""
    return paths.data_dir() / "train"


def norm_text(text: str) -> str:
    """Lowercased, without punctuation and whitespace: the key of every disjointness check."""
    return re.sub(r"[\W_]+", "", text.lower())


# ==================================================================================================
# Training databases (fixtures). Generated with fixed seeds, independent of the build seed.
# ==================================================================================================


def _sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, datetime):
        return f"'{value:%Y-%m-%d %H:%M:%S}'"
    if isinstance(value, date):
        return f"'{value:%Y-%m-%d}'"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


@dataclass
class _Fixture:
    name: str
    description: str
    reference_time: datetime
    tables: list[tuple[str, str, list[tuple]]] = field(default_factory=list)  # (name, ddl body, rows)

    def sql(self) -> str:
        out = [
            f"-- The `{self.name}` training database of llamalab: {self.description}",
            "-- Written by llamalab.trainsets.build_schemas (fixed seed); do not edit by hand, rerun build_all().",
            f"-- reference_time: {self.reference_time:%Y-%m-%d %H:%M:%S}",
        ]
        for table, ddl, rows in self.tables:
            out.append(f"CREATE TABLE {table} (\n{ddl}\n);")
            out.append(f"INSERT INTO {table} VALUES")
            out.append(",\n".join("(" + ", ".join(_sql_literal(v) for v in row) + ")" for row in rows) + ";")
        out.append('-- The data set\'s "now": sqlbox pins NOW(), CURRENT_DATE, CURRENT_TIMESTAMP, ... to this value.')
        out.append("CREATE TABLE _meta (reference_time TIMESTAMP NOT NULL);")
        out.append(f"INSERT INTO _meta VALUES ('{self.reference_time:%Y-%m-%d %H:%M:%S}');")
        return "\n".join(out) + "\n"


FIRST_NAMES = (
    "Ana Bruno Chiara Dmitri Elif Femke Gaspard Hanna Ines Jonas Katarzyna Lars Marta Nils Olga Pablo "
    "Quentin Rosa Sven Teresa Umberto Vera Wim Xenia Yusuf Zofia"
).split()
LAST_NAMES = (
    "Almeida Berger Costa Dubois Eriksen Fischer Garcia Horvat Ivanova Janssen Kowalski Lehmann Moretti "
    "Novak Ortiz Peeters Rossi Schmidt Tomic Urban Visser Weber"
).split()

SHOP_COUNTRIES = ("Germany", "France", "Spain", "Italy", "Netherlands", "Poland")
SHOP_PRODUCTS = (
    ("Trail Map Atlas", "books", 24.90),
    ("Pocket Astronomy Guide", "books", 12.50),
    ("Night Train Stories", "books", 16.00),
    ("Castle Siege", "games", 39.99),
    ("Tile Rivers", "games", 29.50),
    ("Word Ladder Deluxe", "games", 19.99),
    ("Cast Iron Skillet", "kitchen", 45.00),
    ("Bamboo Cutting Board", "kitchen", 18.75),
    ("Pour-Over Coffee Set", "kitchen", 32.40),
    ("Chef Knife 20cm", "kitchen", 59.00),
    ("Seed Starter Tray", "garden", 11.20),
    ("Folding Pruning Saw", "garden", 27.80),
    ("Rain Barrel 200L", "garden", 74.00),
    ("Wooden Stacking Rings", "toys", 14.30),
    ("Remote Control Boat", "toys", 49.90),
    ("Marble Run Kit", "toys", 34.60),
    ("Plush Hedgehog", "toys", 9.95),
    ("Herb Scissors", "kitchen", 8.40),
)
SHOP_STATUSES = ("placed", "shipped", "delivered", "cancelled", "returned")


def _shop() -> _Fixture:
    rng = random.Random(1101)
    ref = datetime(2024, 2, 20, 15, 0, 0)
    fx = _Fixture("shop", "an online shop's customers, products and orders over 120 days.", ref)
    names = [f"{f} {last}" for f in FIRST_NAMES for last in LAST_NAMES]
    rng.shuffle(names)
    customers = []
    for cid in range(1, 41):
        if cid <= 30:
            signed = date(2023, 1, 5) + timedelta(days=rng.randrange(0, 300))
        else:  # newcomers: signed up in the last 45 days
            signed = ref.date() - timedelta(days=rng.randrange(1, 45))
        customers.append((cid, names[cid - 1], rng.choice(SHOP_COUNTRIES), signed))
    fx.tables.append((
        "customers",
        "    customer_id INTEGER PRIMARY KEY,\n    name VARCHAR NOT NULL,\n    country VARCHAR NOT NULL,\n"
        "    signed_up_on DATE NOT NULL",
        customers,
    ))
    products = [(i, n, c, p) for i, (n, c, p) in enumerate(SHOP_PRODUCTS, start=1)]
    fx.tables.append((
        "products",
        "    product_id INTEGER PRIMARY KEY,\n    name VARCHAR NOT NULL,\n    category VARCHAR NOT NULL,\n"
        "    price DECIMAL(8, 2) NOT NULL",
        products,
    ))
    buyers = [c for c in customers if c[0] not in (4, 11, 19, 27, 36)]  # five never order
    start = ref - timedelta(days=120)
    times = sorted(start + timedelta(seconds=rng.randrange(0, 120 * 86400 - 3600)) for _ in range(430))
    orders = []
    for oid, at in enumerate(times, start=1):
        candidates = [c for c in buyers if c[3] <= at.date()]
        cust = rng.choice(candidates[:8] if rng.random() < 0.3 else candidates)  # a few heavy buyers
        prod = rng.choice(products)
        age = (ref - at).days
        if age <= 2:
            status = rng.choice(("placed", "placed", "shipped", "cancelled"))
        elif age <= 7:
            status = rng.choice(("shipped", "shipped", "delivered", "cancelled", "placed"))
        else:
            status = rng.choice(("delivered",) * 7 + ("returned", "cancelled"))
        orders.append((oid, cust[0], prod[0], rng.choice((1, 1, 1, 2, 2, 3, 4)), status, at.replace(microsecond=0)))
    fx.tables.append((
        "orders",
        "    order_id INTEGER PRIMARY KEY,\n    customer_id INTEGER NOT NULL,\n    product_id INTEGER NOT NULL,\n"
        "    quantity INTEGER NOT NULL,\n    status VARCHAR NOT NULL,\n    ordered_at TIMESTAMP NOT NULL",
        orders,
    ))
    return fx


AIRPORTS = (
    ("MAD", "Madrid", "Spain"),
    ("LIS", "Lisbon", "Portugal"),
    ("CDG", "Paris", "France"),
    ("FRA", "Frankfurt", "Germany"),
    ("AMS", "Amsterdam", "Netherlands"),
    ("DUB", "Dublin", "Ireland"),
    ("FCO", "Rome", "Italy"),
    ("VIE", "Vienna", "Austria"),
)
ROUTES = (
    ("MAD", "LIS"), ("LIS", "MAD"), ("MAD", "CDG"), ("CDG", "MAD"), ("CDG", "FRA"), ("FRA", "CDG"),
    ("AMS", "DUB"), ("DUB", "AMS"), ("FCO", "VIE"), ("VIE", "FCO"), ("FRA", "FCO"), ("AMS", "LIS"),
)


def _flights() -> _Fixture:
    rng = random.Random(2202)
    ref = datetime(2023, 11, 5, 8, 0, 0)
    fx = _Fixture("flights", "airports, 30 days of flights (and 3 days scheduled ahead) and their bookings.", ref)
    fx.tables.append((
        "airports",
        "    code VARCHAR PRIMARY KEY,\n    city VARCHAR NOT NULL,\n    country VARCHAR NOT NULL",
        list(AIRPORTS),
    ))
    flights = []
    first_day = (ref - timedelta(days=30)).date()
    for r, (orig, dest) in enumerate(ROUTES):
        number = f"LL{100 + 7 * r}"
        hour = 6 + (3 * r) % 14
        day = first_day + timedelta(days=r % 2)
        while day <= ref.date() + timedelta(days=3):
            departs = datetime(day.year, day.month, day.day, hour, rng.choice((0, 15, 30, 45)))
            if departs > ref:
                status, delay = "scheduled", None
            elif rng.random() < 0.07:
                status, delay = "cancelled", None
            else:
                status, delay = "landed", rng.choice((0, 0, 0, 5, 10, 15, 20, 35, 50, 75, 120))
            flights.append([0, number, orig, dest, departs, status, delay])
            day += timedelta(days=rng.choice((1, 2, 2, 3)))
    flights.sort(key=lambda f: (f[4], f[1]))
    for i, f in enumerate(flights, start=1):
        f[0] = i
    fx.tables.append((
        "flights",
        "    flight_id INTEGER PRIMARY KEY,\n    flight_no VARCHAR NOT NULL,\n    origin VARCHAR NOT NULL,\n"
        "    destination VARCHAR NOT NULL,\n    departs_at TIMESTAMP NOT NULL,\n    status VARCHAR NOT NULL,\n"
        "    delay_minutes INTEGER",
        [tuple(f) for f in flights],
    ))
    bookings = []
    for f in flights:
        for _ in range(rng.choice((1, 2, 2, 3, 3, 4, 5))):
            pid = rng.randrange(1, 61) if rng.random() < 0.6 else rng.randrange(61, 151)
            booked = f[4] - timedelta(hours=rng.randrange(2, 24 * 25), minutes=rng.randrange(60))
            booked = min(booked, ref - timedelta(minutes=rng.randrange(5, 600)))
            bookings.append([0, f[0], pid, booked, round(rng.uniform(39, 260), 2)])
    bookings.sort(key=lambda b: (b[3], b[1]))
    for i, b in enumerate(bookings, start=1):
        b[0] = i
    fx.tables.append((
        "bookings",
        "    booking_id INTEGER PRIMARY KEY,\n    flight_id INTEGER NOT NULL,\n    passenger_id INTEGER NOT NULL,\n"
        "    booked_at TIMESTAMP NOT NULL,\n    fare DECIMAL(7, 2) NOT NULL",
        [tuple(b) for b in bookings],
    ))
    return fx


SENSOR_LOCATIONS = ("greenhouse", "cellar", "office", "server room")
SENSOR_KINDS = ("temperature", "humidity", "co2")
_SENSOR_BASE = {
    ("greenhouse", "temperature"): (26.0, 4.0), ("cellar", "temperature"): (12.0, 1.0),
    ("office", "temperature"): (22.0, 1.5), ("server room", "temperature"): (19.0, 2.5),
    ("greenhouse", "humidity"): (75.0, 8.0), ("cellar", "humidity"): (68.0, 4.0),
    ("office", "humidity"): (41.0, 5.0), ("server room", "humidity"): (33.0, 3.0),
    ("greenhouse", "co2"): (520.0, 60.0), ("cellar", "co2"): (610.0, 40.0),
    ("office", "co2"): (900.0, 250.0), ("server room", "co2"): (450.0, 30.0),
}


def _sensors() -> _Fixture:
    rng = random.Random(3303)
    ref = datetime(2024, 7, 1, 14, 30, 0)
    fx = _Fixture("sensors", "environment sensors in four rooms and four days of their readings.", ref)
    sensors = []
    for i, (loc, kind) in enumerate(((lo, k) for lo in SENSOR_LOCATIONS for k in SENSOR_KINDS), start=1):
        sensors.append((i, loc, kind, date(2023, 3, 1) + timedelta(days=rng.randrange(0, 400))))
    fx.tables.append((
        "sensors",
        "    sensor_id INTEGER PRIMARY KEY,\n    location VARCHAR NOT NULL,\n    kind VARCHAR NOT NULL,\n"
        "    installed_on DATE NOT NULL",
        sensors,
    ))
    silent_since = {5: ref - timedelta(hours=9), 10: ref - timedelta(hours=30), 8: ref - timedelta(hours=3.5)}
    readings = []
    start = ref - timedelta(days=4)
    for sid, loc, kind, _ in sensors:
        mean, spread = _SENSOR_BASE[(loc, kind)]
        t = start + timedelta(minutes=rng.randrange(0, 60))
        while t < ref:
            if t < silent_since.get(sid, ref):
                day_wave = 1 if 9 <= t.hour < 18 else -1
                value = mean + day_wave * spread * 0.5 + rng.uniform(-spread, spread)
                if rng.random() < 0.02:  # a spike
                    value += 3 * spread
                readings.append([0, sid, t, round(value, 1)])
            t += timedelta(hours=2, minutes=rng.randrange(-10, 11))
    readings.sort(key=lambda r: (r[2], r[1]))
    for i, r in enumerate(readings, start=1):
        r[0] = i
    fx.tables.append((
        "readings",
        "    reading_id INTEGER PRIMARY KEY,\n    sensor_id INTEGER NOT NULL,\n    recorded_at TIMESTAMP NOT NULL,\n"
        "    value DOUBLE NOT NULL",
        [tuple(r) for r in readings],
    ))
    return fx


REPOS = (
    (1, "tidy-cache", "Rust"),
    (2, "quillpad", "TypeScript"),
    (3, "geo-tiles", "Python"),
    (4, "loomctl", "Go"),
    (5, "pagewright", "Python"),
)
ISSUE_LABELS = ("bug", "feature", "docs", "question")
HANDLES = (
    "amrit-dev mkowal jsilva tanukiware petrahl nadia-k ozzy-b lumenfox quietbyte r2vega "
    "sabine-o hexapod toma-z wrenlab ivo-p kettlebell marguerite noor-a casparj fenwick "
    "yuki-t barnaby-r delphine-m o-okafor"
).split()


def _issues() -> _Fixture:
    rng = random.Random(4404)
    ref = datetime(2024, 4, 15, 9, 0, 0)
    fx = _Fixture("issues", "five open-source repositories, their issues and the comments on them.", ref)
    fx.tables.append((
        "repos",
        "    repo_id INTEGER PRIMARY KEY,\n    name VARCHAR NOT NULL,\n    language VARCHAR NOT NULL",
        list(REPOS),
    ))
    issues = []
    start = ref - timedelta(days=120)
    times = sorted(start + timedelta(seconds=rng.randrange(0, 120 * 86400 - 7200)) for _ in range(210))
    for iid, opened in enumerate(times, start=1):
        repo = rng.choice((1, 1, 2, 2, 2, 3, 3, 4, 5))
        author = rng.choice(HANDLES[:10]) if rng.random() < 0.5 else rng.choice(HANDLES)
        label = rng.choice(("bug", "bug", "bug", "feature", "feature", "docs", "question"))
        closed = None
        if rng.random() < 0.65:
            closed = opened + timedelta(hours=rng.randrange(1, 24 * 30), minutes=rng.randrange(60))
            if closed >= ref:
                closed = None
        issues.append((iid, repo, author, label, opened.replace(microsecond=0), closed))
    fx.tables.append((
        "issues",
        "    issue_id INTEGER PRIMARY KEY,\n    repo_id INTEGER NOT NULL,\n    author VARCHAR NOT NULL,\n"
        "    label VARCHAR NOT NULL,\n    opened_at TIMESTAMP NOT NULL,\n    closed_at TIMESTAMP",
        issues,
    ))
    comments = []
    for iid, _, _, _, opened, closed in issues:
        end = closed or ref
        for _ in range(rng.choice((0, 0, 1, 1, 2, 2, 3, 4, 6))):
            span = max(60, int((end - opened).total_seconds()) - 60)
            at = opened + timedelta(seconds=rng.randrange(60, span + 60))
            comments.append([0, iid, rng.choice(HANDLES), at])
    comments.sort(key=lambda c: (c[3], c[1]))
    for i, c in enumerate(comments, start=1):
        c[0] = i
    fx.tables.append((
        "comments",
        "    comment_id INTEGER PRIMARY KEY,\n    issue_id INTEGER NOT NULL,\n    author VARCHAR NOT NULL,\n"
        "    created_at TIMESTAMP NOT NULL",
        [tuple(c) for c in comments],
    ))
    return fx


_FIXTURES: dict[str, Callable[[], _Fixture]] = {"shop": _shop, "flights": _flights, "sensors": _sensors, "issues": _issues}
TRAIN_SCHEMAS = tuple(_FIXTURES)
SQL_SCHEMAS = ("events", *TRAIN_SCHEMAS)
EXCLUDED_SCHEMAS = ("library",)  # the probe's unseen-schema split: never in training data
EXCLUDED_TABLES = ("books", "members", "loans")


def build_schemas(out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``schemas/<name>.sql`` for every training-only database; return ``{name: path}``."""
    out = Path(out_dir) if out_dir is not None else train_dir()
    written = {}
    for name, make in _FIXTURES.items():
        path = out / SCHEMA_DIR / f"{name}.sql"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(make().sql(), encoding="utf-8")
        tmp.replace(path)
        written[name] = path
    return written


def schema_path(name: str, schema_dir: str | Path | None = None) -> Path:
    """The setup ``.sql`` file of a training schema: ``events`` is the probe's own database, the
    others live in ``data/train/schemas/`` (or ``schema_dir``)."""
    if name == "events":
        return paths.data_dir() / "probes" / "sql" / "events.sql"
    if name not in _FIXTURES:
        raise ValueError(f"unknown training schema {name!r}; known: {list(SQL_SCHEMAS)}")
    base = Path(schema_dir) if schema_dir is not None else train_dir() / SCHEMA_DIR
    return base / f"{name}.sql"


# ==================================================================================================
# Text-to-SQL: question families over the training schemas (gold query + wrong variants).
# ==================================================================================================


@dataclass(frozen=True)
class _Win:
    """A time window relative to "now": its phrasings, its interval and a plausible wrong one."""

    n: int
    unit: str  # DAY | HOUR
    phrases: tuple[str, ...]
    wrong: str  # interval text of a window of the wrong length or unit

    @property
    def interval(self) -> str:
        return f"INTERVAL {self.n} {self.unit}"

    @property
    def delta(self) -> timedelta:
        return timedelta(days=self.n) if self.unit == "DAY" else timedelta(hours=self.n)


W = {
    "2d": _Win(2, "DAY", ("the last 2 days", "the past two days"), "INTERVAL 2 HOUR"),
    "3d": _Win(3, "DAY", ("the last 3 days", "the past three days"), "INTERVAL 3 HOUR"),
    "5d": _Win(5, "DAY", ("the last 5 days", "the past five days"), "INTERVAL 5 HOUR"),
    "7d": _Win(7, "DAY", ("the last 7 days", "the past week"), "INTERVAL 1 DAY"),
    "10d": _Win(10, "DAY", ("the last 10 days", "the past ten days"), "INTERVAL 10 HOUR"),
    "14d": _Win(14, "DAY", ("the last two weeks", "the past 14 days"), "INTERVAL 1 WEEK"),
    "21d": _Win(21, "DAY", ("the last three weeks", "the past 21 days"), "INTERVAL 3 DAY"),
    "30d": _Win(30, "DAY", ("the last 30 days", "the past thirty days"), "INTERVAL 3 DAY"),
    "60d": _Win(60, "DAY", ("the last 60 days", "the past two months"), "INTERVAL 6 DAY"),
    "6h": _Win(6, "HOUR", ("the last 6 hours", "the past six hours"), "INTERVAL 6 MINUTE"),
    "12h": _Win(12, "HOUR", ("the last 12 hours", "the past twelve hours"), "INTERVAL 12 DAY"),
    "24h": _Win(24, "HOUR", ("the last 24 hours", "the past day"), "INTERVAL 2 HOUR"),
    "48h": _Win(48, "HOUR", ("the last 48 hours", "the past two days"), "INTERVAL 4 HOUR"),
}
REFERENCE_TIMES = {
    "events": datetime(2023, 3, 10, 12, 0, 0),
    "shop": datetime(2024, 2, 20, 15, 0, 0),
    "flights": datetime(2023, 11, 5, 8, 0, 0),
    "sensors": datetime(2024, 7, 1, 14, 30, 0),
    "issues": datetime(2024, 4, 15, 9, 0, 0),
}


@dataclass
class _Case:
    schema: str
    family: str
    question: str
    gold: str
    rejected: dict[str, str] = field(default_factory=dict)


def _select(select: str, frm: str, conds: Iterable[str | None], tail: str = "") -> str:
    conds = [c for c in conds if c]
    sql = f"SELECT {select} FROM {frm}"
    if conds:
        sql += " WHERE " + " AND ".join(conds)
    return sql + (f" {tail}" if tail else "")


def _times(col: str, win: _Win, ref: datetime, rng: random.Random, *, upper: bool = False,
           as_date: bool = False) -> dict[str, str | None]:
    """The gold window condition on ``col`` and its three wrong variants (None: left out)."""
    now = "CURRENT_DATE" if as_date else "NOW()"
    up = f" AND {col} <= {now}" if upper else ""
    shift = rng.choice((1, 1, 2, 10))
    end = ref.replace(year=ref.year - shift) if shift < 10 else datetime(2013, 8, 21)
    begin = end - win.delta
    if win.unit == "DAY":
        begin, end = begin.replace(hour=0, minute=0, second=0), end.replace(hour=0, minute=0, second=0)
    if as_date:
        hard = f"{col} BETWEEN DATE '{begin:%Y-%m-%d}' AND DATE '{end:%Y-%m-%d}'"
    else:
        hard = f"{col} BETWEEN TIMESTAMP '{begin:%Y-%m-%d %H:%M:%S}' AND TIMESTAMP '{end:%Y-%m-%d %H:%M:%S}'"
    return {
        "gold": f"{col} >= {now} - {win.interval}{up}",
        "missing_time_window": None,
        "wrong_time_window": f"{col} >= {now} - {win.wrong}{up}",
        "hardcoded_dates": hard,
    }


def _make(schema: str, family: str, question: str, select: str, frm: str, conds: list[str | None],
          tail: str = "", *, times: dict[str, str | None] | None = None, user: str | None = None,
          wrong: str | None = None, failures: Iterable[str] | None = None) -> _Case:
    """One question: the gold query and the failure variants that apply.

    ``times``: from :func:`_times`, ANDed to ``conds``; ``user``: the column whose distinct values
    are counted (``select`` is ``COUNT(DISTINCT user)``); ``wrong``: a full wrong-column query.
    """
    t = times or {}
    gold = _select(select, frm, [*conds, t.get("gold")], tail)
    rej: dict[str, str] = {}
    if times:
        for f in ("missing_time_window", "wrong_time_window", "hardcoded_dates"):
            rej[f] = _select(select, frm, [*conds, t[f]], tail)
    if user:
        rej["count_star_for_users"] = _select(
            select.replace(f"COUNT(DISTINCT {user})", "COUNT(*)"), frm, [*conds, t.get("gold")], tail
        )
        rej["row_per_user"] = _select(
            f"{user}, COUNT(*) AS total", frm, [*conds, t.get("gold")], f"GROUP BY {user}"
        )
    if wrong:
        rej["wrong_column_or_table"] = wrong
    if failures is not None:
        rej = {k: v for k, v in rej.items() if k in set(failures)}
    return _Case(schema, family, question, gold, rej)


def _pick(rng: random.Random, options: Iterable[str]) -> str:
    options = list(options)
    return options[rng.randrange(len(options))]


EVENT_METHODS = ("Search", "GetProfile", "Login", "Logout", "ListOrders", "PlaceOrder", "UpdateProfile", "ResetPassword")
EVENT_USERS = (3, 9, 15, 21, 26, 33, 38, 44, 49)  # the probe asks about users 7 and 12
# (question family, method, window) combinations the probe asks: never generated.
_PROBE_INTENTS = {("users", "Login", "7d"), ("users", "PlaceOrder", "14d"), ("users", "ResetPassword", "30d"),
                  ("per_day", "Login", "7d"), ("calls", "Login", "7d")}


def _events(rng: random.Random) -> list[_Case]:
    ref, S = REFERENCE_TIMES["events"], "events"
    out: list[_Case] = []
    wins = ("2d", "3d", "5d", "7d", "10d", "14d", "21d", "30d", "6h", "12h", "48h")
    for m in EVENT_METHODS:
        for wk in wins:
            w = W[wk]
            ph = _pick(rng, w.phrases)
            if ("users", m, wk) not in _PROBE_INTENTS:
                q = _pick(rng, (
                    f'count the distinct users who issued a "{m}" request in {ph}.',
                    f'find how many different users called "{m}" during {ph}.',
                    f'count how many users made at least one "{m}" request within {ph}.',
                ))
                out.append(_make(S, "users", q, "COUNT(DISTINCT user_id)", "events", [f"rpc_method = '{m}'"],
                                 times=_times("timestamp", w, ref, rng), user="user_id"))
            if ("calls", m, wk) in _PROBE_INTENTS:
                continue
            q = _pick(rng, (
                f'count how many "{m}" requests were issued in {ph}.',
                f'count the "{m}" calls made during {ph}.',
            ))
            out.append(_make(S, "calls", q, "COUNT(*)", "events", [f"rpc_method = '{m}'"],
                             times=_times("timestamp", w, ref, rng)))
        for month, lo, hi in (("February 2023", "2023-02-01", "2023-03-01"),
                              ("the first week of March 2023", "2023-03-01", "2023-03-08"),
                              ("the second half of February 2023", "2023-02-15", "2023-03-01")):
            q = f'count the different users who issued "{m}" in {month}.'
            conds = [f"rpc_method = '{m}'", f"timestamp >= TIMESTAMP '{lo} 00:00:00'",
                     f"timestamp < TIMESTAMP '{hi} 00:00:00'"]
            out.append(_make(S, "users_month", q, "COUNT(DISTINCT user_id)", "events", conds, user="user_id"))
    for u in EVENT_USERS:
        for wk in ("3d", "7d", "14d", "30d"):
            w = W[wk]
            ph = _pick(rng, w.phrases)
            q = _pick(rng, (f"count how many requests user {u} issued in {ph}.",
                            f"count the requests sent by user {u} during {ph}."))
            out.append(_make(S, "user_calls", q, "COUNT(*)", "events", [f"user_id = {u}"],
                             times=_times("timestamp", w, ref, rng),
                             wrong=_select("COUNT(*)", "events", [f"event_id = {u}", f"timestamp >= NOW() - {w.interval}"])))
            q = f"count the requests of user {u} for each rpc method over {ph}."
            out.append(_make(S, "user_methods", q, "rpc_method, COUNT(*) AS n", "events", [f"user_id = {u}"],
                             "GROUP BY rpc_method", times=_times("timestamp", w, ref, rng),
                             failures=("missing_time_window", "wrong_time_window")))
        for m in EVENT_METHODS:
            q = _pick(rng, (f'find when user {u} last issued a "{m}" request.',
                            f'find the time of the most recent "{m}" request of user {u}.'))
            out.append(_make(S, "user_last", q, "MAX(timestamp)", "events", [f"user_id = {u}", f"rpc_method = '{m}'"],
                             wrong=_select("MAX(timestamp)", "events", [f"event_id = {u}", f"rpc_method = '{m}'"])))
        q = f"list the different rpc methods that user {u} has called, in alphabetical order."
        out.append(_make(S, "user_method_list", q, "DISTINCT rpc_method", "events", [f"user_id = {u}"],
                         "ORDER BY rpc_method",
                         wrong=_select("DISTINCT rpc_method", "events", [f"event_id = {u}"], "ORDER BY rpc_method")))
    for m in EVENT_METHODS:
        for k in (2, 3, 4):
            q = f'list the users who issued more than {k} "{m}" requests, with their number of such requests.'
            out.append(_make(S, "heavy", q, "user_id, COUNT(*) AS n", "events", [f"rpc_method = '{m}'"],
                             f"GROUP BY user_id HAVING COUNT(*) > {k}"))
        for wk in ("5d", "7d", "10d"):
            if ("per_day", m, wk) in _PROBE_INTENTS:
                continue
            w = W[wk]
            q = f'count the "{m}" requests on each day of {_pick(rng, w.phrases)}, in date order.'
            out.append(_make(S, "per_day", q, "CAST(timestamp AS DATE) AS day, COUNT(*) AS n", "events",
                             [f"rpc_method = '{m}'"], "GROUP BY day ORDER BY day",
                             times=_times("timestamp", w, ref, rng), failures=("missing_time_window", "wrong_time_window")))
        for wk in ("3d", "14d", "30d"):
            w = W[wk]
            q = f'list the 3 users who issued the most "{m}" requests over {_pick(rng, w.phrases)}, with their counts, most first.'
            out.append(_make(S, "top_users", q, "user_id, COUNT(*) AS n", "events", [f"rpc_method = '{m}'"],
                             "GROUP BY user_id ORDER BY n DESC LIMIT 3", times=_times("timestamp", w, ref, rng),
                             failures=("missing_time_window",)))
            q = f'compute the percentage of all users who issued a "{m}" request in {_pick(rng, w.phrases)}.'
            cond = f"rpc_method = '{m}' AND timestamp >= NOW() - {w.interval}"
            out.append(_Case(S, "user_share", q,
                             f"SELECT 100.0 * COUNT(DISTINCT user_id) FILTER (WHERE {cond}) / COUNT(DISTINCT user_id) FROM events",
                             {"count_star_for_users":
                              f"SELECT 100.0 * COUNT(*) FILTER (WHERE {cond}) / COUNT(DISTINCT user_id) FROM events",
                              "missing_time_window":
                              f"SELECT 100.0 * COUNT(DISTINCT user_id) FILTER (WHERE rpc_method = '{m}') / COUNT(DISTINCT user_id) FROM events"}))
        for m2 in EVENT_METHODS:
            if m2 == m or (m, m2) == ("PlaceOrder", "Login"):
                continue
            q = f'count how many users issued a "{m}" request but never a "{m2}" request.'
            gold = (f"SELECT COUNT(DISTINCT user_id) FROM events WHERE rpc_method = '{m}' AND user_id NOT IN "
                    f"(SELECT user_id FROM events WHERE rpc_method = '{m2}')")
            out.append(_Case(S, "anti", q, gold, {"count_star_for_users": gold.replace("COUNT(DISTINCT user_id)", "COUNT(*)", 1)}))
    for wk in ("7d", "14d", "30d", "48h"):
        w = W[wk]
        q = f"count the different users of each rpc method over {_pick(rng, w.phrases)}."
        t = _times("timestamp", w, ref, rng)
        out.append(_make(S, "method_users", q, "rpc_method, COUNT(DISTINCT user_id) AS users", "events", [],
                         "GROUP BY rpc_method", times=t, failures=("missing_time_window", "wrong_time_window")))
        out[-1].rejected["count_star_for_users"] = _select("rpc_method, COUNT(*) AS users", "events", [t["gold"]], "GROUP BY rpc_method")
    for h1, h2, what in ((0, 6, "between midnight and 6 am"), (18, 24, "between 6 pm and midnight"),
                         (9, 12, "between 9 am and noon")):
        for m in EVENT_METHODS:
            q = f'count how many "{m}" requests were issued {what} (on any day).'
            out.append(_Case(S, "hour", q, f"SELECT COUNT(*) FROM events WHERE rpc_method = '{m}' AND "
                             f"EXTRACT(HOUR FROM timestamp) >= {h1} AND EXTRACT(HOUR FROM timestamp) < {h2}"))
    return out


def _shop_cases(rng: random.Random) -> list[_Case]:
    ref, S = REFERENCE_TIMES["shop"], "shop"
    out: list[_Case] = []
    join = "orders AS o JOIN products AS p ON p.product_id = o.product_id"
    cats = sorted({c for _, c, _ in SHOP_PRODUCTS})
    for wk in ("3d", "5d", "7d", "10d", "14d", "21d", "30d", "60d"):
        w = W[wk]
        ph = _pick(rng, w.phrases)
        for name, _, _ in SHOP_PRODUCTS[:: 3 if w.n > 5 else 6]:
            q = f'count how many units of "{name}" were sold in {_pick(rng, w.phrases)}.'
            out.append(_make(S, "units", q, "SUM(o.quantity)", join, [f"p.name = '{name}'"],
                             times=_times("o.ordered_at", w, ref, rng),
                             wrong=_select("COUNT(*)", join, [f"p.name = '{name}'", f"o.ordered_at >= NOW() - {w.interval}"])))
            q = f'list the names of the customers who ordered "{name}" in {_pick(rng, w.phrases)}, alphabetically.'
            out.append(_Case(S, "buyers", q, "SELECT DISTINCT c.name FROM orders AS o JOIN products AS p ON p.product_id = "
                             "o.product_id JOIN customers AS c ON c.customer_id = o.customer_id WHERE "
                             f"p.name = '{name}' AND o.ordered_at >= NOW() - {w.interval} ORDER BY c.name"))
        q = _pick(rng, (f"count how many different customers placed an order in {ph}.",
                        f"count the distinct customers who ordered anything during {ph}."))
        out.append(_make(S, "customers", q, "COUNT(DISTINCT customer_id)", "orders", [],
                         times=_times("ordered_at", w, ref, rng), user="customer_id"))
        for c in cats:
            q = _pick(rng, (f"count the distinct customers who ordered a {c} product during {_pick(rng, w.phrases)}.",
                            f"find how many different customers bought from the {c} category in {_pick(rng, w.phrases)}."))
            out.append(_make(S, "customers_cat", q, "COUNT(DISTINCT o.customer_id)", join, [f"p.category = '{c}'"],
                             times=_times("o.ordered_at", w, ref, rng), user="o.customer_id"))
        for s in SHOP_STATUSES:
            q = f"count the orders placed in {_pick(rng, w.phrases)} whose status is now '{s}'."
            out.append(_make(S, "status", q, "COUNT(*)", "orders", [f"status = '{s}'"],
                             times=_times("ordered_at", w, ref, rng)))
        q = f"compute the revenue (quantity times price) of each product category over {_pick(rng, w.phrases)}."
        out.append(_make(S, "revenue", q, "p.category, SUM(o.quantity * p.price) AS revenue", join, [],
                         "GROUP BY p.category", times=_times("o.ordered_at", w, ref, rng),
                         wrong=_select("p.category, SUM(p.price) AS revenue", join, [f"o.ordered_at >= NOW() - {w.interval}"],
                                       "GROUP BY p.category"),
                         failures=("missing_time_window", "wrong_column_or_table")))
        for k in (3, 5):
            q = f"list the {k} best-selling products by units sold over {_pick(rng, w.phrases)}, with the units, best first."
            out.append(_make(S, "top_products", q, "p.name, SUM(o.quantity) AS units", join, [],
                             f"GROUP BY p.name ORDER BY units DESC LIMIT {k}", times=_times("o.ordered_at", w, ref, rng),
                             wrong=_select("p.name, COUNT(*) AS units", join, [f"o.ordered_at >= NOW() - {w.interval}"],
                                           f"GROUP BY p.name ORDER BY units DESC LIMIT {k}"),
                             failures=("missing_time_window", "wrong_column_or_table")))
        q = f"count, for each country, how many different customers ordered in {_pick(rng, w.phrases)}."
        t = _times("o.ordered_at", w, ref, rng)
        cjoin = "orders AS o JOIN customers AS c ON c.customer_id = o.customer_id"
        out.append(_make(S, "country_customers", q, "c.country, COUNT(DISTINCT o.customer_id) AS customers", cjoin, [],
                         "GROUP BY c.country", times=t, failures=("missing_time_window",)))
        out[-1].rejected["count_star_for_users"] = _select("c.country, COUNT(*) AS customers", cjoin, [t["gold"]],
                                                           "GROUP BY c.country")
        q = f"count the orders placed on each day of {_pick(rng, w.phrases)}, in date order."
        if w.n <= 10:
            out.append(_make(S, "per_day", q, "CAST(ordered_at AS DATE) AS day, COUNT(*) AS n", "orders", [],
                             "GROUP BY day ORDER BY day", times=_times("ordered_at", w, ref, rng),
                             failures=("missing_time_window", "wrong_time_window")))
        q = f"compute the percentage of the orders placed in {_pick(rng, w.phrases)} that were cancelled."
        cond = f"ordered_at >= NOW() - {w.interval}"
        out.append(_Case(S, "cancel_share", q,
                         f"SELECT 100.0 * COUNT(*) FILTER (WHERE status = 'cancelled') / COUNT(*) FROM orders WHERE {cond}",
                         {"missing_time_window": "SELECT 100.0 * COUNT(*) FILTER (WHERE status = 'cancelled') / COUNT(*) FROM orders"}))
    for wk in ("14d", "30d", "60d"):
        w = W[wk]
        q = f"count the customers who signed up in {_pick(rng, w.phrases)} and have placed at least one order."
        cj = "customers AS c JOIN orders AS o ON o.customer_id = c.customer_id"
        t = _times("c.signed_up_on", w, ref, rng, as_date=True)
        out.append(_make(S, "new_buyers", q, "COUNT(DISTINCT c.customer_id)", cj, [], times=t,
                         wrong=_select("COUNT(DISTINCT c.customer_id)", cj, [f"o.ordered_at >= CURRENT_DATE - {w.interval}"]),
                         failures=("missing_time_window", "wrong_time_window", "hardcoded_dates", "wrong_column_or_table")))
        out[-1].rejected["count_star_for_users"] = _select("COUNT(*)", cj, [t["gold"]])
        q = f"list the names of the customers who signed up in {_pick(rng, w.phrases)}, alphabetically."
        out.append(_make(S, "new_customers", q, "name", "customers", [], "ORDER BY name",
                         times=_times("signed_up_on", w, ref, rng, as_date=True)))
    for country in SHOP_COUNTRIES:
        q = _pick(rng, (f"count how many customers come from {country}.", f"count the customers based in {country}."))
        out.append(_make(S, "country", q, "COUNT(*)", "customers", [f"country = '{country}'"],
                         wrong=_select("COUNT(*)", "customers", [f"name = '{country}'"])))
        q = f"list the names of the customers from {country} who have never placed an order."
        gold = _select("name", "customers", [f"country = '{country}'",
                                              "customer_id NOT IN (SELECT customer_id FROM orders)"])
        out.append(_Case(S, "never_country", q, gold, {"wrong_column_or_table": gold.replace(
            "SELECT customer_id FROM orders", "SELECT product_id FROM orders")}))
        q = f"compute the total amount spent (quantity times price) by customers from {country}."
        out.append(_Case(S, "country_spend", q,
                         "SELECT SUM(o.quantity * p.price) FROM orders AS o JOIN products AS p ON p.product_id = o.product_id "
                         f"JOIN customers AS c ON c.customer_id = o.customer_id WHERE c.country = '{country}'"))
    q = "list the names of the customers who have never placed an order, alphabetically."
    gold = "SELECT name FROM customers WHERE customer_id NOT IN (SELECT customer_id FROM orders) ORDER BY name"
    out.append(_Case(S, "never", q, gold, {"wrong_column_or_table": gold.replace("SELECT customer_id FROM orders",
                                                                               "SELECT order_id FROM orders")}))
    for c in cats:
        out.append(_Case(S, "avg_qty", f"compute the average quantity per order for {c} products.",
                         f"SELECT AVG(o.quantity) FROM {join} WHERE p.category = '{c}'",
                         {"wrong_column_or_table": f"SELECT AVG(p.price) FROM {join} WHERE p.category = '{c}'"}))
        out.append(_Case(S, "priciest", f"find the most expensive {c} product and its price.",
                         f"SELECT name, price FROM products WHERE category = '{c}' ORDER BY price DESC LIMIT 1"))
        out.append(_Case(S, "cat_count", f"count how many products are in the {c} category.",
                         f"SELECT COUNT(*) FROM products WHERE category = '{c}'"))
    for k in (10, 15, 20):
        q = f"list the customers with more than {k} orders, with their number of orders."
        out.append(_Case(S, "heavy", q, "SELECT c.name, COUNT(*) AS n FROM orders AS o JOIN customers AS c ON "
                         f"c.customer_id = o.customer_id GROUP BY c.name HAVING COUNT(*) > {k}"))
    for s in SHOP_STATUSES:
        q = f"count the orders in status '{s}' for each product category."
        out.append(_Case(S, "status_cat", q, f"SELECT p.category, COUNT(*) AS n FROM {join} WHERE o.status = '{s}' GROUP BY p.category"))
    return out


def _flight_cases(rng: random.Random) -> list[_Case]:
    ref, S = REFERENCE_TIMES["flights"], "flights"
    out: list[_Case] = []
    cities = [c for _, c, _ in AIRPORTS]
    fb = "bookings AS b JOIN flights AS f ON f.flight_id = b.flight_id"
    for wk in ("3d", "7d", "14d", "30d", "48h"):
        w = W[wk]
        for city in cities:
            q = _pick(rng, (f"count the distinct passengers booked on flights that left {city} in {_pick(rng, w.phrases)}.",
                            f"find how many different passengers flew out of {city} during {_pick(rng, w.phrases)}."))
            frm = fb + " JOIN airports AS a ON a.code = f.origin"
            out.append(_make(S, "passengers", q, "COUNT(DISTINCT b.passenger_id)", frm,
                             [f"a.city = '{city}'", "f.status = 'landed'"],
                             times=_times("f.departs_at", w, ref, rng, upper=True), user="b.passenger_id"))
            q = f"count the flights from {city} that were cancelled in {_pick(rng, w.phrases)}."
            frm = "flights AS f JOIN airports AS a ON a.code = f.origin"
            out.append(_make(S, "cancelled_city", q, "COUNT(*)", frm, [f"a.city = '{city}'", "f.status = 'cancelled'"],
                             times=_times("f.departs_at", w, ref, rng, upper=True),
                             wrong=_select("COUNT(*)", "flights AS f JOIN airports AS a ON a.code = f.destination",
                                           [f"a.city = '{city}'", "f.status = 'cancelled'",
                                            f"f.departs_at >= NOW() - {w.interval}", "f.departs_at <= NOW()"])))
        q = f"count how many flights were cancelled in {_pick(rng, w.phrases)}."
        out.append(_make(S, "cancelled", q, "COUNT(*)", "flights", ["status = 'cancelled'"],
                         times=_times("departs_at", w, ref, rng, upper=True)))
        for k in (15, 30, 60):
            q = f"count the flights delayed by more than {k} minutes in {_pick(rng, w.phrases)}."
            out.append(_make(S, "delayed", q, "COUNT(*)", "flights", [f"delay_minutes > {k}"],
                             times=_times("departs_at", w, ref, rng, upper=True)))
        q = _pick(rng, (f"count how many bookings were made in {_pick(rng, w.phrases)}.",
                        f"count the bookings created during {_pick(rng, w.phrases)}."))
        out.append(_make(S, "bookings", q, "COUNT(*)", "bookings", [], times=_times("booked_at", w, ref, rng),
                         wrong=_select("COUNT(*)", fb, [f"f.departs_at >= NOW() - {w.interval}"])))
        q = f"compute the total fare of the bookings for flights to each destination city that departed in {_pick(rng, w.phrases)}."
        frm = fb + " JOIN airports AS a ON a.code = f.destination"
        out.append(_make(S, "fare_city", q, "a.city, SUM(b.fare) AS total", frm, [], "GROUP BY a.city",
                         times=_times("f.departs_at", w, ref, rng, upper=True), failures=("missing_time_window",)))
        q = f"count, for each destination city, the different passengers who flew there in {_pick(rng, w.phrases)}."
        t = _times("f.departs_at", w, ref, rng, upper=True)
        out.append(_make(S, "dest_passengers", q, "a.city, COUNT(DISTINCT b.passenger_id) AS passengers", frm,
                         ["f.status = 'landed'"], "GROUP BY a.city", times=t, failures=("missing_time_window",)))
        out[-1].rejected["count_star_for_users"] = _select("a.city, COUNT(*) AS passengers", frm,
                                                           ["f.status = 'landed'", t["gold"]], "GROUP BY a.city")
    for city in cities:
        frm = "flights AS f JOIN airports AS a ON a.code = f.origin"
        q = f"compute the average delay in minutes of the landed flights from {city}."
        out.append(_Case(S, "avg_delay", q, _select("AVG(f.delay_minutes)", frm, [f"a.city = '{city}'", "f.status = 'landed'"]),
                         {"wrong_column_or_table": _select("AVG(f.delay_minutes)", "flights AS f JOIN airports AS a ON a.code = f.destination",
                                                           [f"a.city = '{city}'", "f.status = 'landed'"])}))
        q = f"find the flight number and departure time of the next scheduled flight from {city}."
        out.append(_make(S, "next", q, "f.flight_no, f.departs_at", frm, [f"a.city = '{city}'"], "ORDER BY f.departs_at LIMIT 1",
                         times={"gold": "f.departs_at > NOW()", "missing_time_window": None,
                                "wrong_time_window": "f.departs_at > NOW() - INTERVAL 1 DAY", "hardcoded_dates":
                                "f.departs_at > TIMESTAMP '2022-11-05 00:00:00'"}))
        q = f"list the flight numbers that fly from {city}, alphabetically."
        out.append(_Case(S, "numbers", q, _select("DISTINCT f.flight_no", frm, [f"a.city = '{city}'"], "ORDER BY f.flight_no")))
    for k in (6, 8, 10):
        q = f"list the passengers with more than {k} bookings, with their number of bookings."
        out.append(_Case(S, "frequent", q, f"SELECT passenger_id, COUNT(*) AS n FROM bookings GROUP BY passenger_id HAVING COUNT(*) > {k}"))
    for o, d in ROUTES:
        oc = dict((a, c) for a, c, _ in AIRPORTS)
        q = f"count the flights from {oc[o]} to {oc[d]} in each status."
        out.append(_Case(S, "route_status", q, f"SELECT status, COUNT(*) AS n FROM flights WHERE origin = '{o}' AND "
                         f"destination = '{d}' GROUP BY status",
                         {"wrong_column_or_table": f"SELECT status, COUNT(*) AS n FROM flights WHERE origin = '{d}' AND "
                          f"destination = '{o}' GROUP BY status"}))
        q = f"compute the average fare of the bookings on flights from {oc[o]} to {oc[d]}."
        out.append(_Case(S, "route_fare", q, f"SELECT AVG(b.fare) FROM {fb} WHERE f.origin = '{o}' AND f.destination = '{d}'"))
    out.append(_Case(S, "busiest", "find the route (origin and destination) with the most bookings, and its number of bookings.",
                     f"SELECT f.origin, f.destination, COUNT(*) AS n FROM {fb} GROUP BY f.origin, f.destination ORDER BY n DESC LIMIT 1"))
    return out


def _sensor_cases(rng: random.Random) -> list[_Case]:
    ref, S = REFERENCE_TIMES["sensors"], "sensors"
    out: list[_Case] = []
    rs = "readings AS r JOIN sensors AS s ON s.sensor_id = r.sensor_id"
    thresholds = {"temperature": (20, 25, 30), "humidity": (50, 70), "co2": (600, 1000)}
    for wk in ("6h", "12h", "24h", "48h", "3d"):
        w = W[wk]
        for loc in SENSOR_LOCATIONS:
            for kind in SENSOR_KINDS:
                q = _pick(rng, (f"compute the average {kind} in the {loc} over {_pick(rng, w.phrases)}.",
                                f"find the mean {kind} reading of the {loc} during {_pick(rng, w.phrases)}."))
                out.append(_make(S, "avg", q, "AVG(r.value)", rs, [f"s.location = '{loc}'", f"s.kind = '{kind}'"],
                                 times=_times("r.recorded_at", w, ref, rng),
                                 wrong=_select("AVG(r.value)", rs, [f"s.location = '{loc}'", f"s.kind = '{kind}'",
                                                                    f"s.installed_on >= CURRENT_DATE - {w.interval}"])))
        for kind, ts in thresholds.items():
            for t in ts:
                q = f"count how many {kind} sensors reported a value above {t} in {_pick(rng, w.phrases)}."
                out.append(_make(S, "above", q, "COUNT(DISTINCT r.sensor_id)", rs, [f"s.kind = '{kind}'", f"r.value > {t}"],
                                 times=_times("r.recorded_at", w, ref, rng), user="r.sensor_id"))
            q = f"find the highest {kind} reading of each location over {_pick(rng, w.phrases)}."
            out.append(_make(S, "max_loc", q, "s.location, MAX(r.value) AS highest", rs, [f"s.kind = '{kind}'"],
                             "GROUP BY s.location", times=_times("r.recorded_at", w, ref, rng),
                             failures=("missing_time_window", "wrong_time_window")))
        q = f"list the ids and locations of the sensors that sent no reading in {_pick(rng, w.phrases)}."
        gold = ("SELECT s.sensor_id, s.location FROM sensors AS s WHERE NOT EXISTS (SELECT 1 FROM readings AS r "
                f"WHERE r.sensor_id = s.sensor_id AND r.recorded_at >= NOW() - {w.interval})")
        out.append(_Case(S, "silent", q, gold, {"wrong_time_window": gold.replace(w.interval, w.wrong),
                                                "missing_time_window": gold.replace(f" AND r.recorded_at >= NOW() - {w.interval}", "")}))
        q = f"count the readings each sensor sent in {_pick(rng, w.phrases)}."
        out.append(_make(S, "per_sensor", q, "sensor_id, COUNT(*) AS n", "readings", [], "GROUP BY sensor_id",
                         times=_times("recorded_at", w, ref, rng), failures=("missing_time_window", "wrong_time_window")))
    for loc in SENSOR_LOCATIONS:
        q = f"find the time of the latest reading of each sensor in the {loc}."
        out.append(_Case(S, "latest", q, f"SELECT r.sensor_id, MAX(r.recorded_at) AS latest FROM {rs} WHERE s.location = '{loc}' GROUP BY r.sensor_id",
                         {"wrong_column_or_table": f"SELECT r.sensor_id, MAX(s.installed_on) AS latest FROM {rs} WHERE s.location = '{loc}' GROUP BY r.sensor_id"}))
        for kind in SENSOR_KINDS:
            q = f"find the lowest and highest {kind} ever recorded in the {loc}."
            out.append(_Case(S, "minmax", q, f"SELECT MIN(r.value), MAX(r.value) FROM {rs} WHERE s.location = '{loc}' AND s.kind = '{kind}'"))
    for sid in range(1, 13):
        q = f"count the readings of sensor {sid} on each day, in date order."
        out.append(_Case(S, "daily", q, f"SELECT CAST(recorded_at AS DATE) AS day, COUNT(*) AS n FROM readings WHERE sensor_id = {sid} GROUP BY day ORDER BY day",
                         {"wrong_column_or_table": f"SELECT CAST(recorded_at AS DATE) AS day, COUNT(*) AS n FROM readings WHERE reading_id = {sid} GROUP BY day ORDER BY day"}))
    for d in ("2023-06-01", "2023-09-01", "2024-01-01"):
        when = datetime.strptime(d, "%Y-%m-%d")
        q = f"count the sensors installed before {when:%B} {when.day}, {when.year}."
        out.append(_Case(S, "installed", q, f"SELECT COUNT(*) FROM sensors WHERE installed_on < DATE '{d}'"))
    return out


def _issue_cases(rng: random.Random) -> list[_Case]:
    ref, S = REFERENCE_TIMES["issues"], "issues"
    out: list[_Case] = []
    ir = "issues AS i JOIN repos AS r ON r.repo_id = i.repo_id"
    cir = "comments AS c JOIN issues AS i ON i.issue_id = c.issue_id JOIN repos AS r ON r.repo_id = i.repo_id"
    for wk in ("3d", "7d", "14d", "21d", "30d", "60d"):
        w = W[wk]
        for author in HANDLES[:10:2] if w.n >= 14 else ():
            q = f"count the comments that {author} wrote in {_pick(rng, w.phrases)}."
            out.append(_make(S, "author_comments", q, "COUNT(*)", "comments", [f"author = '{author}'"],
                             times=_times("created_at", w, ref, rng)))
        for _, repo, _ in REPOS:
            q = f"count the comments written on {repo} issues in {_pick(rng, w.phrases)}."
            out.append(_make(S, "repo_comments", q, "COUNT(*)", cir, [f"r.name = '{repo}'"],
                             times=_times("c.created_at", w, ref, rng),
                             wrong=_select("COUNT(*)", cir, [f"r.name = '{repo}'", f"i.opened_at >= NOW() - {w.interval}"])))
            q = _pick(rng, (f"count the different people who opened an issue in {repo} over {_pick(rng, w.phrases)}.",
                            f"find how many distinct authors opened {repo} issues during {_pick(rng, w.phrases)}."))
            out.append(_make(S, "authors", q, "COUNT(DISTINCT i.author)", ir, [f"r.name = '{repo}'"],
                             times=_times("i.opened_at", w, ref, rng), user="i.author"))
            q = f"count the distinct users who commented on {repo} issues in {_pick(rng, w.phrases)}."
            out.append(_make(S, "commenters", q, "COUNT(DISTINCT c.author)", cir, [f"r.name = '{repo}'"],
                             times=_times("c.created_at", w, ref, rng), user="c.author"))
        q = _pick(rng, (f"count how many issues were closed in {_pick(rng, w.phrases)}.",
                        f"count the issues closed during {_pick(rng, w.phrases)}."))
        out.append(_make(S, "closed", q, "COUNT(*)", "issues", [], times=_times("closed_at", w, ref, rng),
                         wrong=_select("COUNT(*)", "issues", [f"opened_at >= NOW() - {w.interval}"])))
        for label in ISSUE_LABELS:
            q = f"count the {label} issues opened in {_pick(rng, w.phrases)}."
            out.append(_make(S, "opened_label", q, "COUNT(*)", "issues", [f"label = '{label}'"],
                             times=_times("opened_at", w, ref, rng),
                             wrong=_select("COUNT(*)", "issues", [f"label = '{label}'", f"closed_at >= NOW() - {w.interval}"])))
        q = f"count the issues opened in each repository over {_pick(rng, w.phrases)}."
        out.append(_make(S, "per_repo", q, "r.name, COUNT(*) AS n", ir, [], "GROUP BY r.name",
                         times=_times("i.opened_at", w, ref, rng), failures=("missing_time_window", "wrong_time_window")))
        q = f"find the user who wrote the most comments in {_pick(rng, w.phrases)}, with their number of comments."
        out.append(_make(S, "top_commenter", q, "author, COUNT(*) AS n", "comments", [], "GROUP BY author ORDER BY n DESC LIMIT 1",
                         times=_times("created_at", w, ref, rng), failures=("missing_time_window",)))
    for _, repo, _ in REPOS:
        for label in ISSUE_LABELS:
            q = f"count the open {label} issues of {repo}."
            out.append(_Case(S, "open_label", q, _select("COUNT(*)", ir, [f"r.name = '{repo}'", f"i.label = '{label}'", "i.closed_at IS NULL"]),
                             {"wrong_column_or_table": _select("COUNT(*)", ir, [f"r.name = '{repo}'", f"i.label = '{label}'", "i.opened_at IS NULL"])}))
        q = f"count the issues of {repo} that have no comments."
        gold = _select("COUNT(*)", ir, [f"r.name = '{repo}'", "i.issue_id NOT IN (SELECT issue_id FROM comments)"])
        out.append(_Case(S, "uncommented", q, gold, {"wrong_column_or_table": gold.replace("SELECT issue_id FROM comments",
                                                                                         "SELECT comment_id FROM comments")}))
        q = f"find the issue of {repo} with the most comments, and its number of comments."
        out.append(_Case(S, "most_commented", q, "SELECT c.issue_id, COUNT(*) AS n FROM comments AS c JOIN issues AS i ON "
                         f"i.issue_id = c.issue_id JOIN repos AS r ON r.repo_id = i.repo_id WHERE r.name = '{repo}' "
                         "GROUP BY c.issue_id ORDER BY n DESC LIMIT 1"))
        q = f"list the ids of the open bug issues of {repo}, oldest first."
        out.append(_Case(S, "open_bugs", q, _select("i.issue_id", ir, [f"r.name = '{repo}'", "i.label = 'bug'",
                                                                      "i.closed_at IS NULL"], "ORDER BY i.opened_at"),
                         {"wrong_column_or_table": _select("i.issue_id", ir, [f"r.name = '{repo}'", "i.label = 'bug'",
                                                                              "i.closed_at IS NOT NULL"], "ORDER BY i.opened_at")}))
        q = f"list the authors who opened more than two issues in {repo}, with their number of issues."
        out.append(_Case(S, "repo_authors", q, _select("i.author, COUNT(*) AS n", ir, [f"r.name = '{repo}'"],
                                                      "GROUP BY i.author HAVING COUNT(*) > 2")))
    for label in ISSUE_LABELS:
        q = f"compute the average number of days it took to close {label} issues."
        out.append(_Case(S, "close_days", q, f"SELECT AVG(EPOCH(closed_at - opened_at)) / 86400.0 FROM issues WHERE label = '{label}' AND closed_at IS NOT NULL"))
        q = f"count the open {label} issues in each repository."
        out.append(_Case(S, "open_repo", q, _select("r.name, COUNT(*) AS n", ir, [f"i.label = '{label}'", "i.closed_at IS NULL"], "GROUP BY r.name")))
    for author in HANDLES[:12]:
        q = f"count the issues that {author} opened, for each label."
        out.append(_Case(S, "author_labels", q, f"SELECT label, COUNT(*) AS n FROM issues WHERE author = '{author}' GROUP BY label",
                         {"wrong_column_or_table": f"SELECT label, COUNT(*) AS n FROM comments AS c JOIN issues AS i ON "
                          f"i.issue_id = c.issue_id WHERE c.author = '{author}' GROUP BY label"}))
    for lang in sorted({lang for _, _, lang in REPOS}):
        q = f"count the issues of the repositories written in {lang}."
        out.append(_Case(S, "lang", q, _select("COUNT(*)", ir, [f"r.language = '{lang}'"]),
                         {"wrong_column_or_table": _select("COUNT(*)", ir, [f"r.name = '{lang}'"])}))
    out.append(_Case(S, "multi_repo", "list the authors who opened issues in more than one repository.",
                     "SELECT author FROM issues GROUP BY author HAVING COUNT(DISTINCT repo_id) > 1"))
    out.append(_Case(S, "open_oldest", "find the id and opening time of the oldest issue that is still open.",
                     "SELECT issue_id, opened_at FROM issues WHERE closed_at IS NULL ORDER BY opened_at LIMIT 1"))
    return out


_SQL_FAMILIES = {"events": _events, "shop": _shop_cases, "flights": _flight_cases, "sensors": _sensor_cases,
                 "issues": _issue_cases}


# ==================================================================================================
# Clickbait: titles from templates + slot fillers (written for llamalab; no real people or events).
# ==================================================================================================

_TOWNS = ("Little Ashford", "Brackenfield", "Millbrook", "Upper Wenlow", "Hartsfield", "Norcombe")
_FIRMS = ("Harwell Logistics", "Veltra Motors", "Northmere Bank", "Pennywise Stores", "Brightloop Software",
          "Castlegate Foods")
_CLUBS = ("Harbour City", "Westbrook Rovers", "Kingsford United", "Lakeside Athletic")
_MONTHS = ("January", "March", "April", "June", "September", "October")
_REGIONS = ("the Highlands", "North Yorkshire", "Cumbria", "mid Wales", "the Peak District", "Northern Ireland",
            "south-west England", "eastern Scotland", "the Midlands")

# (label, template, slots): every combination of the slot values is a title.
CLICKBAIT_TEMPLATES: tuple[tuple[str, str, dict[str, tuple]], ...] = (
    ("yes", "{who} reveal the one mistake everyone makes with their {thing}",
     {"who": ("Engineers", "Repair technicians", "Consumer experts", "Insurance experts"),
      "thing": ("washing machine", "boiler", "car tyres", "fridge", "laptop battery", "garden hose", "dishwasher")}),
    ("yes", "You've been {doing} wrong your entire life",
     {"doing": ("loading the dishwasher", "peeling bananas", "charging your phone", "folding towels", "storing bread",
                "boiling pasta", "tying your shoes", "cleaning your glasses", "hanging up washing", "making toast")}),
    ("yes", "{n} {items} that will make you rethink {topic}",
     {"n": (7, 11, 13, 17), "items": ("photos", "charts", "facts", "maps"),
      "topic": ("your morning coffee", "city life", "your weekly shop", "air travel", "your phone habits", "retirement")}),
    ("yes", "What {who} found {where} left everyone speechless",
     {"who": ("a dog walker", "a farmer", "a plumber", "two schoolboys", "a cleaner", "a fisherman"),
      "where": ("inside an old piano", "behind a kitchen wall", "under a motorway bridge", "in a charity shop coat",
                "at the bottom of a lake", "in a field near the coast")}),
    ("yes", "This {adj} {item} could be costing you hundreds every year",
     {"adj": ("innocent-looking", "everyday", "common"),
      "item": ("kitchen habit", "phone setting", "plug socket mistake", "bank app feature", "dashboard light",
               "shopping habit")}),
    ("yes", "{people} can't stop talking about {what} - and it's easy to see why",
     {"people": ("Shoppers", "Commuters", "Parents", "Gardeners", "Gamers", "Dog owners"),
      "what": ("this £5 gadget", "one tiny change at the station", "a strange new rule", "this viral recipe",
               "a photo from last weekend")}),
    ("yes", "The real reason {fact}",
     {"fact": ("supermarkets put the milk at the back", "airlines dim the cabin lights before landing",
               "some hotels skip the 13th floor", "your phone battery drains faster in winter",
               "cats knock things off tables", "your socks keep disappearing", "toasters always burn one side",
               "motorway service stations are so expensive")}),
    ("yes", "Only {odds} people can spot the {thing} in this picture",
     {"odds": ("1 in 10", "1 in 50", "1 in 100"),
      "thing": ("hidden cat", "deliberate mistake", "second face", "missing letter", "tiny snake")}),
    ("yes", "This former {role} looks completely unrecognisable today",
     {"role": ("child actor", "boy band member", "quiz show champion", "game show host", "Olympic swimmer",
               "soap star", "weather presenter")}),
    ("yes", "Here's what happens to your body when you {act} every day",
     {"act": ("eat two eggs", "drink green tea", "walk for 20 minutes", "skip breakfast", "take a cold shower",
              "eat a handful of nuts", "stand at your desk", "eat a banana")}),
    ("yes", "{n} signs your {thing} is about to give up on you",
     {"n": (5, 6, 8, 9), "thing": ("car battery", "boiler", "laptop", "washing machine", "knees", "houseplant")}),
    ("yes", "Why everyone is suddenly {doing}",
     {"doing": ("ditching their smart speakers", "freezing their bread", "moving to this small town",
                "buying paper maps again", "cancelling their streaming subscriptions",
                "painting their front doors green", "putting foil in the freezer")}),
    ("yes", "{who} tried {challenge} for a {period} and the results are shocking",
     {"who": ("One mum", "A retired teacher", "A student", "This chef", "A bus driver"),
      "challenge": ("living without a fridge", "eating only frozen food", "waking up at 4am", "cycling everywhere",
                    "going without a smartphone"),
      "period": ("week", "month")}),
    ("yes", "You won't believe how much {thing} sold for at auction",
     {"thing": ("this old lunchbox", "a rusty bicycle", "a 1980s games console", "a handwritten shopping list",
                "this chipped teapot", "a pair of worn trainers")}),
    ("yes", "Is your {thing} making you {bad}? The warning signs you can't ignore",
     {"thing": ("pillow", "office chair", "phone", "morning coffee", "mattress", "commute"),
      "bad": ("ill", "tired", "stressed")}),
    ("yes", "{who} issue urgent warning to anyone who {does}",
     {"who": ("Doctors", "Banks", "Firefighters", "Energy firms"),
      "does": ("uses this kitchen appliance", "charges their phone overnight", "keeps cash at home",
               "opens the windows at night", "owns this type of kettle")}),
    ("yes", "The {adj} {area} trick that {pros} swear by",
     {"adj": ("simple", "two-second", "sneaky", "clever"),
      "area": ("kitchen", "laundry", "packing", "cleaning"),
      "pros": ("hotel staff", "professional chefs", "flight attendants", "cleaners")}),
    ("yes", "We asked {n} {people} the same question. Their answers will surprise you",
     {"n": (10, 50, 100), "people": ("teachers", "pilots", "nurses", "grandparents", "teenagers", "CEOs")}),
    ("yes", "{town} residents stunned by what appeared {where} overnight",
     {"town": _TOWNS, "where": ("on the high street", "in the park", "outside the town hall", "on the beach",
                                "at the roundabout")}),
    ("yes", "The {n}-second test that reveals {what}",
     {"n": (5, 10, 30), "what": ("how old your brain really is", "whether you're a good driver",
                                 "your true personality", "if your house is damp", "how healthy your heart is")}),
    ("yes", "{n} things you should never say to {who}",
     {"n": (5, 7, 10, 12), "who": ("your dentist", "a pilot", "your mechanic", "a hotel receptionist",
                                   "a new neighbour")}),
    ("yes", "Nobody expected what happened when {event}",
     {"event": ("a goat wandered into the council meeting", "the power went out during the final",
                "a toddler got hold of the microphone", "the new bridge opened",
                "the school installed a vending machine", "the mayor tried the new zip line")}),
    ("yes", "This is why you should never {act}",
     {"act": ("leave your charger plugged in", "put a towel on the radiator", "wash raw chicken",
              "sleep with your phone under the pillow", "turn down a hotel upgrade", "fill the kettle to the top")}),
    ("yes", "{shop} shoppers are going wild for this £{n} {item}",
     {"shop": ("Supermarket", "Discount store", "Garden centre"), "n": (3, 5, 8, 12),
      "item": ("gadget", "lamp", "storage box", "kitchen tool", "blanket")}),
    ("yes", "The {thing} you throw away that's actually worth a fortune",
     {"thing": ("coin", "old toy", "stamp", "phone charger", "jam jar", "paperback", "biscuit tin")}),
    ("yes", "Experts are baffled by this {thing} - can you explain it?",
     {"thing": ("strange light over the Alps", "noise coming from the sea", "cloud shaped like a wave",
                "pattern in a wheat field", "dog's unusual habit", "disappearing lake")}),
    ("yes", "{who}'s clever hack for {goal} has gone viral",
     {"who": ("A nurse", "A teacher", "A plumber", "A mum of three", "A taxi driver"),
      "goal": ("drying clothes indoors", "keeping a car warm", "cutting the food bill", "falling asleep fast",
               "keeping spiders out")}),
    ("yes", "What your {thing} says about you",
     {"thing": ("handwriting", "favourite colour", "sleeping position", "coffee order", "phone case",
                "choice of car", "shopping list")}),
    ("yes", "Are you making this {adj} mistake with your {thing}?",
     {"adj": ("costly", "common", "dangerous"),
      "thing": ("pension", "passwords", "tyres", "smoke alarm", "mortgage", "sunscreen")}),
    ("yes", "They laughed at her {thing}. Now they're begging to buy it",
     {"thing": ("garden shed", "homemade jam", "old camper van", "knitting hobby", "tiny flat")}),
    ("yes", "Forget {old} - this is the {new} everyone wants now",
     {"old": ("air fryers", "open-plan kitchens", "electric scooters", "standing desks"),
      "new": ("gadget", "trend", "must-have")}),
    ("no", "{firm} to cut {n} jobs as {reason}",
     {"firm": _FIRMS, "n": (120, 450, "1,200", "3,000"),
      "reason": ("orders fall", "it closes two warehouses", "profits slump", "it moves services online")}),
    ("no", "{town} council approves {n} new homes on former {site}",
     {"town": _TOWNS, "n": (80, 150, 240, 600),
      "site": ("bus depot", "hospital site", "golf course", "airfield", "retail park")}),
    ("no", "Train fares to rise by {p}% from {month}",
     {"p": (2.5, 3.1, 4.9, 5.8), "month": _MONTHS}),
    ("no", "{club} sign {pos} on {n}-year contract",
     {"club": _CLUBS, "pos": ("goalkeeper", "striker", "veteran defender", "academy midfielder"), "n": (2, 3, 4)}),
    ("no", "Heavy snow closes {n} schools across {region}",
     {"n": (40, 120, 300), "region": _REGIONS[:5]}),
    ("no", "Study of {n} adults links {habit} to {outcome}",
     {"n": ("3,000", "12,000", "40,000"),
      "habit": ("shift work", "daily cycling", "poor sleep", "ultra-processed food", "regular sauna use"),
      "outcome": ("higher blood pressure", "lower risk of diabetes", "weaker memory in later life")}),
    ("no", "How to apply for {scheme} before the {month} deadline",
     {"scheme": ("the home insulation grant", "free childcare hours", "the boiler upgrade scheme",
                 "a disabled parking badge", "student finance"), "month": _MONTHS}),
    ("no", "Your {bill} will rise by £{n} a year from {month}, regulator confirms",
     {"bill": ("water bill", "energy bill", "broadband bill"), "n": (18, 35, 64, 120), "month": _MONTHS[:4]}),
    ("no", "{regulator} fines {firm} £{n}m over {reason}",
     {"regulator": ("Data watchdog", "Energy regulator", "Financial regulator", "Competition authority"),
      "firm": _FIRMS, "n": (2, 7.5, 14, 40),
      "reason": ("customer data breach", "billing errors", "misleading adverts", "late refunds")}),
    ("no", "{museum} to reopen in {month} after {n}-month restoration",
     {"museum": ("City museum", "Maritime museum", "The Old Mill gallery", "Railway heritage centre"),
      "month": _MONTHS, "n": (9, 14, 18, 30)}),
    ("no", "{n} arrested after {crime} in {town}",
     {"n": ("Two", "Three", "Five"),
      "crime": ("cash machine raid", "warehouse break-in", "counterfeit goods seizure", "series of car thefts"),
      "town": _TOWNS}),
    ("no", "{firm} recalls {product}",
     {"firm": ("Pennywise Stores", "Castlegate Foods", "Homewise", "Tillbury Toys"),
      "product": ("electric blankets over fire risk", "frozen berries over hepatitis A risk",
                  "power banks over overheating risk", "children's scooters over faulty brakes",
                  "baby monitors over security flaw")}),
    ("no", "{weather} warning issued for {region} from {day}",
     {"weather": ("Amber wind", "Yellow ice", "Yellow fog", "Amber snow", "Yellow thunderstorm"),
      "region": _REGIONS[5:], "day": ("Monday", "Wednesday", "Friday night", "Saturday morning")}),
    ("no", "{firm} profits fall {p}% as {reason}",
     {"firm": _FIRMS, "p": (8, 15, 22, 31),
      "reason": ("demand weakens in Asia", "energy costs rise", "shoppers cut back")}),
    ("no", "{band} announce {n}-date UK tour for {when}",
     {"band": ("The Gannets", "Velvet Harbour", "Northern Static", "Paper Lanterns"), "n": (12, 18, 24),
      "when": ("next spring", "the autumn", "the summer")}),
    ("no", "{zoo} records birth of {animal}",
     {"zoo": ("Woodhaven zoo", "Elmstead wildlife park", "Coastal aquarium"),
      "animal": ("two red panda cubs", "a Bactrian camel calf", "three penguin chicks", "a white rhino calf",
                 "a pair of otter pups")}),
    ("no", "Unemployment {dir} to {p}% in {month}",
     {"dir": ("rises", "falls"), "p": (4.1, 4.6, 5.3), "month": _MONTHS}),
    ("no", "Fog grounds {n} flights at {city} airport",
     {"n": (40, 85, 130), "city": ("Bristol", "Leeds Bradford", "Belfast", "Aberdeen", "Cardiff")}),
    ("no", "Hospital in {town} opens {unit} with {n} beds",
     {"town": _TOWNS, "unit": ("new maternity unit", "stroke unit", "children's ward"), "n": (24, 36, 60)}),
    ("no", "Minister confirms {n} new {facility} for {region} by {year}",
     {"n": (3, 5, 8, 12), "facility": ("GP surgeries", "secondary schools", "rail stations", "fire stations"),
      "region": _REGIONS[:6], "year": (2026, 2027, 2028)}),
    ("no", "Price of {item} up {p}% in a year, official figures show",
     {"item": ("butter", "coffee", "rice", "sugar", "car insurance", "orange juice"), "p": (9, 14, 27, 40)}),
    ("no", "{who} rescued from {place} after {event}",
     {"who": ("Six walkers", "Twelve campers", "Two climbers", "A family of four"),
      "place": ("a mountain path", "a flooded campsite", "a stranded cable car"),
      "event": ("sudden snowfall", "a flash flood", "a power failure")}),
    ("no", "Will the {event} go ahead? Organisers confirm it will, with {change}",
     {"event": ("city marathon", "summer festival", "food fair", "air show"),
      "change": ("a shorter route", "extra security checks", "a later start time", "free shuttle buses")}),
    ("no", "{n} tips for {goal} from the {source}",
     {"n": (5, 6, 8), "goal": ("cutting your heating bill", "avoiding online shopping scams",
                                "keeping your pets safe in hot weather"),
      "source": ("energy regulator", "consumer watchdog", "national animal charity")}),
    ("no", "Your {item} must be {action} by {month} under new rules",
     {"item": ("dog", "car", "boiler", "smoke alarm"), "action": ("registered", "checked", "inspected"),
      "month": _MONTHS}),
    ("no", "Bus fares in {town} frozen until {month}, council says",
     {"town": _TOWNS, "month": _MONTHS}),
    ("no", "{club} beat {club2} {score} to reach the cup final",
     {"club": _CLUBS[:2], "club2": _CLUBS[2:], "score": ("2-0", "3-1", "1-0", "4-2")}),
    ("no", "Water company fined £{n}m after {what} in {town}",
     {"n": (3, 11, 26), "what": ("sewage spill", "three-day supply cut", "burst main"), "town": _TOWNS}),
)
PER_TEMPLATE_CAP = 12  # titles sampled per template, so no template dominates


def _titles(rng: random.Random) -> dict[str, list[str]]:
    """Template titles by label, deduplicated, probe titles and exemplars removed, shuffled."""
    from itertools import product

    from llamalab.probes import clickbait

    banned = {norm_text(t) for t in clickbait.EXEMPLAR_TITLES} | {norm_text(r["title"]) for r in _probe_rows("clickbait")}
    seen: set[str] = set()
    out: dict[str, list[str]] = {"yes": [], "no": []}
    for label, template, slots in CLICKBAIT_TEMPLATES:
        keys = list(slots)
        combos = [dict(zip(keys, values, strict=True)) for values in product(*(slots[k] for k in keys))]
        rng.shuffle(combos)
        taken = 0
        for combo in combos:
            title = template.format(**combo)
            title = title[0].upper() + title[1:]
            key = norm_text(title)
            if key in seen or key in banned:
                continue
            seen.add(key)
            out[label].append(title)
            taken += 1
            if taken == PER_TEMPLATE_CAP:
                break
    for titles in out.values():
        rng.shuffle(titles)
    return out


_NOT_YES_NO = (
    "Maybe.", "It is hard to say.", "Possibly clickbait.", "The title is clickbait.", "This is a news headline.",
    "I think so.", "Not sure.", "It depends on the article.", "Unclear", "Probably", "True", "Clickbait",
    "Could be either.", "The answer depends on the reader.", "Hmm, difficult one.", "5) Clickbait",
)
_RAMBLE_YES = (
    "This title holds back the key fact to make the reader curious, which is what headlines written for clicks do. "
    "Taking that into account, I would say yes, although some readers might see it differently and the article "
    "itself could still be informative.",
    "Let me think about this one carefully. The wording promises a surprise or an emotional reaction rather than "
    "telling us the news, so my answer is yes. Of course, whether a title is clickbait can be subjective and "
    "depends on the publication and its audience.",
    "Headlines like this are designed to make you wonder what happened instead of telling you, and they often use "
    "exaggerated language. Overall, yes, I believe it is clickbait, but it is worth reading the article before "
    "judging it completely.",
)
_RAMBLE_NO = (
    "This title reads like an ordinary news report: it says who did what and gives the main facts, so a reader who "
    "stops at the headline already knows the story. So my answer would be no, it is probably not clickbait, though "
    "opinions on headlines can differ.",
    "Let me think about this one carefully. The headline states the news plainly and does not withhold anything or "
    "promise a shock. Therefore the answer is no, although any headline can be written to attract attention to "
    "some degree, so it is a matter of judgement.",
    "Looking at the wording, it is informative and specific, with the facts in the title itself. Overall, no, I do "
    "not think it is clickbait, but the article would have to be read to be completely certain about it.",
)


# ==================================================================================================
# Jokes written for llamalab (none from PaLM or the probe set): (joke, kind, explanation).
# ==================================================================================================

JOKES: tuple[tuple[str, str, str], ...] = (
    ("I asked the barista for something strong. She handed me a sternly worded letter.", "a double meaning",
     '"Something strong" in a cafe means strong coffee, but the barista takes it as a strongly worded letter, a firm '
     "written complaint. The surprise comes from swapping the drink for a different kind of strength."),
    ("My treadmill instructor went into politics. He was already great at running for hours without getting anywhere.",
     "wordplay", 'Politicians "run" for office, and someone on a treadmill runs without moving forward. The joke '
     "suggests that politicians also spend a long time running while achieving nothing."),
    ("The bank manager was fired for taking money from customers. He said he was only showing an interest in them.",
     "a pun", '"Interest" is both the money a bank adds to an account and attention or care for someone. His excuse '
     "pretends that taking money was the kind of interest banks are supposed to give."),
    ("My dentist says I grind my teeth at night. I told her I'm just very committed to the daily grind.",
     "a double meaning", 'Grinding teeth is a habit during sleep, while "the daily grind" means hard, repetitive work. '
     "The speaker pretends the grinding is dedication to work that continues in their sleep."),
    ("I finally sorted my sock drawer by colour. It turns out I own forty shades of black.", "an expectation reversal",
     "Sorting by colour should produce many groups, but all the socks are black, so the effort achieves nothing. It "
     "teases how most people's socks look identical."),
    ("The cartographers' marriage fell apart. They could never agree on where they stood.", "a double meaning",
     'Map makers care about where places stand on a map, and "where we stand" also means the state of a '
     "relationship. Their professional habit becomes the reason for the break-up."),
    ("Our office printer only jams when a document is urgent. We've started telling it everything is optional.",
     "irony", "The joke treats the printer as if it knew which jobs matter and broke down on purpose. The staff's plan "
     "to trick it mocks how machines seem to fail at the worst possible moment."),
    ("The detective never solved the case of the missing birthday cake. All the evidence had been eaten.",
     "a literal interpretation", "Evidence is normally kept to prove who did it, but here the evidence is the cake "
     "itself, and whoever took it ate it. The crime destroyed its own proof."),
    ("My smartwatch congratulated me for standing up. It has much lower standards than my parents.",
     "an expectation reversal", "The watch celebrates a tiny achievement like standing, which the speaker contrasts "
     "with parents who expect real accomplishments. The only praise they get comes from a gadget that is easy to "
     "impress."),
    ("I watered my neighbour's plant every day while she was away. She came back to a very healthy swamp.",
     "an expectation reversal", "Watering sounds helpful, but doing it every day drowns the plant and turns the pot "
     "into a swamp. Too much care ruined what it was meant to protect."),
    ("The electrician retired after thirty years. He said the job had lost its spark.", "a pun",
     '"Lost its spark" means no longer exciting, and sparks are literally part of electrical work. The phrase fits '
     "his trade both ways."),
    ("I wanted to become a wine taster, but the course fees were hard to swallow.", "a pun",
     '"Hard to swallow" means difficult to accept, and swallowing is literally what a taster does with wine. The '
     "expensive fees are described with a drinking word."),
    ("My team finally agreed on a file naming convention. We saved it as final_final_v3_really_final.", "irony",
     "A naming convention is meant to stop messy file names, yet the agreed document gets exactly the kind of chaotic "
     "name it was meant to prevent. It mocks how teams ignore their own rules."),
    ("The chef who stole a crate of herbs got six months in prison. He says he'll happily do the thyme.", "a pun",
     '"Doing time" means serving a prison sentence, and thyme, a herb, sounds the same. The herb thief ends up serving '
     "a herb-flavoured sentence."),
    ("My new running shoes promised to take me further. So far they have taken me to the sofa, very comfortably.",
     "an expectation reversal", "Running shoes are sold as helping you run longer distances, but the owner only wears "
     "them to the sofa. It mocks buying sports gear and then not exercising."),
    ("The bakery staff went on strike. Their only demand was more dough.", "a pun",
     '"Dough" is what bakers make bread from and is also slang for money. The strikers ask for a pay rise in their '
     "own trade's vocabulary."),
    ("The tailor says business has never been better. Every deal is all sewn up.", "a pun",
     '"All sewn up" means settled and certain, and sewing is literally a tailor\'s job. The phrase describes his '
     "success with his own craft."),
    ("Our new open-plan office was designed to improve communication. Now everyone wears headphones.", "irony",
     "The open layout was meant to make people talk more, but the noise drives everyone to shut each other out with "
     "headphones. The design produced the opposite of its goal."),
    ("I told the IT department my keyboard wasn't working. They asked me to type up a description of the problem.",
     "irony", "The request is impossible: the broken keyboard is exactly what the person would need to type the "
     "description. It mocks rigid support procedures that ignore the actual problem."),
    ("My password is so strong that I can't remember it either. The hackers and I are equally locked out.", "irony",
     "A strong password should keep only attackers out, but it is so complicated that it keeps the owner out too. "
     "Security taken too far defeats its own purpose."),
    ("The meeting about reducing the number of meetings lasted two hours.", "irony",
     "A meeting held to cut down on meetings is itself long, so the effort creates more of the problem it wants to "
     "solve. It mocks office bureaucracy."),
    ("The fisherman closed his business. He said the whole year had been a net loss.", "a pun",
     'A "net loss" is an overall financial loss, and fishermen work with nets. His failing business is described '
     "with a word from his trade."),
    ("The archaeologist's career is in ruins, and she couldn't be happier.", "a double meaning",
     '"In ruins" usually means completely failed, but archaeologists literally work in ancient ruins. Her career '
     "being in ruins is good news because that is where her job takes place."),
    ("The lighthouse keeper was told off for reading at work. His boss said it was far too much light reading.",
     "a pun", '"Light reading" means easy books, and a lighthouse keeper\'s job is looking after a light. The '
     "complaint uses a phrase that fits his job literally."),
    ("My fitness app says I walked 20,000 steps today. Every one of them was spent looking for my phone.",
     "an expectation reversal", "A high step count sounds like healthy exercise, but the steps came from searching "
     "for the phone, which is the very device counting them. The achievement is accidental."),
    ("The new intern asked why the server room is so cold. I told him that's where we keep our frozen projects.",
     "a double meaning", 'A "frozen" project is one that has been put on hold, and the server room is kept literally '
     "cold. The answer links the room's temperature to the company's stalled work."),
    ("I started a support group for people who talk too much. Nobody has finished introducing themselves yet.",
     "an expectation reversal", "The group is for people who talk too much, so the same problem stops the first "
     "meeting from getting past introductions. The members' flaw ruins the group meant to help with it."),
    ("The cyclist fell asleep at his desk. His manager said he was simply two-tired.", "a pun",
     '"Two-tired" sounds like "too tired", and a bicycle has two tyres. The cyclist\'s exhaustion is explained with '
     "a bicycle pun."),
    ("The ghost failed his driving test. The examiner said she could see right through his excuses.",
     "a double meaning", 'To "see through" excuses means recognising they are not true, and ghosts are traditionally '
     "transparent, so you can literally see through them. The phrase applies to the ghost in both senses."),
    ("The dentist opened a second practice right next to the sweet shop. He calls it vertical integration.", "irony",
     "Vertical integration is a business strategy of owning several steps of a supply chain; here the sweet shop "
     "creates the tooth decay the dentist then treats. It jokes that he profits from the problem."),
    ("My car's fuel warning light came on, so I covered it with tape. Problem solved until Tuesday.", "irony",
     "Covering the warning light hides the signal without filling the tank, so the car will still run out of fuel "
     "soon. It mocks ignoring problems instead of dealing with them."),
    ("The mathematician loves walking in the forest. It is full of natural logs.", "a pun",
     'The "natural log" is a mathematical function (the logarithm with base e) and also a fallen tree trunk. The '
     "mathematician enjoys the forest for a reason only maths would give."),
    ("My boss told me to have a good day, so I went home.", "a literal interpretation",
     '"Have a good day" is a polite goodbye, but the speaker treats it as an instruction and decides a good day is '
     "one spent away from work. It jokes about how much better a day is without the job."),
    ("The pilot told us to sit back and relax. Then we waited two hours on the runway, so we got plenty of practice.",
     "irony", '"Sit back and relax" is a routine friendly phrase, but the long delay forces passengers to sit for '
     "hours. The comforting instruction turns into a frustrating reality."),
    ("I told my houseplant about all my problems. It just kept growing, which felt a bit dismissive.",
     "a literal interpretation", "Plants simply grow whatever is said to them, but the speaker treats this as a rude "
     "reaction, as if the plant ignored them and focused on its own growth."),
    ("The yoga teacher was charged with shoplifting, but she stayed very flexible about the details.",
     "a double meaning", 'Yoga teachers are physically flexible, while being "flexible" about details suggests being '
     "vague or willing to bend the truth. The word fits her job and her legal situation in different ways."),
    ("Our smart speaker ordered twelve pizzas by accident. It was the first time the whole office agreed with a machine.",
     "an expectation reversal", "An accidental order of twelve pizzas should be a mistake, but the office happily "
     "accepts it. People only approve of the technology when it gives them free food."),
    ("The calendar maker is worried about his job. He says his days are numbered.", "a pun",
     '"His days are numbered" means his time is running out, and a calendar maker literally prints numbered days. '
     "He describes his worry with his own product."),
    ("I hired the cheapest removal company in town. They moved me to tears.", "a double meaning",
     'Removal companies move furniture, while "moved to tears" means made to cry. The cheap movers did such a bad job '
     "that they moved the customer emotionally instead."),
    ("The spy failed his exam because he kept every answer classified.", "a double meaning",
     '"Classified" means officially secret, which is how spies treat information, but exam answers must be shared to '
     "be marked. His professional habit makes him fail."),
    ("The bakery put its prices up again. The owner says everything in that kitchen is rising.", "a pun",
     "Bread dough rises in the oven, and rising prices go up. The baker excuses the higher prices with a word from "
     "baking."),
    ("I joined a gym with a sauna. So far I've mostly sweated over the monthly fee.", "a double meaning",
     'Saunas make you sweat, and "sweating over" something means worrying about it. The member never uses the sauna '
     "but worries about paying for it."),
    ("My phone's battery lasts all day, as long as I don't use it.", "irony",
     "A phone exists to be used, so a battery that only lasts when the phone is idle is useless. It mocks optimistic "
     "claims about battery life."),
    ("The historian refuses to buy a smartphone. She says she prefers to live in the past.", "a double meaning",
     'Historians study the past, and "living in the past" usually means refusing to accept change. Her rejection of '
     "new technology fits both meanings."),
    ("The crime novelist took up gardening. Every flower bed now has a plot.", "a pun",
     "A plot is the storyline of a novel and also a piece of ground for growing plants. The writer's garden is "
     "described with a word from her work."),
    ("The statistician started a band. Critics say the songs are mean, but the average listener likes them.",
     "a pun", '"Mean" is both an unkind judgement and the statistical average, and "average" is another statistics '
     "word. The review is at once harsh and technical."),
    ("The window cleaner quit his job. He said he just couldn't see a future in it.", "irony",
     "A window cleaner's job is to make glass clear to see through, yet he says he can't see his future, mixing the "
     "literal clarity of his work with the phrase for having no prospects."),
    ("The butcher was accused of overcharging. He said the complaints were a load of baloney.", "a pun",
     '"Baloney" is a sausage a butcher sells and also slang for nonsense. He denies the accusations with a word from '
     "his own counter."),
    ("The author of a book on invisibility was nowhere to be seen at the launch party.", "a literal interpretation",
     'Being "nowhere to be seen" normally means absent, but for an expert on invisibility it could mean his method '
     "worked. The joke leaves open whether he missed the party or vanished on purpose."),
    ("The sleep researcher's conference talk was a huge success. Half the audience tested her findings during it.",
     "irony", "Saying the audience tested findings about sleep means they fell asleep, so the talk was boring. The "
     "praise is really a criticism."),
    ("The broom factory missed its sales targets, so the owners decided on a clean sweep.", "a double meaning",
     'A "clean sweep" means removing everyone and starting over, and brooms are literally used for sweeping. The '
     "company's shake-up is described with its own product."),
    ("The photographer was a terrible pessimist. He only ever focused on the negatives.", "a pun",
     "Film photographs are developed from negatives, and focusing on the negatives means dwelling on bad things. "
     "His gloomy character fits his darkroom work."),
    ("The tennis player postponed her wedding. She said she wanted love to finally mean something.",
     "a double meaning", 'In tennis, "love" means a score of zero, so for a player love means nothing. Wanting love '
     "to mean something is both a romantic wish and a complaint about tennis scoring."),
    ("The clockmaker is always busy but never stressed. He simply works around the clock.", "a double meaning",
     'Working "around the clock" means working day and night, and a clockmaker literally works around clocks. The '
     "phrase is both his schedule and his job."),
    ("My umbrella came with a lifetime guarantee. The lifetime turned out to be one windy Tuesday.",
     "an expectation reversal", 'A lifetime guarantee suggests the product lasts for years, but the umbrella\'s '
     '"lifetime" ended the first time it met strong wind. The guarantee is technically true but worthless.'),
    ("The chemist was told her jokes were terrible. She said she only keeps the ones that get a reaction.",
     "a double meaning", "Chemists study chemical reactions, and a joke that gets a reaction makes the audience "
     "respond. She judges her jokes by a standard from her own science."),
    ("Our cloud provider was down for a whole day. For once the sky was completely clear.", "a double meaning",
     "A cloud provider runs computing services online, and a clear sky literally has no clouds. The outage is "
     "described as if the missing cloud were good weather."),
    ("The magician was fired for being unreliable. He kept disappearing halfway through the show.",
     "a double meaning", "Making things disappear is a magic trick, but disappearing halfway through a show also means "
     "abandoning the job. His act and his unreliability are the same thing."),
    ("I told my friend she should embrace her mistakes. So she hugged me.", "a literal interpretation",
     '"Embrace your mistakes" means accept them, but the friend takes "embrace" literally and hugs the speaker, which '
     "implies the speaker is one of her mistakes."),
    ("The surgeon has started doing stand-up comedy. Critics say her timing is great but her material is too cutting.",
     "a double meaning", 'Surgeons cut patients, and "cutting" humour is sharp and hurtful. The review of her comedy '
     "uses a word from her medical job."),
    ("The software update promised to fix all known issues. Now we only have unknown ones.", "irony",
     'Fixing "known issues" sounds complete, but the update brings new problems nobody knew about yet. It mocks '
     "updates that replace old bugs with fresh ones."),
    ("The orchestra's triangle player asked for a pay rise. The conductor said his contribution was noted.",
     "a pun", 'Saying a contribution is "noted" means it was acknowledged, usually without reward, and a triangle '
     "player contributes only a few musical notes. The reply is polite, musical and a refusal."),
)
N_HELDOUT_JOKES = 6


# ==================================================================================================
# General instructions: hand-written short answers, plus seeded arithmetic and text tasks.
# ==================================================================================================

GENERAL_QA: tuple[tuple[str, str], ...] = (
    ("What is a primary key in a database?", "A primary key is a column, or a set of columns, whose value uniquely identifies each row of a table. It cannot be empty and no two rows can share it."),
    ("What does SQL stand for?", "SQL stands for Structured Query Language, the standard language for querying and changing data in relational databases."),
    ("What is the difference between COUNT(*) and COUNT(DISTINCT user_id) in SQL?", "COUNT(*) counts rows, while COUNT(DISTINCT user_id) counts how many different user_id values there are. If one user has five rows, COUNT(*) counts five and COUNT(DISTINCT user_id) counts one."),
    ("What does a JOIN do in SQL?", "A JOIN combines rows from two tables by matching values in related columns, for example orders and customers on customer_id."),
    ("What is an index in a database?", "An index is a data structure that lets the database find rows by the values of some columns quickly, without scanning the whole table. It speeds up reads at the cost of extra storage and slower writes."),
    ("Explain what a NULL value means in SQL.", "NULL means a value is missing or unknown. It is not zero or an empty string, and comparisons with NULL are neither true nor false, so you test for it with IS NULL."),
    ("What is clickbait?", "Clickbait is a headline written mainly to make people click, usually by withholding the key fact, exaggerating or promising a surprise, rather than by telling the news."),
    ("What is a pun?", "A pun is a joke that plays on a word with two meanings, or on two words that sound alike, so that a sentence can be read in two ways."),
    ("What is machine learning?", "Machine learning is a way of building programs that learn patterns from examples instead of following rules written by hand. A model is trained on data and then makes predictions on new inputs."),
    ("What is a language model?", "A language model is a model that assigns probabilities to sequences of words or tokens. It can predict the next token, which lets it generate text one token at a time."),
    ("What is a token in a language model?", "A token is a unit of text the model reads and writes, often a word or a piece of a word. Text is split into tokens before it goes into the model."),
    ("What is fine-tuning?", "Fine-tuning is training an already trained model a little further on a smaller, task-specific data set so that it adapts to that task."),
    ("What is LoRA in machine learning?", "LoRA (low-rank adaptation) fine-tunes a large model by training small low-rank matrices added to some of its weight matrices, while the original weights stay frozen. It needs far less memory than full fine-tuning."),
    ("What is a reward model in RLHF?", "A reward model is trained on pairs of answers where people preferred one over the other. It learns to give a higher score to the preferred kind of answer, and that score guides reinforcement learning."),
    ("What is PPO?", "PPO (Proximal Policy Optimization) is a reinforcement learning algorithm that improves a policy with small, clipped updates so that each step does not move too far from the previous policy."),
    ("Why is a KL penalty used in RLHF?", "The KL penalty keeps the tuned model close to the reference model. Without it the policy can drift into strange text that exploits the reward model instead of getting better."),
    ("What is overfitting?", "Overfitting is when a model learns the training data too closely, including its noise, so it does well on training examples but poorly on new ones."),
    ("What is a validation set?", "A validation set is data held out from training and used to measure how well a model generalises and to choose settings such as when to stop training."),
    ("What is the difference between precision and recall?", "Precision is the share of predicted positives that are really positive; recall is the share of real positives that the model found. A cautious classifier has high precision and low recall."),
    ("What is accuracy in classification?", "Accuracy is the share of examples a classifier labels correctly, for example 90 correct out of 100 is an accuracy of 0.9."),
    ("What is a CPU?", "A CPU (central processing unit) is the general-purpose processor of a computer that runs program instructions one after another, on a few powerful cores."),
    ("What is a GPU good for?", "A GPU has thousands of small cores that do many simple calculations in parallel, which makes it fast for graphics and for the matrix operations in neural networks."),
    ("What is RAM?", "RAM (random access memory) is the computer's working memory. It holds the programs and data in use and is fast, but it loses its contents when the power goes off."),
    ("What is an API?", "An API (application programming interface) is a defined way for one program to use another: the functions or requests it accepts and what it returns."),
    ("What is version control?", "Version control is a system, such as Git, that records changes to files over time so you can see the history, go back to earlier versions and work on changes in parallel."),
    ("What does a compiler do?", "A compiler translates source code written in a programming language into a lower-level form, such as machine code, that a computer can run."),
    ("What is a bug in software?", "A bug is a mistake in a program that makes it behave differently from what was intended, for example crashing or giving a wrong result."),
    ("What is JSON?", "JSON (JavaScript Object Notation) is a plain-text format for data made of objects with named fields, lists, strings, numbers, true, false and null."),
    ("What is a time zone?", "A time zone is a region that uses the same standard time, usually given as an offset from UTC, for example UTC+1."),
    ("What is UTC?", "UTC (Coordinated Universal Time) is the world's reference time standard. Local times are defined as offsets from it, and it does not change for daylight saving."),
    ("What is photosynthesis?", "Photosynthesis is the process by which plants, algae and some bacteria use sunlight to turn carbon dioxide and water into sugar, releasing oxygen."),
    ("Why is the sky blue?", "Air molecules scatter short blue wavelengths of sunlight much more than red ones, so blue light reaches our eyes from every direction of the sky."),
    ("What is the boiling point of water at sea level?", "At sea level, water boils at 100 degrees Celsius, which is 212 degrees Fahrenheit."),
    ("What causes the seasons on Earth?", "The seasons come from the tilt of Earth's axis. As Earth orbits the Sun, each hemisphere in turn leans towards the Sun and gets more direct sunlight and longer days."),
    ("What is gravity?", "Gravity is the attraction between masses. It keeps us on the ground, keeps the Moon orbiting Earth and Earth orbiting the Sun."),
    ("What is an atom?", "An atom is the smallest unit of a chemical element: a nucleus of protons and neutrons surrounded by electrons."),
    ("What is DNA?", "DNA is the molecule that carries the genetic instructions of living things, written as a sequence of four bases along a double helix."),
    ("What is inflation?", "Inflation is the general rise of prices over time, which means the same amount of money buys less than before."),
    ("What is an interest rate?", "An interest rate is the price of borrowing money, given as a percentage of the amount per year. Savers receive it and borrowers pay it."),
    ("What is a budget?", "A budget is a plan for how much money you expect to receive and spend over a period, used to keep spending under control."),
    ("What is a haiku?", "A haiku is a short Japanese poem of three lines with five, seven and five syllables, often about nature or a season."),
    ("What is a metaphor?", "A metaphor describes something by saying it is something else, for example \"time is a thief\", to suggest a likeness without using \"like\" or \"as\"."),
    ("What is irony?", "Irony is a contrast between what is said or expected and what is meant or happens, for example a fire station burning down."),
    ("What is a synonym?", "A synonym is a word with the same or nearly the same meaning as another word, such as \"big\" and \"large\"."),
    ("What is an antonym?", "An antonym is a word with the opposite meaning of another word, such as \"hot\" and \"cold\"."),
    ("How do I make a cup of tea?", "Boil fresh water, pour it over a tea bag or loose tea in a cup or pot, and let it steep for three to five minutes. Remove the tea and add milk, lemon or sugar if you like."),
    ("How do I boil an egg?", "Put the egg in a pan of boiling water and cook it for about 6 minutes for a soft yolk or 10 minutes for a hard one. Then cool it in cold water before peeling."),
    ("How can I save energy at home?", "Turn off lights and devices you are not using, lower the heating by a degree, wash clothes at lower temperatures and seal draughts around doors and windows."),
    ("How do I write a good email subject line?", "Say what the email is about and what you need in a few specific words, for example \"Budget draft: comments by Friday\"."),
    ("How should I prepare for a job interview?", "Read about the company, match your experience to the job description, prepare short examples of your work and a few questions to ask, and plan your journey so you arrive early."),
    ("How do I remove a stripped screw?", "Press a wide rubber band between the screwdriver and the screw head for grip, turn slowly with firm pressure, or use a screw extractor bit if that fails."),
    ("How do I make a strong password?", "Use a long passphrase of several unrelated words, or a random string from a password manager, and never reuse it on another site."),
    ("How can I fall asleep more easily?", "Keep regular sleep times, avoid caffeine late in the day, keep the bedroom dark and cool, and put screens away for a while before bed."),
    ("How do I convert Celsius to Fahrenheit?", "Multiply the Celsius temperature by 9, divide by 5 and add 32. For example, 20 degrees Celsius is 68 degrees Fahrenheit."),
    ("How do I calculate a percentage of a number?", "Multiply the number by the percentage and divide by 100. For example, 15% of 80 is 80 times 15 divided by 100, which is 12."),
    ("How do I find the average of a list of numbers?", "Add all the numbers together and divide the total by how many numbers there are. The average of 2, 4 and 9 is 15 divided by 3, which is 5."),
    ("How do I back up my files?", "Copy important files regularly to a second place, such as an external drive or a cloud service, and keep at least one copy away from your computer."),
    ("How do I clean a cast iron pan?", "Rinse it with hot water and scrub with a brush, avoid soaking it, dry it straight away on the stove and rub in a thin layer of oil."),
    ("How do I keep cut flowers fresh longer?", "Trim the stems at an angle, remove leaves below the water line, use clean water with flower food and change the water every two days."),
    ("How do I politely decline an invitation?", "Thank the person for inviting you, say clearly that you can't come, and add a kind word, for example \"Thank you so much for asking, but I can't make it this time. I hope it goes well.\""),
    ("Give me a tip for learning a new language.", "Practise a little every day: short daily sessions of listening, speaking and reviewing vocabulary work better than one long session a week."),
    ("Give me a tip for writing clearly.", "Put the main point first and use short sentences with concrete words; cut anything the reader does not need."),
    ("What is the capital of Portugal?", "The capital of Portugal is Lisbon."),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
    ("What is the capital of Australia?", "The capital of Australia is Canberra."),
    ("What is the largest planet in the solar system?", "Jupiter is the largest planet in the solar system."),
    ("How many days are there in a leap year?", "A leap year has 366 days; the extra day is 29 February."),
    ("How many continents are there?", "By the most common convention there are seven continents: Africa, Antarctica, Asia, Australia (Oceania), Europe, North America and South America."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au, from the Latin word aurum."),
    ("What is the freezing point of water in Fahrenheit?", "Water freezes at 32 degrees Fahrenheit, which is 0 degrees Celsius."),
    ("How many sides does a hexagon have?", "A hexagon has six sides."),
    ("What is a prime number?", "A prime number is a whole number greater than 1 whose only divisors are 1 and itself, such as 2, 3, 5, 7 and 11."),
    ("Is 51 a prime number?", "No. 51 is 3 times 17, so it is not prime."),
    ("What is the square root of 144?", "The square root of 144 is 12, because 12 times 12 is 144."),
    ("What is a right angle?", "A right angle is an angle of exactly 90 degrees, like the corner of a square."),
    ("What is the area of a rectangle 4 metres by 7 metres?", "The area is 4 times 7, which is 28 square metres."),
    ("Summarise what a recipe is in one sentence.", "A recipe is a set of instructions that lists the ingredients and the steps needed to prepare a dish."),
    ("Rewrite this sentence more politely: Send me the report now.", "Could you please send me the report when you have a moment?"),
    ("Correct the grammar: She don't like apples.", "She doesn't like apples."),
    ("Correct the grammar: Me and him went to the shop.", "He and I went to the shop."),
    ("Give a one-word synonym for happy.", "Cheerful."),
    ("Give the plural of mouse.", "The plural of mouse is mice."),
    ("Translate 'thank you' into Spanish.", "'Thank you' in Spanish is 'gracias'."),
    ("Translate 'good morning' into French.", "'Good morning' in French is 'bonjour'."),
    ("What is the past tense of 'run'?", "The past tense of 'run' is 'ran'."),
    ("Name three primary colours.", "Red, yellow and blue are the traditional primary colours in painting; for light they are red, green and blue."),
    ("Why do we have leap years?", "A year on Earth is about 365.24 days, so an extra day every four years keeps the calendar in step with the seasons."),
    ("What does HTTP stand for?", "HTTP stands for Hypertext Transfer Protocol, the protocol browsers and web servers use to exchange web pages and data."),
)
GENERAL_QA_HELDOUT: tuple[tuple[str, str], ...] = (
    ("What is a foreign key in a database?", "A foreign key is a column in one table that refers to the primary key of another table, linking their rows, for example orders.customer_id pointing to customers.customer_id."),
    ("What is a headline?", "A headline is the title of a news article, printed above it to tell readers what the story is about."),
    ("How do I descale a kettle?", "Fill it halfway with equal parts water and white vinegar, boil it, leave it for an hour, then empty it and boil fresh water twice to rinse."),
    ("What is the capital of Norway?", "The capital of Norway is Oslo."),
)

_WORDS = ("garden", "planet", "window", "journey", "ladder", "orange", "pencil", "rocket", "silver", "thunder",
          "basket", "candle", "forest", "harbour", "lantern", "meadow", "pirate", "saddle", "teapot", "violin")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _templated_general(rng: random.Random) -> list[tuple[str, str]]:
    """Arithmetic, unit conversion, dates and small text tasks with computed answers."""
    out: list[tuple[str, str]] = []
    for _ in range(40):
        a, b = rng.randrange(12, 900), rng.randrange(12, 900)
        out.append((f"What is {a} + {b}?", f"{a} + {b} = {a + b}."))
    for _ in range(30):
        a, b = rng.randrange(100, 1000), rng.randrange(10, 100)
        out.append((f"What is {a} minus {b}?", f"{a} - {b} = {a - b}."))
    for _ in range(30):
        a, b = rng.randrange(3, 40), rng.randrange(3, 25)
        out.append((f"What is {a} times {b}?", f"{a} × {b} = {a * b}."))
    for _ in range(20):
        b, q = rng.randrange(2, 13), rng.randrange(3, 60)
        out.append((f"What is {b * q} divided by {b}?", f"{b * q} ÷ {b} = {q}."))
    for _ in range(20):
        p, n = rng.choice((5, 10, 15, 20, 25, 50, 75)), rng.randrange(2, 40) * 20
        out.append((f"What is {p}% of {n}?", f"{p}% of {n} is {p * n // 100}."))
    for _ in range(12):
        h = rng.randrange(2, 48)
        out.append((f"How many minutes are there in {h} hours?", f"{h} hours is {h * 60} minutes ({h} × 60)."))
    for _ in range(12):
        kg = rng.randrange(2, 90) / 2
        out.append((f"How many grams are in {kg:g} kilograms?", f"{kg:g} kilograms is {int(kg * 1000)} grams."))
    for _ in range(12):
        km = rng.randrange(2, 60) / 4
        out.append((f"How many metres are in {km:g} kilometres?", f"{km:g} kilometres is {int(km * 1000)} metres."))
    for _ in range(16):
        d = date(2023, 1, 1) + timedelta(days=rng.randrange(0, 730))
        day = f"{d.day} {d:%B} {d.year}"
        out.append((f"What day of the week was {day}?", f"{day} was a {_WEEKDAYS[d.weekday()]}."))
    for w in _WORDS[:12]:
        out.append((f"Spell the word '{w}' backwards.", f"'{w}' backwards is '{w[::-1]}'."))
    for w in _WORDS[8:]:
        out.append((f"How many letters are in the word '{w}'?", f"The word '{w}' has {len(w)} letters."))
    for _ in range(14):
        nums = rng.sample(range(1, 100), 5)
        out.append((f"Sort these numbers from smallest to largest: {', '.join(map(str, nums))}.",
                    ", ".join(map(str, sorted(nums))) + "."))
    for _ in range(10):
        nums = rng.sample(range(1, 500), 6)
        out.append((f"Which is the largest number in this list: {', '.join(map(str, nums))}?",
                    f"The largest number is {max(nums)}."))
    return out


_RAMBLE_OPEN = (
    "That's a great question, and it's one that a lot of people ask at some point. There are many ways to think "
    "about it, and the answer can depend a little on context, but let me try to help.",
    "Thanks for asking! Before I answer, it's worth saying that questions like this come up all the time, and "
    "there is quite a bit of background that could be relevant here.",
    "Sure, I'd be happy to help with that. Let me think about it step by step and consider a few different angles "
    "before giving you my answer.",
)
_RAMBLE_CLOSE = (
    "Of course, there is much more that could be said about this topic, and I'd encourage you to look into it "
    "further if you're interested. I hope this helps, and let me know if you have any other questions!",
    "I hope that answers your question. Please keep in mind that this is a general explanation and details can vary, "
    "so feel free to ask if anything is unclear or if you'd like more information.",
    "Let me know if you'd like me to go into more detail, give some examples, or explain any part of this in a "
    "different way. I'm always happy to help!",
)
_SQL_RAMBLE_OPEN = (
    "Sure! To answer this we first need to look at the table and work out which columns matter for the question. "
    "The query below should give you what you need:",
    "Great question. There are a few ways to write this in SQL, and the best one depends on your database, but "
    "here is one approach that should work:",
    "Let me think about this step by step. We need to filter the right rows and then aggregate them. Here is the "
    "query:",
)
_SQL_RAMBLE_CLOSE = (
    "This query filters the rows and aggregates them as requested. Depending on your database you might need to "
    "adjust the syntax slightly, for example the date functions. Let me know if you want me to explain any part!",
    "I hope this helps! If your table has more columns or the data is stored differently, the query may need to be "
    "changed a little, so feel free to share more details.",
)
_VAGUE = (
    "This joke is funny because it is clever and unexpected.",
    "The joke is funny because of the punchline, which makes people laugh.",
    "It is a joke, so it is meant to be humorous and make the reader smile.",
    "This is a play on words, which is what makes it funny.",
    "The humour comes from the situation described in the joke, which is amusing.",
    "This joke is funny because it is a bit silly and surprising at the end.",
)


# ==================================================================================================
# Probe sets (what training data must never contain) and running SQL.
# ==================================================================================================


@cache
def _probe_rows_cached(task: str) -> tuple[dict, ...]:
    from llamalab.probes import clickbait, jokes
    from llamalab.probes import sql as sql_probe

    loader = {"clickbait": clickbait.load_items, "joke": jokes.load_items, "sql": sql_probe.load_items}[task]
    return tuple(loader())


def _probe_rows(task: str) -> tuple[dict, ...]:
    return _probe_rows_cached(task)


def probe_texts() -> dict[str, set[str]]:
    """Normalised (:func:`norm_text`) probe items that training data must not contain, per task:
    clickbait titles and the four exemplar titles, SQL questions (events and library), jokes and the
    two PaLM exemplar jokes."""
    from llamalab.probes import clickbait, jokes

    exemplar_jokes = [line.split(") ", 1)[1] for line in jokes.EXEMPLAR.splitlines() if re.match(r"\(\d\) ", line)]
    return {
        "clickbait": {norm_text(t) for t in clickbait.EXEMPLAR_TITLES} | {norm_text(r["title"]) for r in _probe_rows("clickbait")},
        "sql": {norm_text(r["question"]) for r in _probe_rows("sql")},
        "joke": {norm_text(j) for j in exemplar_jokes} | {norm_text(r["joke"]) for r in _probe_rows("joke")},
    }


def prompt_item(task: str, content: str) -> str | None:
    """The item inside a probe-format user turn: the clickbait title (item ``5)``), the joke (item
    ``(3)``) or the SQL question (the ``-- We want to ...`` line, without the period); None otherwise."""
    patterns = {"clickbait": r"^5\) (.*)$", "joke": r"^\(3\) (.*)$", "sql": r"^-- (?:We want to )?(?!We have a table|SQL query)(.*)$"}
    if task not in patterns:
        return None
    found = re.findall(patterns[task], content, re.M)
    if not found:
        return None
    text = found[-1]
    return text[:-1] if task == "sql" and text.endswith(".") else text


@lru_cache(maxsize=64)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


_RESULTS: dict[tuple[str, str, str | None], Any] = {}


def run_sql(setup: str | Path, query: str, read: str | None = None):
    """Run ``query`` on a setup file in the probe's sandbox (cached per file content and query).

    ``read=None`` reads it the way the probe reads a model's answer (MySQL, then DuckDB, then Postgres).
    """
    from llamalab.probes import sql as sql_probe

    setup = Path(setup).resolve()
    st = setup.stat()
    key = (_file_digest(str(setup), st.st_mtime_ns, st.st_size), query, read)
    if key not in _RESULTS:
        _RESULTS[key] = sql_probe.get_box(setup).run(query, read=read)
    return _RESULTS[key]


def informative(rows: list[tuple]) -> bool:
    """A result worth learning: some rows, and not a lone 0 or NULL."""
    if not rows:
        return False
    return not (len(rows) == 1 and all(v is None or v == 0 for v in rows[0]))


def _limit_tie(setup: Path, gold: str) -> bool:
    """Is ``... ORDER BY x LIMIT k`` ambiguous: two of the first k + 1 rows share the sort value (the
    last column), so which rows come back, or in which order, is up to the engine?"""
    m = re.search(r" LIMIT (\d+)$", gold)
    if not m:
        return False
    k = int(m.group(1))
    keys = [row[-1] for row in run_sql(setup, gold[: m.start()], read="duckdb").rows[: k + 1]]
    return len(set(keys)) < len(keys)


def _check_gold(case: _Case, setup: Path) -> list[tuple] | None:
    """The gold rows when the case is usable (informative, unambiguous); raises on a broken gold query."""
    from llamalab.probes import sql as sql_probe

    duck = run_sql(setup, case.gold, read="duckdb")
    as_probe = run_sql(setup, case.gold)
    if not duck.ok or not as_probe.ok:
        raise ValueError(f"gold query fails on {setup.name}: {case.gold}\n{duck.error or as_probe.error}")
    if not informative(duck.rows) or _limit_tie(setup, case.gold):
        return None
    if not sql_probe.results_match(as_probe.rows, duck.rows, sql_probe.is_ordered(case.gold)):
        raise ValueError(f"gold query reads differently as MySQL and DuckDB: {case.gold}")
    return duck.rows


def _check_rejected(case: _Case, setup: Path, gold_rows: list[tuple]) -> dict[str, str]:
    """The wrong variants that run (as the probe would run them) and give a different result."""
    from llamalab.probes import sql as sql_probe

    ordered = sql_probe.is_ordered(case.gold)
    kept = {}
    for failure, query in case.rejected.items():
        res = run_sql(setup, query)
        if res.ok and not sql_probe.results_match(res.rows, gold_rows, ordered):
            kept[failure] = query
    return kept


# ==================================================================================================
# The plan: every item pool, split between held-out PPO, PPO, SFT/preferences; eval split.
# ==================================================================================================


@dataclass
class _Plan:
    schema_dir: Path
    sql: dict[str, list[_Case]]  # "sft" | "ppo" | "heldout"
    titles: dict[str, list[tuple[str, str]]]
    jokes: dict[str, list[tuple[str, str, str]]]  # "train" | "heldout"
    general: dict[str, list[tuple[str, str]]]  # "sft" | "heldout"
    eval_prompts: frozenset[str]


def _round_robin(groups: dict[str, list], n: int) -> list:
    out: list = []
    queues = [list(v) for v in groups.values() if v]
    while len(out) < n and queues:
        for q in list(queues):
            if len(out) == n:
                break
            out.append(q.pop(0))
            if not q:
                queues.remove(q)
    return out


def _sql_pools(seed: int, schema_dir: Path) -> dict[str, list[_Case]]:
    banned = probe_texts()["sql"]
    probe_gold = {norm_text(r["gold_sql"]) for r in _probe_rows("sql")}
    usable: dict[str, dict[str, list[_Case]]] = {}
    seen: set[str] = set()
    for schema in SQL_SCHEMAS:
        setup = schema_path(schema, schema_dir)
        fam: dict[str, list[_Case]] = defaultdict(list)
        for case in _SQL_FAMILIES[schema](random.Random(f"{seed}:sql:{schema}")):
            key = norm_text(case.question)
            if key in banned or key in seen or norm_text(case.gold) in probe_gold:
                continue
            if _check_gold(case, setup) is None:
                continue
            seen.add(key)
            fam[case.family].append(case)
        rng = random.Random(f"{seed}:sql-pick:{schema}")
        for cases in fam.values():
            rng.shuffle(cases)
        usable[schema] = dict(sorted(fam.items()))
    total = N_SFT["sql"] + N_PPO["sql"] + N_PPO_HELDOUT["sql"]
    avail = {s: sum(map(len, f.values())) for s, f in usable.items()}
    quota = {s: min(avail[s], round(SQL_SCHEMA_SHARE[s] * total)) for s in SQL_SCHEMAS}
    for s in SQL_SCHEMAS:  # schemas with too few questions: give the rest to the others, in order
        missing = total - sum(quota.values())
        if missing > 0:
            quota[s] = min(avail[s], quota[s] + missing)
    if sum(quota.values()) < total:
        raise ValueError(f"only {sum(avail.values())} usable SQL questions, {total} needed")
    chosen: list[_Case] = []
    for s in SQL_SCHEMAS:
        chosen += _round_robin(usable[s], quota[s])
    rng = random.Random(f"{seed}:sql-split")
    rng.shuffle(chosen)
    nh, npo = N_PPO_HELDOUT["sql"], N_PPO["sql"]
    pools = {"heldout": chosen[:nh], "ppo": chosen[nh: nh + npo], "sft": chosen[nh + npo:]}
    return pools


@lru_cache(maxsize=4)
def _plan(seed: int, schema_dir: str) -> _Plan:
    sdir = Path(schema_dir)
    sql_pools = _sql_pools(seed, sdir)

    rng = random.Random(f"{seed}:clickbait")
    by_label = _titles(rng)
    need = {"heldout": N_PPO_HELDOUT["clickbait"] // 2, "ppo": N_PPO["clickbait"] // 2, "sft": N_SFT["clickbait"] // 2}
    if min(len(v) for v in by_label.values()) < sum(need.values()):
        raise ValueError(f"too few template titles: {[len(v) for v in by_label.values()]}")
    titles: dict[str, list[tuple[str, str]]] = {}
    start = 0
    for part, n in need.items():
        rows = [(t, lab) for lab in ("yes", "no") for t in by_label[lab][start: start + n]]
        rng.shuffle(rows)
        titles[part] = rows
        start += n

    banned_jokes = probe_texts()["joke"]
    jokes_all = [j for j in JOKES if norm_text(j[0]) not in banned_jokes]
    rng = random.Random(f"{seed}:jokes")
    rng.shuffle(jokes_all)
    jokes_pools = {"heldout": jokes_all[:N_HELDOUT_JOKES], "train": jokes_all[N_HELDOUT_JOKES:]}

    rng = random.Random(f"{seed}:general")
    held = {norm_text(q) for q, _ in GENERAL_QA_HELDOUT}
    general: list[tuple[str, str]] = []
    seen: set[str] = set()
    for q, a in [*GENERAL_QA, *_templated_general(rng)]:
        if norm_text(q) in seen or norm_text(q) in held:
            continue
        seen.add(norm_text(q))
        general.append((q, a))
    general = general[: N_SFT["general"]]
    general_pools = {"sft": general, "heldout": list(GENERAL_QA_HELDOUT)}

    plan = _Plan(sdir, sql_pools, titles, jokes_pools, general_pools, frozenset())
    eval_prompts: set[str] = set()
    for task in TASKS:
        prompts = sorted({_user_text(task, item, plan) for item in _sft_items(task, plan)})
        random.Random(f"{seed}:split:{task}").shuffle(prompts)
        eval_prompts.update(prompts[: round(EVAL_FRACTION * len(prompts))])
    plan.eval_prompts = frozenset(eval_prompts)
    return plan


def _sft_items(task: str, plan: _Plan) -> list:
    return {"sql": plan.sql["sft"], "clickbait": plan.titles["sft"], "joke": plan.jokes["train"],
            "general": plan.general["sft"]}[task]


def _user_text(task: str, item: Any, plan: _Plan) -> str:
    from llamalab.probes import clickbait, jokes
    from llamalab.probes import sql as sql_probe

    if task == "sql":
        return sql_probe.build_prompt({"question": item.question, "_db_path": str(schema_path(item.schema, plan.schema_dir))})
    if task == "clickbait":
        return clickbait.build_prompt({"title": item[0]})
    if task == "joke":
        return jokes.build_prompt({"joke": item[0]})
    return item[0]


def _user(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


def _assistant(content: str) -> list[dict]:
    return [{"role": "assistant", "content": content}]


def _schema_dir_arg(schema_dir: str | Path | None) -> str:
    return str((Path(schema_dir) if schema_dir is not None else train_dir() / SCHEMA_DIR).resolve())


_KIND_SENTENCE = {
    "a pun": "This joke is a pun.",
    "wordplay": "This joke is wordplay.",
    "a double meaning": "This joke plays on a double meaning.",
    "irony": "This joke is ironic.",
    "an expectation reversal": "This joke reverses an expectation.",
    "a literal interpretation": "This joke takes a phrase literally.",
}


def _joke_answers(joke: tuple[str, str, str]) -> tuple[str, str]:
    """Two explanations of a training joke: the mechanism named first (PaLM's style), and plain."""
    _, kind, expl = joke
    return f"{_KIND_SENTENCE[kind]} {expl}", expl


# ==================================================================================================
# Builders
# ==================================================================================================


def build_sft(seed: int = 0, *, schema_dir: str | Path | None = None) -> list[dict]:
    """SFT rows: ``{"messages": [user, assistant], "task", "schema", "split"}`` (shuffled, seeded)."""
    plan = _plan(seed, _schema_dir_arg(schema_dir))
    rows = []

    def add(task: str, item: Any, answer: str, schema: str | None = None) -> None:
        user = _user_text(task, item, plan)
        rows.append({"messages": [*_user(user), *_assistant(answer)], "task": task, "schema": schema,
                     "split": "eval" if user in plan.eval_prompts else "train"})

    for case in plan.sql["sft"]:
        add("sql", case, case.gold + ";", case.schema)
    for title, label in plan.titles["sft"]:
        add("clickbait", (title, label), label)
    for joke in plan.jokes["train"]:
        for answer in _joke_answers(joke):
            add("joke", joke, answer)
    for q, a in plan.general["sft"]:
        add("general", (q, a), a)
    random.Random(f"{seed}:sft-order").shuffle(rows)
    return rows


def build_preferences(seed: int = 0, *, schema_dir: str | Path | None = None) -> list[dict]:
    """Preference pairs over the SFT prompts: chosen is right, rejected shows one named failure mode."""
    plan = _plan(seed, _schema_dir_arg(schema_dir))
    rng = random.Random(f"{seed}:preferences")
    rows = []

    def add(task: str, item: Any, chosen: str, rejected: str, failure: str, schema: str | None = None) -> None:
        user = _user_text(task, item, plan)
        rows.append({"prompt": _user(user), "chosen": _assistant(chosen), "rejected": _assistant(rejected),
                     "task": task, "failure": failure, "schema": schema,
                     "split": "eval" if user in plan.eval_prompts else "train"})

    # SQL: wrong queries that run and give a different result; a few right queries buried in chatter.
    options: dict[str, list[tuple[_Case, str]]] = defaultdict(list)
    for case in plan.sql["sft"]:
        setup = schema_path(case.schema, plan.schema_dir)
        gold_rows = run_sql(setup, case.gold, read="duckdb").rows
        for failure, query in _check_rejected(case, setup, gold_rows).items():
            options[failure].append((case, query))
    uses: Counter = Counter()
    for failure in SQL_FAILURES:
        opts = options[failure]
        rng.shuffle(opts)
        opts.sort(key=lambda o: uses[o[0].question])  # stable: spread the pairs over many questions
        for case, query in opts[: N_PREF_SQL[failure]]:
            uses[case.question] += 1
            add("sql", case, case.gold + ";", query + ";", failure, case.schema)
    cases = sorted(plan.sql["sft"], key=lambda c: (uses[c.question], rng.random()))
    for case in cases[: N_PREF_SQL["rambling"]]:
        text = f"{_pick(rng, _SQL_RAMBLE_OPEN)}\n\n{case.gold};\n\n{_pick(rng, _SQL_RAMBLE_CLOSE)}"
        add("sql", case, case.gold + ";", text, "rambling", case.schema)

    # Clickbait: the other label, an answer that is not yes/no, the right answer inside a paragraph.
    titles = list(plan.titles["sft"])
    counts = Counter()
    order = {f: rng.sample(titles, len(titles)) for f in N_PREF_CLICKBAIT}
    for failure, quota in N_PREF_CLICKBAIT.items():
        for title, label in order[failure][:quota]:
            if failure == "wrong_label":
                rejected = "no" if label == "yes" else "yes"
            elif failure == "not_yes_no":
                rejected = _pick(rng, _NOT_YES_NO)
            else:
                rejected = _pick(rng, _RAMBLE_YES if label == "yes" else _RAMBLE_NO)
            add("clickbait", (title, label), label, rejected, failure)
            counts[failure] += 1

    # Jokes: a vague non-explanation, and a restatement of the joke.
    for i, joke in enumerate(plan.jokes["train"]):
        answers = _joke_answers(joke)
        add("joke", joke, answers[i % 2], _pick(rng, _VAGUE), "vague_explanation")
        restated = joke[0][0].lower() + joke[0][1:]
        add("joke", joke, answers[(i + 1) % 2], f"The joke says that {restated} That is why it is funny.",
            "vague_explanation")

    # General: the answer wrapped in filler.
    for q, a in rng.sample(plan.general["sft"], N_PREF_GENERAL_RAMBLING):
        add("general", (q, a), a, f"{_pick(rng, _RAMBLE_OPEN)} {a} {_pick(rng, _RAMBLE_CLOSE)}", "rambling")
    rng.shuffle(rows)
    return rows


def build_ppo_prompts(seed: int = 0, *, schema_dir: str | Path | None = None) -> tuple[list[dict], list[dict]]:
    """``(train, heldout)`` PPO prompts ``{"prompt": [user], "task", "schema", "reference"}``.

    SQL questions and clickbait titles of both files are fresh (in neither sft.jsonl nor
    preferences.jsonl); training jokes and general questions come from the SFT set; the held-out
    file's jokes and general questions are used nowhere else.
    """
    plan = _plan(seed, _schema_dir_arg(schema_dir))
    rng = random.Random(f"{seed}:ppo")

    def row(task: str, item: Any, reference: str, schema: str | None = None) -> dict:
        return {"prompt": _user(_user_text(task, item, plan)), "task": task, "schema": schema, "reference": reference}

    out: dict[str, list[dict]] = {}
    for part in ("ppo", "heldout"):
        rows = [row("sql", c, c.gold + ";", c.schema) for c in plan.sql[part]]
        rows += [row("clickbait", t, t[1]) for t in plan.titles[part]]
        if part == "ppo":
            rows += [row("joke", j, j[2]) for j in rng.sample(plan.jokes["train"], N_PPO["joke"])]
            rows += [row("general", g, g[1]) for g in rng.sample(plan.general["sft"], N_PPO["general"])]
        else:
            rows += [row("joke", j, j[2]) for j in plan.jokes["heldout"]]
            rows += [row("general", g, g[1]) for g in plan.general["heldout"]]
        rng.shuffle(rows)
        out[part] = rows
    return out["ppo"], out["heldout"]


def build_all(out_dir: str | Path | None = None, seed: int = 0) -> dict[str, Path]:
    """Write the schemas and the four JSONL files (each atomically) into ``out_dir`` (default
    ``data/train/``); return ``{file name: path}``."""
    out = Path(out_dir) if out_dir is not None else train_dir()
    written = {f"{SCHEMA_DIR}/{p.name}": p for p in build_schemas(out).values()}
    sdir = out / SCHEMA_DIR
    written[SFT_FILE] = write_jsonl(out / SFT_FILE, build_sft(seed, schema_dir=sdir))
    written[PREFERENCES_FILE] = write_jsonl(out / PREFERENCES_FILE, build_preferences(seed, schema_dir=sdir))
    train, heldout = build_ppo_prompts(seed, schema_dir=sdir)
    written[PPO_FILE] = write_jsonl(out / PPO_FILE, train)
    written[PPO_HELDOUT_FILE] = write_jsonl(out / PPO_HELDOUT_FILE, heldout)
    return written


# ==================================================================================================
# Loading and validating (file:line: field errors)
# ==================================================================================================


def _messages(*, last: str | None = None, only: str | None = None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        for i, m in enumerate(value):
            if not isinstance(m, dict):
                return f"message {i} is a {type(m).__name__}, not an object with role and content"
            role = m.get("role")
            if role not in ROLES:
                return f"message {i} has role {role!r}, not one of {list(ROLES)}"
            content = m.get("content")
            if not isinstance(content, str):
                return f"message {i} content must be a string, got {type(content).__name__}"
            if not content.strip():
                return f"message {i} content is empty"
            if only and role != only:
                return f"message {i} has role {role!r}; every message here must be {only!r}"
        if last and value[-1]["role"] != last:
            return f"the last message must have role {last!r}, got {value[-1]['role']!r}"
        return None

    return check


_META_FIELDS = [
    Field("task", required=False, choices=TASKS),
    Field("schema", required=False),
    Field("split", required=False, choices=SPLITS),
]


def load_sft(path: str | Path) -> list[dict]:
    """Read and validate SFT rows (``messages`` ending with an assistant turn); DataError otherwise."""
    return read_jsonl(path, [Field("messages", list, check=_messages(last="assistant")), *_META_FIELDS])


def load_preferences(path: str | Path) -> list[dict]:
    """Read and validate preference rows: ``prompt`` (ending with a user turn), ``chosen`` and
    ``rejected`` (assistant turns), optional ``failure`` (one of :data:`FAILURES`)."""
    return read_jsonl(path, [
        Field("prompt", list, check=_messages(last="user")),
        Field("chosen", list, check=_messages(only="assistant")),
        Field("rejected", list, check=_messages(only="assistant")),
        Field("failure", required=False, choices=FAILURES),
        *_META_FIELDS,
    ])


def load_ppo_prompts(path: str | Path) -> list[dict]:
    """Read and validate PPO prompt rows (``prompt`` ending with a user turn)."""
    return read_jsonl(path, [Field("prompt", list, check=_messages(last="user")),
                             Field("reference", required=False), *_META_FIELDS])


# ==================================================================================================
# Hub data sets (connected machines): map them to the same formats
# ==================================================================================================

_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")


def _hh_turns(text: str) -> list[dict]:
    if not isinstance(text, str):
        raise ValueError(f"expected a transcript string, got {type(text).__name__}")
    parts = _HH_TURN.split(text if text.startswith("\n\n") else "\n\n" + text)
    if parts[0].strip() or len(parts) < 3:
        raise ValueError("not an hh-rlhf transcript ('\\n\\nHuman: ... \\n\\nAssistant: ...')")
    return [{"role": "user" if who == "Human" else "assistant", "content": said.strip()}
            for who, said in zip(parts[1::2], parts[2::2], strict=True)]


def from_hh_rlhf(row: dict) -> dict:
    """An Anthropic/hh-rlhf row (``chosen``/``rejected`` transcripts sharing their start) as a
    preference row with an explicit prompt. Raises ValueError for a row that does not fit."""
    chosen, rejected = _hh_turns(row["chosen"]), _hh_turns(row["rejected"])
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise ValueError("a transcript does not end with an Assistant turn")
    if chosen[:-1] != rejected[:-1]:
        raise ValueError("chosen and rejected transcripts differ before their last turn")
    prompt = chosen[:-1]
    if not prompt or prompt[-1]["role"] != "user":
        raise ValueError("no Human turn before the answers")
    if not chosen[-1]["content"] or not rejected[-1]["content"]:
        raise ValueError("an empty answer")
    return {"prompt": prompt, "chosen": [chosen[-1]], "rejected": [rejected[-1]], "task": "general"}


def from_stack_exchange_paired(row: dict) -> dict:
    """A lvwerra/stack-exchange-paired row: ``question``, ``response_j`` (preferred), ``response_k``."""
    texts = [row.get(k) for k in ("question", "response_j", "response_k")]
    if not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError("question, response_j and response_k must be non-empty strings")
    q, j, k = (t.strip() for t in texts)
    return {"prompt": _user(q), "chosen": _assistant(j), "rejected": _assistant(k), "task": "general"}


def from_alpaca(row: dict) -> dict:
    """A tatsu-lab/alpaca row (``instruction``, optional ``input``, ``output``) as SFT messages."""
    instruction, extra, output = row.get("instruction"), row.get("input") or "", row.get("output")
    if not (isinstance(instruction, str) and instruction.strip() and isinstance(output, str) and output.strip()):
        raise ValueError("instruction and output must be non-empty strings")
    user = instruction.strip() + (f"\n\n{extra.strip()}" if extra.strip() else "")
    return {"messages": [*_user(user), *_assistant(output.strip())], "task": "general"}


HUB_DATASETS: dict[str, tuple[str, Callable[[dict], dict]]] = {
    "Anthropic/hh-rlhf": ("preferences", from_hh_rlhf),
    "lvwerra/stack-exchange-paired": ("preferences", from_stack_exchange_paired),
    "tatsu-lab/alpaca": ("sft", from_alpaca),
}


def load_hub_dataset(name: str, split: str = "train", *, limit: int | None = None, **load_kwargs: Any):
    """``datasets.load_dataset(name, split=...)`` mapped to our SFT or preference format (a
    ``datasets.Dataset``); rows the format function rejects are dropped. Needs the network (or the
    HF cache). ``limit`` keeps the first rows (with ``streaming=True`` only those are downloaded);
    other keywords go to ``load_dataset`` (e.g. ``data_dir="data/rl"`` for stack-exchange-paired)."""
    if name not in HUB_DATASETS:
        raise ValueError(f"unknown hub data set {name!r}; known: {sorted(HUB_DATASETS)}")
    import datasets

    _, convert = HUB_DATASETS[name]
    if load_kwargs.get("streaming"):
        stream = datasets.load_dataset(name, split=split, **load_kwargs)
        rows = []
        for i, raw in enumerate(stream):
            if limit is not None and i >= limit:
                break
            try:
                rows.append(convert(raw))
            except (ValueError, KeyError, TypeError):
                continue
        return datasets.Dataset.from_list(rows)
    ds = datasets.load_dataset(name, split=split if limit is None else f"{split}[:{limit}]", **load_kwargs)

    def ok(raw: dict) -> bool:
        try:
            convert(raw)
        except (ValueError, KeyError, TypeError):
            return False
        return True

    ds = ds.filter(ok)
    return ds.map(convert, remove_columns=ds.column_names)


# ==================================================================================================
# Summary (for data/train/README.md) and command line
# ==================================================================================================


def counts(out_dir: str | Path | None = None) -> dict[str, Counter]:
    """Rows per file, per task, per failure mode and per split of the files in ``out_dir``."""
    d = Path(out_dir) if out_dir is not None else train_dir()
    result: dict[str, Counter] = {}
    for name, loader in ((SFT_FILE, load_sft), (PREFERENCES_FILE, load_preferences), (PPO_FILE, load_ppo_prompts),
                         (PPO_HELDOUT_FILE, load_ppo_prompts)):
        c: Counter = Counter()
        for row in loader(d / name):
            c["rows"] += 1
            c[f"task:{row.get('task')}"] += 1
            if row.get("failure"):
                c[f"failure:{row['task']}:{row['failure']}"] += 1
            if row.get("split"):
                c[f"split:{row['split']}"] += 1
            if row.get("schema"):
                c[f"schema:{row['schema']}"] += 1
        result[name] = c
    return result


def counts_markdown(out_dir: str | Path | None = None) -> str:
    """The counts tables of data/train/README.md (a test checks that the README has them)."""
    c = counts(out_dir)
    lines = ["| file | rows | sql | clickbait | joke | general | train | eval |", "|---|---|---|---|---|---|---|---|"]
    for name, cnt in c.items():
        tasks = " | ".join(str(cnt[f"task:{t}"]) for t in TASKS)
        split = f"{cnt['split:train']} | {cnt['split:eval']}" if cnt["split:train"] else "- | -"
        lines.append(f"| `{name}` | {cnt['rows']} | {tasks} | {split} |")
    lines += ["", "| preference task | failure mode | pairs |", "|---|---|---|"]
    pref = c[PREFERENCES_FILE]
    for key in sorted(k for k in pref if k.startswith("failure:")):
        _, task, failure = key.split(":")
        lines.append(f"| {task} | `{failure}` | {pref[key]} |")
    lines += ["", "| SQL schema | sft | preferences | ppo | ppo heldout |", "|---|---|---|---|---|"]
    for s in SQL_SCHEMAS:
        lines.append(f"| `{s}` | " + " | ".join(str(c[n][f"schema:{s}"]) for n in c) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -c "from llamalab.trainsets import main; main()" [--out DIR] [--seed N]``."""
    import argparse

    parser = argparse.ArgumentParser(description="Build the llamalab training data (data/train/).")
    parser.add_argument("--out", default=None, help="output directory (default: data/train/)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, path in build_all(args.out, seed=args.seed).items():
        print(f"wrote {name}: {path}")
    print(counts_markdown(args.out))
    return 0
