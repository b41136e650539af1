"""Probe 2 (clickbait): data, exact few-shot prompt, answer parsing, format check and summary."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from llamalab import paths
from llamalab.data import DataError
from llamalab.probes import clickbait

SEED = Path(__file__).resolve().parents[2] / "shared" / "seed_probes.md"

# Literal copy of the prompt block of seed_probes.md section 2 (no trailing newline).
PROMPT_LITERAL = """I will tell whether the following news titles are clickbait:
1) The WORST care homes in England: Interactive map reveals the lowest-rated 2,530 residences - so is there one near you?
Clickbait: yes
2) Netflix's top 10 most-watched movies of all time
Clickbait: yes
3) Peering Through the Fog of Inflation
Clickbait: no
4) You'll never believe which TV cook this cheeky chap grew up to be
Clickbait: yes
5) <title>
Clickbait:"""


def seed_block(section: str) -> str | None:
    """The first fenced code block after the heading ``## <section>`` in seed_probes.md, if present."""
    if not SEED.is_file():
        return None
    text = SEED.read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(section)}.*?^```[^\n]*\n(.*?)\n```", text, re.S | re.M)
    return m.group(1) if m else None


def norm(title: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", title.lower()).split())


@pytest.fixture(scope="module")
def items():
    return clickbait.load_items(paths.data_dir() / clickbait.DEFAULT_DATA)


# --- prompt ---------------------------------------------------------------------------------------


def test_prompt_matches_literal_copy_byte_for_byte():
    title = "Council approves plans for 300 homes on former factory site"
    assert clickbait.build_prompt({"title": title, "label": "no"}) == PROMPT_LITERAL.replace("<title>", title)


def test_prompt_matches_seed_probes_md_byte_for_byte():
    block = seed_block("2.")
    if block is None:
        pytest.skip("../shared/seed_probes.md not available")
    assert block == PROMPT_LITERAL  # the literal copy above is faithful
    title = "Scientists can't explain THIS - and you'll never guess why"
    prompt = clickbait.build_prompt({"title": title, "label": "yes"})
    assert prompt == block.replace("<title>", title)
    assert prompt.endswith("\n5) " + title + "\nClickbait:")


def test_few_shot_constants():
    assert clickbait.FEW_SHOT == PROMPT_LITERAL.split("5) <title>")[0]
    assert [label for _, label in clickbait.EXEMPLARS] == ["yes", "yes", "no", "yes"]


# --- data -----------------------------------------------------------------------------------------


def test_data_counts_and_balance(items):
    assert len(items) >= 150
    counts = Counter(x["label"] for x in items)
    assert set(counts) == {"yes", "no"}
    assert 0.40 <= counts["yes"] / len(items) <= 0.60
    assert all(re.fullmatch(r"cb-\d{3}", x["id"]) for x in items)


def test_many_topics_each_with_both_labels(items):
    by_topic: dict[str, Counter] = {}
    for x in items:
        by_topic.setdefault(x["topic"], Counter())[x["label"]] += 1
    assert len(by_topic) >= 10
    assert sum(1 for c in by_topic.values() if c["yes"] and c["no"]) >= 10


def test_exemplar_titles_absent(items):
    exemplars = {norm(t) for t in clickbait.EXEMPLAR_TITLES}
    assert len(exemplars) == 4
    assert not exemplars & {norm(x["title"]) for x in items}


def test_titles_unique_after_normalising(items):
    keys = Counter(norm(x["title"]) for x in items)
    assert [k for k, c in keys.items() if c > 1] == []


def test_no_single_word_separates_the_labels(items):
    """Presence of any one word must not predict the label for more than 80% of titles."""
    words = [set(norm(x["title"]).split()) for x in items]
    is_yes = [x["label"] == "yes" for x in items]
    vocab = set().union(*words)
    best = max(sum((w in ws) == y for ws, y in zip(words, is_yes, strict=True)) for w in vocab)
    best = max(
        best,
        len(items) - min(sum((w in ws) == y for ws, y in zip(words, is_yes, strict=True)) for w in vocab),
    )
    assert best / len(items) <= 0.80


def test_missing_id_gets_line_number(tmp_path):
    path = tmp_path / "cb.jsonl"
    path.write_text(
        json.dumps({"title": "A", "label": "yes"})
        + "\n\n"
        + json.dumps({"id": "keep", "title": "B", "label": "no"})
        + "\n"
        + json.dumps({"title": "C", "label": "no"})
        + "\n",
        encoding="utf-8",
    )
    assert [x["id"] for x in clickbait.load_items(path)] == ["line-1", "keep", "line-4"]


@pytest.mark.parametrize(
    "row, field, message",
    [
        ({"id": "a", "title": "T", "label": "maybe"}, "label", "is not one of"),
        ({"id": "a", "title": "T", "label": "Yes"}, "label", "is not one of"),
        ({"id": "a", "title": "", "label": "no"}, "title", "is empty"),
        ({"id": "a", "label": "no"}, "title", "missing"),
        ({"id": "a", "title": "two\nlines", "label": "no"}, "title", "must be a single line"),
    ],
)
def test_bad_row_names_file_line_and_field(tmp_path, row, field, message):
    path = tmp_path / "bad.jsonl"
    good = {"id": "ok", "title": "Fine title", "label": "yes"}
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        clickbait.load_items(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:2: field '{field}': ")
    assert message in msg


def test_duplicate_id_is_an_error(tmp_path):
    path = tmp_path / "dup.jsonl"
    row = {"id": "x", "title": "T", "label": "no"}
    path.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dup\.jsonl:2: field 'id': duplicate"):
        clickbait.load_items(path)


# --- stop condition, parsing, scoring -------------------------------------------------------------


@pytest.mark.parametrize(
    "text, end",
    [
        (" yes", None),
        (" yes\n", 4),
        (" no\n6) Next title", 3),
        ("\n\n yes\n", 6),
        ("\n \n", None),
        ("", None),
        (" yes\r\n", 4),
    ],
)
def test_find_end(text, end):
    assert clickbait.find_end(text) == end


@pytest.mark.parametrize(
    "completion, answer, fmt",
    [
        ("yes", "yes", True),
        (" Yes\n", "yes", True),
        (" NO", "no", True),
        ("\n no \n6) Other", "no", True),
        ("no.", "no", False),
        ("Clickbait: yes", "yes", False),
        ("maybe", None, False),
        ("", None, False),
        ("   \n", None, False),
        ("yes or no", "yes", False),
        (" No, it is not clickbait.", "no", False),
        (" Yesterday's news", None, False),
        (" nothing", None, False),
        (" not sure\nyes", "yes", False),
    ],
)
def test_parse_and_format(completion, answer, fmt):
    assert clickbait.parse_answer(completion) == answer
    assert clickbait.format_ok(completion) is fmt
    for label in ("yes", "no"):
        s = clickbait.score_item({"id": "i", "title": "T", "label": label}, completion)
        assert s == {"answer": answer, "format_ok": fmt, "correct": answer == label}


def _scored(label: str, completion: str) -> dict:
    item = {"id": "i", "title": "T", "label": label}
    return {**item, "prompt": "p", "completion": completion, **clickbait.score_item(item, completion)}


def test_summarize_confusion_and_rates():
    scored = [
        _scored("yes", " yes"),  # TP
        _scored("yes", " yes"),  # TP
        _scored("yes", " no"),  # FN
        _scored("yes", " maybe"),  # no answer
        _scored("no", " no"),  # TN
        _scored("no", " Yes."),  # FP, bad format
        _scored("no", "Clickbait: no"),  # TN, bad format
        _scored("no", ""),  # no answer
    ]
    s = clickbait.summarize(scored)
    assert s["n"] == 8
    assert s["confusion"] == {
        "yes": {"yes": 2, "no": 1, "none": 1},
        "no": {"yes": 1, "no": 2, "none": 1},
    }
    assert s["accuracy"] == pytest.approx(4 / 8)
    assert s["format_ok_rate"] == pytest.approx(4 / 8)
    assert s["answered_rate"] == pytest.approx(6 / 8)
    assert s["precision_yes"] == pytest.approx(2 / 3)
    assert s["recall_yes"] == pytest.approx(2 / 4)


def test_summarize_edge_cases():
    s = clickbait.summarize([_scored("no", " no")])
    assert s["accuracy"] == 1.0
    assert s["precision_yes"] is None and s["recall_yes"] is None
    empty = clickbait.summarize([])
    assert empty["n"] == 0 and empty["accuracy"] is None


def test_module_contract():
    assert clickbait.NAME == "clickbait"
    assert (paths.data_dir() / clickbait.DEFAULT_DATA).is_file()
    assert 1 <= clickbait.MAX_NEW_TOKENS <= 8
