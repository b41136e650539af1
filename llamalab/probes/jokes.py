"""Probe 1: explain a joke, with PaLM's (2022) 2-shot exemplar as a plain-text continuation.

The prompt is the one PaLM used for every joke: the two exemplar jokes with their explanations,
then the new joke as item ``(3)`` and ``Explanation:`` for the model to continue. Decoding is
greedy in the original; generation stops at the next numbered item or a blank line (:func:`find_end`).

Scores here are **rough lexical proxies**, not a judgement of the explanation: ``proxy_overlap`` is
the share of the reference explanation's content words that the model's explanation also uses.
A model can score well by restating the joke and badly with a correct explanation in other words;
read the explanations themselves.
"""

from __future__ import annotations

import re
from pathlib import Path

from llamalab import paths
from llamalab.data import Field, read_jsonl, single_line

NAME = "jokes"
DEFAULT_DATA = "probes/jokes.jsonl"  # relative to paths.data_dir()
MAX_NEW_TOKENS = 96

# PaLM's 2-shot exemplar, verbatim (see data/probes/README.md). The new joke follows as item (3).
EXEMPLAR = (
    "I will explain these jokes:\n"
    "(1) The problem with kleptomaniacs is that they always take things literally.\n"
    'Explanation: This joke is wordplay. Someone who "takes things literally" is someone who '
    "doesn't fully understand social cues and context, which is a negative trait. But the definition "
    "of kleptomania is someone who literally takes things.\n"
    "(2) Always borrow money from a pessimist. They'll never expect it back.\n"
    "Explanation: Most people expect you to pay them back when you borrow money, however a pessimist "
    "is someone who always assumes the worst, so if you borrow money from them, they will expect that "
    "you won't pay them back anyways.\n"
)
ITEM_TEMPLATE = "(3) {joke}\nExplanation:"

PROXY_NOTE = "proxy_overlap is a rough lexical proxy, not a judgement of the explanation"



FIELDS = [
    Field("id"),
    Field("joke", check=single_line),
    Field("reference", required=False),
    Field("source", required=False),
]


def load_items(path: str | Path | None = None) -> list[dict]:
    """Read and validate a jokes JSONL (``{"id", "joke", "reference"?, "source"?}``)."""
    path = Path(path) if path is not None else paths.data_dir() / DEFAULT_DATA
    return read_jsonl(path, FIELDS, unique="id")


def build_prompt(item: dict) -> str:
    """PaLM's prompt with ``item["joke"]`` as joke (3); ends with ``Explanation:`` (no trailing space)."""
    return EXEMPLAR + ITEM_TEMPLATE.format(joke=item["joke"])


# The model starting the next numbered item ("(4) ..."; also "(1)"... on a new line) ends the answer.
_NEXT_ITEM = re.compile(r"\n[ \t]*\(\d+\)|\(4\)")
# A blank line after some text ends it too (leading blank lines before any text do not).
_BLANK_AFTER_TEXT = re.compile(r"\S[ \t]*(\r?\n)[ \t]*\r?\n")


def find_end(text: str) -> int | None:
    """Index where the explanation ends in the generated text so far, or None to keep generating."""
    ends = []
    m = _NEXT_ITEM.search(text)
    if m:
        ends.append(m.start())
    m = _BLANK_AFTER_TEXT.search(text)
    if m:
        ends.append(m.start(1))
    return min(ends) if ends else None


def explanation(completion: str) -> str:
    """The model's explanation: the completion cut at :func:`find_end`, stripped."""
    end = find_end(completion)
    return (completion if end is None else completion[:end]).strip()


STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing don down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its itself
    just me more most my myself no nor not now of off on once only or other our ours ourselves out
    over own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves s t ll re ve d m
    joke jokes funny explanation
    """.split()
)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _stem(word: str) -> str:
    """A deliberately crude normaliser: drop possessive 's and a plural -s."""
    if word.endswith("'s"):
        word = word[:-2]
    word = word.replace("'", "")
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


def content_words(text: str) -> set[str]:
    """Lowercased, stopword-free, crudely stemmed word set of ``text``."""
    words = (_stem(w) for w in _WORD.findall(text.lower().replace("\u2019", "'")))
    return {w for w in words if w and w not in STOPWORDS}


def proxy_overlap(reference: str, text: str) -> float | None:
    """Recall of the reference's content words in ``text`` (0..1); None when the reference has none."""
    ref = content_words(reference)
    if not ref:
        return None
    return len(ref & content_words(text)) / len(ref)


def score_item(item: dict, completion: str) -> dict:
    """Rough proxy scores for one explanation (see the module docstring)."""
    expl = explanation(completion)
    reference = item.get("reference")
    return {
        "explanation": expl,
        "proxy_overlap": proxy_overlap(reference, expl) if reference else None,
        "length_words": len(expl.split()),
        "empty": not expl,
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(scored_items: list[dict]) -> dict:
    """Means over scored items (each ``{**item, "prompt", "completion", **score_item(...)}``)."""
    overlaps = [x["proxy_overlap"] for x in scored_items if x.get("proxy_overlap") is not None]
    return {
        "n": len(scored_items),
        "proxy_overlap_mean": _mean(overlaps),
        "n_proxy_overlap": len(overlaps),  # items whose reference had content words
        "empty_rate": _mean([1.0 if x["empty"] else 0.0 for x in scored_items]),
        "mean_length_words": _mean([float(x["length_words"]) for x in scored_items]),
        "note": PROXY_NOTE,
    }
