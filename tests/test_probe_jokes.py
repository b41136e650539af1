"""Probe 1 (explain a joke): data, exact PaLM prompt, stop condition and proxy scores."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llamalab import paths
from llamalab.data import DataError
from llamalab.probes import jokes

SEED = Path(__file__).resolve().parents[2] / "shared" / "seed_probes.md"

# Literal copy of the prompt block of seed_probes.md section 1 (no trailing newline).
PROMPT_LITERAL = """I will explain these jokes:
(1) The problem with kleptomaniacs is that they always take things literally.
Explanation: This joke is wordplay. Someone who "takes things literally" is someone who doesn't fully understand social cues and context, which is a negative trait. But the definition of kleptomania is someone who literally takes things.
(2) Always borrow money from a pessimist. They'll never expect it back.
Explanation: Most people expect you to pay them back when you borrow money, however a pessimist is someone who always assumes the worst, so if you borrow money from them, they will expect that you won't pay them back anyways.
(3) <joke>
Explanation:"""

PALM_JOKES = [
    "I was going to fly to visit my family on April 6th. My mom said \"Oh great, your step dad's poetry "
    "reading is that night!\" So now I'm flying in on April 7th.",
    "Did you see that Google just hired an eloquent whale for their TPU team? It showed them how to "
    "communicate between two different pods!",
    "I was supposed to start writing the paper at 5:00 PM. But then I started playing with this cool new "
    "language model for 10 minutes. 10 minutes later, it's suddenly 9:30 PM!",
]


def seed_block(section: str) -> str | None:
    """The first fenced code block after the heading ``## <section>`` in seed_probes.md, if present."""
    if not SEED.is_file():
        return None
    text = SEED.read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(section)}.*?^```[^\n]*\n(.*?)\n```", text, re.S | re.M)
    return m.group(1) if m else None


@pytest.fixture(scope="module")
def items():
    return jokes.load_items(paths.data_dir() / jokes.DEFAULT_DATA)


# --- prompt ---------------------------------------------------------------------------------------


def test_prompt_matches_literal_copy_byte_for_byte():
    joke = PALM_JOKES[1]
    assert jokes.build_prompt({"id": "x", "joke": joke}) == PROMPT_LITERAL.replace("<joke>", joke)


def test_prompt_matches_seed_probes_md_byte_for_byte():
    block = seed_block("1.")
    if block is None:
        pytest.skip("../shared/seed_probes.md not available")
    assert block == PROMPT_LITERAL  # the literal copy above is faithful
    joke = "A joke with \"quotes\" and 'apostrophes'."
    prompt = jokes.build_prompt({"id": "x", "joke": joke})
    assert prompt == block.replace("<joke>", joke)
    assert prompt.endswith("\n(3) " + joke + "\nExplanation:")


def test_exemplar_is_reusable_constant():
    assert jokes.EXEMPLAR.startswith("I will explain these jokes:\n(1) ")
    assert jokes.EXEMPLAR.endswith("pay them back anyways.\n")
    assert jokes.EXEMPLAR.count("Explanation:") == 2


# --- data -----------------------------------------------------------------------------------------


def test_data_counts_and_sources(items):
    assert len(items) >= 12
    assert len({x["id"] for x in items}) == len(items)
    assert {x["source"] for x in items} == {"PaLM paper (2022)", "written for llamalab"}
    for x in items:
        assert x["reference"].strip(), x["id"]
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", x["reference"].strip()) if s]
        assert 1 <= len(sentences) <= 3, x["id"]


def test_the_three_palm_jokes_are_present_verbatim(items):
    palm = [x["joke"] for x in items if x["source"] == "PaLM paper (2022)"]
    assert sorted(palm) == sorted(PALM_JOKES)
    if SEED.is_file():
        seed = SEED.read_text(encoding="utf-8")
        for joke in PALM_JOKES:
            assert f"- {joke}\n" in seed


def test_exemplar_jokes_are_not_items(items):
    texts = " ".join(x["joke"].lower() for x in items)
    assert "kleptomaniac" not in texts
    assert "pessimist" not in texts


def test_jokes_unique(items):
    keys = [re.sub(r"[^a-z0-9]+", " ", x["joke"].lower()).strip() for x in items]
    assert len(set(keys)) == len(keys)


def test_bad_row_names_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    rows = [{"id": "a", "joke": "fine"}, {"id": "b", "joke": ""}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(DataError) as err:
        jokes.load_items(path)
    assert str(err.value).startswith(f"{path}:2: field 'joke':")

    path.write_text(json.dumps({"joke": "no id"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: field 'id': missing"):
        jokes.load_items(path)

    path.write_text(json.dumps({"id": "a", "joke": "two\nlines"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: field 'joke': must be a single line"):
        jokes.load_items(path)


# --- stop condition and scoring -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, end",
    [
        (" This is a pun.", None),
        (" This is a pun.\n", None),
        (" This is a pun.\n(4) Another joke", len(" This is a pun.")),
        (" This is a pun. (4) Another", len(" This is a pun. ")),
        (" This is a pun.\n\nI will explain", len(" This is a pun.")),
        (" This is a pun.\n  \nMore", len(" This is a pun.")),
        ("\n\n This is a pun.", None),  # blank lines before any text do not end it
        (" Line one.\nLine two.\n(3) again", len(" Line one.\nLine two.")),
        (" Wordplay on (1) and (2).", None),
    ],
)
def test_find_end(text, end):
    assert jokes.find_end(text) == end


def test_score_item_proxy_overlap():
    item = {"id": "x", "joke": "j", "reference": "Pun on pods: whale pods and TPU pods."}
    # reference content words: pun, pod, whale, tpu -> 4
    full = jokes.score_item(item, " It is a pun: a group of whales is a pod, and TPUs come in pods.\n\n(4) x")
    assert full["proxy_overlap"] == 1.0
    assert full["explanation"] == "It is a pun: a group of whales is a pod, and TPUs come in pods."
    assert full["length_words"] == 16
    assert full["empty"] is False

    half = jokes.score_item(item, " Whales talk a lot.\n(4) pun pod tpu")  # text after the stop is ignored
    assert half["proxy_overlap"] == pytest.approx(0.25)

    empty = jokes.score_item(item, "\n(4) Next joke")
    assert empty == {"explanation": "", "proxy_overlap": 0.0, "length_words": 0, "empty": True}

    assert jokes.score_item({"id": "y", "joke": "j"}, " text")["proxy_overlap"] is None


def test_summarize():
    scored = [
        {"id": "a", "proxy_overlap": 0.5, "length_words": 10, "empty": False},
        {"id": "b", "proxy_overlap": 0.0, "length_words": 0, "empty": True},
        {"id": "c", "proxy_overlap": None, "length_words": 20, "empty": False},
    ]
    s = jokes.summarize(scored)
    assert s["n"] == 3
    assert s["proxy_overlap_mean"] == pytest.approx(0.25)
    assert s["empty_rate"] == pytest.approx(1 / 3)
    assert s["mean_length_words"] == pytest.approx(10.0)
    assert "rough" in s["note"] and "proxy" in s["note"]
    assert jokes.summarize([])["proxy_overlap_mean"] is None


def test_module_contract():
    assert jokes.NAME == "jokes"
    assert (paths.data_dir() / jokes.DEFAULT_DATA).is_file()
    assert 64 <= jokes.MAX_NEW_TOKENS <= 256
