"""Training data (data/train/): formats, probe-format prompts, SQL that runs, disjointness from the
probe sets, held-out PPO prompts, splits, reproducibility, loaders and hub format functions."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from llamalab import paths
from llamalab import trainsets as ts
from llamalab.data import DataError, write_jsonl
from llamalab.probes import clickbait, jokes
from llamalab.probes import sql as sql_probe

TRAIN = paths.data_dir() / "train"
PROBES = paths.data_dir() / "probes"
FILES = ("sft.jsonl", "preferences.jsonl", "ppo_prompts.jsonl", "ppo_prompts_heldout.jsonl")
ALLOWED_SCHEMAS = {"events", "shop", "flights", "sensors", "issues"}


def norm(text: str) -> str:
    """Independent of the code under test: lowercase, drop punctuation and whitespace."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


def user_text(row: dict) -> str:
    msgs = row["messages"] if "messages" in row else row["prompt"]
    return next(m["content"] for m in msgs if m["role"] == "user")


def answer(row: dict) -> str:
    return row["messages"][-1]["content"]


def item(row: dict) -> str | None:
    """Title, joke or question inside a probe-format user turn, parsed here (not by trainsets)."""
    text = user_text(row)
    pattern = {"clickbait": r"^5\) (.*)$", "joke": r"^\(3\) (.*)$", "sql": r"^-- We want to (.*)$"}.get(row["task"])
    if pattern is None:
        return None
    found = re.findall(pattern, text, re.M)
    assert len(found) == 1, text
    return found[0]


@pytest.fixture(scope="module")
def data() -> dict[str, list[dict]]:
    return {
        "sft": ts.load_sft(TRAIN / "sft.jsonl"),
        "pref": ts.load_preferences(TRAIN / "preferences.jsonl"),
        "ppo": ts.load_ppo_prompts(TRAIN / "ppo_prompts.jsonl"),
        "heldout": ts.load_ppo_prompts(TRAIN / "ppo_prompts_heldout.jsonl"),
    }


@pytest.fixture(scope="module")
def probe_items() -> dict[str, set[str]]:
    def rows(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    palm_exemplar_jokes = re.findall(r"^\(\d\) (.*)$", jokes.EXEMPLAR, re.M)
    assert len(palm_exemplar_jokes) == 2
    return {
        "clickbait": {norm(r["title"]) for r in rows(PROBES / "clickbait.jsonl")}
        | {norm(t) for t, _ in clickbait.EXEMPLARS},
        "joke": {norm(r["joke"]) for r in rows(PROBES / "jokes.jsonl")} | {norm(j) for j in palm_exemplar_jokes},
        "sql": {norm(r["question"]) for r in rows(PROBES / "sql" / "questions.jsonl")},
        "gold_sql": {norm(r["gold_sql"]) for r in rows(PROBES / "sql" / "questions.jsonl")},
    }


def all_rows(data: dict[str, list[dict]]):
    for name, rows in data.items():
        for row in rows:
            yield name, row


def probe_overlaps(data: dict[str, list[dict]], probe_items: dict[str, set[str]]) -> list[str]:
    found = []
    for name, row in all_rows(data):
        text = item(row)
        if text is not None and norm(text) in probe_items[row["task"]]:
            found.append(f"{name}: {text}")
        if row["task"] == "sql":
            gold = answer(row) if name == "sft" else row.get("reference") or row["chosen"][0]["content"]
            if norm(gold.rstrip(";")) in probe_items["gold_sql"]:
                found.append(f"{name}: probe gold query {gold}")
    return found


# -- sizes and mix ---------------------------------------------------------------------------------


def test_sizes_and_task_mix(data):
    assert len(data["sft"]) >= 1000
    assert len(data["pref"]) >= 1000
    assert len(data["ppo"]) >= 300
    assert len(data["heldout"]) >= 60
    share = {t: n / len(data["sft"]) for t, n in Counter(r["task"] for r in data["sft"]).items()}
    assert 0.40 <= share["sql"] <= 0.50, share
    assert 0.20 <= share["clickbait"] <= 0.30, share
    assert 0.05 <= share["joke"] <= 0.15, share
    assert 0.15 <= share["general"] <= 0.25, share
    for name in ("pref", "ppo", "heldout"):
        tasks = Counter(r["task"] for r in data[name])
        assert set(tasks) == set(ts.TASKS), (name, tasks)
        assert (tasks["sql"] + tasks["clickbait"]) / len(data[name]) >= 0.7, (name, tasks)


def test_sft_examples_are_unique_and_conversational(data):
    pairs = [(user_text(r), answer(r)) for r in data["sft"]]
    assert len(pairs) == len(set(pairs))
    for row in data["sft"]:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert (row["schema"] is not None) == (row["task"] == "sql")


def test_at_least_40_distinct_training_jokes(data):
    sft_jokes = {item(r) for r in data["sft"] if r["task"] == "joke"}
    assert len(sft_jokes) >= 40
    for row in data["sft"]:
        if row["task"] == "joke":
            sentences = re.findall(r"[.!?](?:\s|$)", answer(row))
            assert 1 <= len(sentences) <= 3, answer(row)


# -- the probe's own prompt format -----------------------------------------------------------------


def test_user_turns_are_the_probe_prompts(data):
    for name, row in all_rows(data):
        text, task = user_text(row), row["task"]
        if task == "clickbait":
            assert text == clickbait.build_prompt({"title": item(row)}), name
        elif task == "joke":
            assert text == jokes.build_prompt({"joke": item(row)}), name
        elif task == "sql":
            db = ts.schema_path(row["schema"])
            assert text == sql_probe.build_prompt({"question": item(row), "_db_path": str(db)}), name
            tables = sql_probe.get_box(db).tables()
            assert text.startswith("\n".join(sql_probe.schema_lines(tables)) + "\n-- We want to ")
            assert text.endswith("\n-- SQL query for this is:\n")
        else:
            assert "Clickbait:" not in text and "-- SQL query" not in text


def test_clickbait_answers_are_yes_or_no_and_balanced(data):
    for name in ("sft", "ppo", "heldout"):
        labels = [answer(r) if name == "sft" else r["reference"] for r in data[name] if r["task"] == "clickbait"]
        assert set(labels) == {"yes", "no"}
        assert 0.45 <= labels.count("yes") / len(labels) <= 0.55, name


def test_no_single_word_predicts_the_clickbait_label(data):
    rows = [(set(re.findall(r"[a-z0-9']+", item(r).lower())), answer(r) == "yes")
            for r in data["sft"] if r["task"] == "clickbait"]
    vocab = set().union(*(words for words, _ in rows))
    for word in vocab:
        agree = sum((word in words) == label for words, label in rows) / len(rows)
        assert max(agree, 1 - agree) <= 0.8, word


def test_examples_are_short(data):
    for row in data["sft"]:
        assert len(user_text(row)) + len(answer(row)) <= 1400
    for row in data["pref"]:
        longest = max(len(row["chosen"][0]["content"]), len(row["rejected"][0]["content"]))
        assert len(user_text(row)) + longest <= 1600


def test_token_lengths_with_the_default_tokenizer(data):
    tok_dir = paths.models_cache() / "smollm2-135m-instruct"
    if not (tok_dir / "tokenizer.json").is_file():
        pytest.skip("the default model's tokenizer is not in the cache")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    lengths = [len(tok(user_text(r) + answer(r))["input_ids"]) for r in data["sft"]]
    assert max(lengths) < 400


# -- SQL -------------------------------------------------------------------------------------------


def informative(rows) -> bool:
    return bool(rows) and not (len(rows) == 1 and all(v is None or v == 0 for v in rows[0]))


def test_every_sql_answer_runs_and_returns_rows(data):
    queries = [(r["schema"], answer(r)) for r in data["sft"] if r["task"] == "sql"]
    queries += [(r["schema"], r["reference"]) for n in ("ppo", "heldout") for r in data[n] if r["task"] == "sql"]
    for schema, query in queries:
        assert schema in ALLOWED_SCHEMAS
        assert query.endswith(";") and query.count(";") == 1, query
        assert sql_probe.extract_sql(query) == query[:-1]
        res = sql_probe.get_box(ts.schema_path(schema)).run(query)  # read as the probe reads an answer
        assert res.ok, (query, res.error)
        assert informative(res.rows), (query, res.rows)


def test_sql_rejected_answers_parse_but_give_another_result(data):
    pairs = [r for r in data["pref"] if r["task"] == "sql"]
    by_failure = Counter(r["failure"] for r in pairs)
    assert set(by_failure) == {*ts.SQL_FAILURES, "rambling"}
    assert min(by_failure.values()) >= 50, by_failure
    for row in pairs:
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        box = sql_probe.get_box(ts.schema_path(row["schema"]))
        gold = box.run(chosen)
        assert gold.ok and informative(gold.rows), chosen
        if row["failure"] == "rambling":
            assert sql_probe.extract_sql(rejected) == chosen[:-1]
            assert len(rejected) > len(chosen) + 100
            continue
        wrong = box.run(rejected)
        assert wrong.ok, (rejected, wrong.error)
        ordered = sql_probe.is_ordered(chosen.rstrip(";"))
        assert not sql_probe.results_match(wrong.rows, gold.rows, ordered), (row["failure"], rejected)


def test_sql_failure_modes_look_like_their_names(data):
    for row in data["pref"]:
        chosen, rejected, failure = row["chosen"][0]["content"], row["rejected"][0]["content"], row["failure"]
        if failure == "count_star_for_users":
            assert "COUNT(DISTINCT" in chosen and "COUNT(*)" in rejected
        elif failure == "missing_time_window":
            assert "NOW()" in chosen or "CURRENT_DATE" in chosen
            assert rejected.count("NOW()") + rejected.count("CURRENT_DATE") < chosen.count("NOW()") + chosen.count("CURRENT_DATE")
        elif failure == "hardcoded_dates":
            assert re.search(r"(TIMESTAMP|DATE) '\d{4}-\d\d-\d\d", rejected) and "NOW()" not in rejected
        elif failure == "row_per_user":
            assert "GROUP BY" in rejected and "GROUP BY" not in chosen


def test_schemas_never_include_the_probe_library_database(data):
    for _, row in all_rows(data):
        assert row.get("schema") in (*ALLOWED_SCHEMAS, None)
        text = user_text(row)
        for table in ("books", "members", "loans"):
            assert f"table `{table}`" not in text
    for path in (TRAIN / "schemas").glob("*.sql"):
        created = set(re.findall(r"CREATE TABLE (\w+)", path.read_text(encoding="utf-8")))
        assert not created & {"books", "members", "loans"}, path
    assert {p.stem for p in (TRAIN / "schemas").glob("*.sql")} == ALLOWED_SCHEMAS - {"events"}


def test_training_schemas_have_a_reference_time():
    for name in ALLOWED_SCHEMAS:
        box = sql_probe.get_box(ts.schema_path(name))
        assert box.reference_time == ts.REFERENCE_TIMES[name]
        assert box.tables()


# -- disjointness ----------------------------------------------------------------------------------


def test_no_probe_title_question_joke_or_gold_query_in_training_data(data, probe_items):
    assert probe_overlaps(data, probe_items) == []


def test_the_overlap_check_finds_a_probe_item(data, probe_items):
    probe_title = next(iter(json.loads(line) for line in (PROBES / "clickbait.jsonl").open()))["title"]
    planted = {"sft": [{"messages": [{"role": "user", "content": clickbait.build_prompt({"title": probe_title.upper() + "!"})},
                                     {"role": "assistant", "content": "yes"}], "task": "clickbait"}]}
    assert len(probe_overlaps(planted, probe_items)) == 1


def test_heldout_prompts_are_used_nowhere_else(data):
    used = {user_text(r) for n in ("sft", "pref", "ppo") for r in data[n]}
    used_items = {norm(item(r)) for n in ("sft", "pref", "ppo") for r in data[n] if item(r)}
    heldout = [user_text(r) for r in data["heldout"]]
    assert len(heldout) == len(set(heldout))
    assert not set(heldout) & used
    assert not {norm(item(r)) for r in data["heldout"] if item(r)} & used_items


def test_ppo_sql_and_clickbait_prompts_are_fresh(data):
    seen = {user_text(r) for n in ("sft", "pref") for r in data[n]}
    for row in data["ppo"]:
        if row["task"] in ("sql", "clickbait"):
            assert user_text(row) not in seen


def test_preference_prompts_come_from_the_sft_prompts(data):
    sft_prompts = {user_text(r) for r in data["sft"]}
    assert all(user_text(r) in sft_prompts for r in data["pref"])


# -- preference pairs of the other tasks -----------------------------------------------------------


def test_clickbait_pairs(data):
    for row in data["pref"]:
        if row["task"] != "clickbait":
            continue
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert chosen in ("yes", "no")
        if row["failure"] == "wrong_label":
            assert {chosen, rejected} == {"yes", "no"}
        elif row["failure"] == "not_yes_no":
            assert clickbait.parse_answer(rejected) is None
        else:
            assert row["failure"] == "rambling"
            assert clickbait.parse_answer(rejected) == chosen and not clickbait.format_ok(rejected)


def test_joke_and_general_pairs(data):
    for row in data["pref"]:
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        if row["task"] == "joke":
            assert row["failure"] == "vague_explanation"
            assert jokes.proxy_overlap(chosen, rejected) < 0.5, rejected
        elif row["task"] == "general":
            assert row["failure"] == "rambling"
            assert chosen in rejected and len(rejected) > len(chosen) + 100


# -- splits ----------------------------------------------------------------------------------------


def test_eval_split_is_about_ten_percent_and_by_prompt(data):
    split_of: dict[str, set[str]] = {}
    for name in ("sft", "pref"):
        for task in ts.TASKS:
            rows = [r for r in data[name] if r["task"] == task]
            share = sum(r["split"] == "eval" for r in rows) / len(rows)
            assert 0.05 <= share <= 0.16, (name, task, share)
        for row in data[name]:
            split_of.setdefault(user_text(row), set()).add(row["split"])
    assert all(len(s) == 1 for s in split_of.values())


# -- reproducibility and README --------------------------------------------------------------------


def test_build_all_reproduces_the_committed_files(tmp_path):
    written = ts.build_all(tmp_path)
    assert set(written) == {*FILES, *(f"schemas/{s}.sql" for s in ALLOWED_SCHEMAS - {'events'})}
    for rel in written:
        assert (tmp_path / rel).read_bytes() == (TRAIN / rel).read_bytes(), f"{rel} differs: rerun build_all()"
    assert not list(tmp_path.rglob("*.tmp"))


def test_readme_has_the_current_counts_and_the_hub_names():
    readme = (TRAIN / "README.md").read_text(encoding="utf-8")
    assert ts.counts_markdown() in readme
    for name in ts.HUB_DATASETS:
        assert name in readme
    assert "build_all()" in readme


# -- loaders ---------------------------------------------------------------------------------------


def write(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


GOOD_PREF = {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
             "rejected": [{"role": "assistant", "content": "b"}], "task": "general", "failure": "rambling"}
GOOD_SFT = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "task": "general"}


def test_loaders_accept_good_rows(tmp_path):
    assert ts.load_preferences(write(tmp_path / "p.jsonl", [GOOD_PREF]))[0]["rejected"][0]["content"] == "b"
    assert ts.load_sft(write(tmp_path / "s.jsonl", [GOOD_SFT]))[0]["task"] == "general"
    assert ts.load_ppo_prompts(write(tmp_path / "q.jsonl", [{"prompt": GOOD_PREF["prompt"]}]))


def test_preference_row_without_rejected(tmp_path):
    bad = {k: v for k, v in GOOD_PREF.items() if k != "rejected"}
    path = write(tmp_path / "prefs.jsonl", [GOOD_PREF, bad])
    with pytest.raises(DataError, match=r"prefs\.jsonl:2: field 'rejected': missing"):
        ts.load_preferences(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n", encoding="utf-8")
    for loader in (ts.load_sft, ts.load_preferences, ts.load_ppo_prompts):
        with pytest.raises(DataError, match=r"empty\.jsonl.*empty"):
            loader(path)


@pytest.mark.parametrize(
    "message, words",
    [
        ({"role": "bot", "content": "a"}, "role 'bot'"),
        ({"role": "assistant", "content": 42}, "content must be a string, got int"),
        ({"role": "assistant", "content": ["a"]}, "content must be a string, got list"),
        ("hello", "not an object"),
    ],
)
def test_bad_messages_name_file_line_and_field(tmp_path, message, words):
    sft_row = {"messages": [{"role": "user", "content": "q"}, message]}
    with pytest.raises(DataError, match=rf"s\.jsonl:2: field 'messages': message 1 .*{re.escape(words)}"):
        ts.load_sft(write(tmp_path / "s.jsonl", [GOOD_SFT, sft_row]))
    pref_row = {**GOOD_PREF, "chosen": [message]}
    with pytest.raises(DataError, match=r"p\.jsonl:1: field 'chosen': message 0 "):
        ts.load_preferences(write(tmp_path / "p.jsonl", [pref_row]))


def test_structural_errors(tmp_path):
    ends_with_user = {"messages": [{"role": "user", "content": "q"}]}
    with pytest.raises(DataError, match=r"s\.jsonl:1: field 'messages': the last message must have role 'assistant'"):
        ts.load_sft(write(tmp_path / "s.jsonl", [ends_with_user]))
    user_in_chosen = {**GOOD_PREF, "chosen": [{"role": "user", "content": "a"}]}
    with pytest.raises(DataError, match=r"field 'chosen'"):
        ts.load_preferences(write(tmp_path / "p.jsonl", [user_in_chosen]))
    with pytest.raises(DataError, match=r"field 'failure'"):
        ts.load_preferences(write(tmp_path / "p.jsonl", [{**GOOD_PREF, "failure": "bad_vibes"}]))
    with pytest.raises(DataError, match=r"field 'split'"):
        ts.load_sft(write(tmp_path / "s.jsonl", [{**GOOD_SFT, "split": "test"}]))


# -- hub format functions --------------------------------------------------------------------------

HH_ROW = {
    "chosen": "\n\nHuman: How do I boil an egg?\n\nAssistant: Put it in boiling water for 8 minutes."
              "\n\nHuman: And soft?\n\nAssistant: About 6 minutes.",
    "rejected": "\n\nHuman: How do I boil an egg?\n\nAssistant: Put it in boiling water for 8 minutes."
                "\n\nHuman: And soft?\n\nAssistant: Eggs are laid by chickens.",
}


def test_from_hh_rlhf():
    row = ts.from_hh_rlhf(HH_ROW)
    assert [m["role"] for m in row["prompt"]] == ["user", "assistant", "user"]
    assert row["prompt"][0]["content"] == "How do I boil an egg?"
    assert row["chosen"] == [{"role": "assistant", "content": "About 6 minutes."}]
    assert row["rejected"] == [{"role": "assistant", "content": "Eggs are laid by chickens."}]
    with pytest.raises(ValueError, match="differ"):
        ts.from_hh_rlhf({**HH_ROW, "rejected": "\n\nHuman: Other question\n\nAssistant: x"})
    with pytest.raises(ValueError):
        ts.from_hh_rlhf({"chosen": "no turns here", "rejected": "none"})


def test_from_stack_exchange_paired_and_alpaca():
    row = ts.from_stack_exchange_paired({"qid": 1, "question": "Why?", "response_j": "Because.", "response_k": "No."})
    assert row["prompt"] == [{"role": "user", "content": "Why?"}]
    assert row["chosen"][0]["content"] == "Because." and row["rejected"][0]["content"] == "No."
    with pytest.raises(ValueError):
        ts.from_stack_exchange_paired({"question": "Why?", "response_j": "", "response_k": "No."})
    a = ts.from_alpaca({"instruction": "Add the numbers.", "input": "2, 3", "output": "5"})
    assert a["messages"] == [{"role": "user", "content": "Add the numbers.\n\n2, 3"},
                             {"role": "assistant", "content": "5"}]
    assert ts.from_alpaca({"instruction": "Say hi.", "input": "", "output": "Hi"})["messages"][0]["content"] == "Say hi."


def test_load_hub_dataset_maps_rows_and_drops_bad_ones(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(name, split, **kwargs):
        calls.append((name, split, kwargs))
        return datasets.Dataset.from_list([HH_ROW, {"chosen": "broken", "rejected": "broken"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = ts.load_hub_dataset("Anthropic/hh-rlhf", "test", limit=10)
    assert calls == [("Anthropic/hh-rlhf", "test[:10]", {})]
    assert len(ds) == 1 and ds[0]["chosen"] == [{"role": "assistant", "content": "About 6 minutes."}]
    assert ts.load_preferences(write_jsonl(tmp_path / "hh.jsonl", list(ds)))  # our loader accepts the result
    with pytest.raises(ValueError, match="unknown hub data set"):
        ts.load_hub_dataset("someone/else")


def test_module_has_no_main_block():
    assert "__main__" not in Path(ts.__file__).read_text(encoding="utf-8")
