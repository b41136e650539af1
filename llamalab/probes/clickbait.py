"""Probe 2: few-shot clickbait classification, as in the 2023 LLaMA first look.

The prompt is the original plain text: four labelled exemplar titles, then the new title as item
``5)`` and ``Clickbait:`` for the model to complete with ``yes`` or ``no``. The answer is the first
non-empty line of the completion (:func:`find_end`).

Scoring separates the two things the original compared: whether the model answered in the requested
format (``format_ok``: the answer line is exactly ``yes`` or ``no``, any case) and whether the answer
is right (``correct``: the first ``yes``/``no`` word anywhere in the completion equals the label; no
such word counts as wrong).
"""

from __future__ import annotations

import re
from pathlib import Path

from llamalab import paths
from llamalab.data import DataError, Field, read_jsonl, single_line

NAME = "clickbait"
DEFAULT_DATA = "probes/clickbait.jsonl"  # relative to paths.data_dir()
MAX_NEW_TOKENS = 4
LABELS = ("yes", "no")

# The four exemplars of the original prompt, verbatim, as (title, label).
EXEMPLARS = (
    (
        "The WORST care homes in England: Interactive map reveals the lowest-rated 2,530 residences"
        " - so is there one near you?",
        "yes",
    ),
    ("Netflix's top 10 most-watched movies of all time", "yes"),
    ("Peering Through the Fog of Inflation", "no"),
    ("You'll never believe which TV cook this cheeky chap grew up to be", "yes"),
)
EXEMPLAR_TITLES = tuple(title for title, _ in EXEMPLARS)

FEW_SHOT = "I will tell whether the following news titles are clickbait:\n" + "".join(
    f"{i}) {title}\nClickbait: {label}\n" for i, (title, label) in enumerate(EXEMPLARS, start=1)
)
ITEM_TEMPLATE = "5) {title}\nClickbait:"



FIELDS = [
    Field("id", required=False),
    Field("title", check=single_line),
    Field("label", choices=LABELS),
    Field("topic", required=False),
]


def load_items(path: str | Path | None = None) -> list[dict]:
    """Read and validate ``{"id"?, "title", "label": "yes"|"no", ...}`` rows.

    A row without an id gets ``"line-<n>"``, n being its line number in the file.
    """
    path = Path(path) if path is not None else paths.data_dir() / DEFAULT_DATA
    rows = read_jsonl(path, FIELDS, unique="id")
    with path.open(encoding="utf-8") as fh:  # line numbers of the rows read_jsonl returned
        linenos = [n for n, text in enumerate(fh, start=1) if text.strip()]
    ids = {row["id"] for row in rows if row.get("id") is not None}
    items = []
    for lineno, row in zip(linenos, rows, strict=True):
        if row.get("id") is None:
            new_id = f"line-{lineno}"
            if new_id in ids:
                raise DataError(path, lineno, f"no id, and the generated {new_id!r} is taken", "id")
            ids.add(new_id)
            row = {**row, "id": new_id}
        items.append(row)
    return items


def build_prompt(item: dict) -> str:
    """The original prompt with ``item["title"]`` as title 5); ends with ``Clickbait:`` (no space)."""
    return FEW_SHOT + ITEM_TEMPLATE.format(title=item["title"])


def find_end(text: str) -> int | None:
    """End of the first non-empty line of the generated text, or None while that line is unfinished."""
    m = re.search(r"\S[^\n]*?(\r?\n)", text)
    return m.start(1) if m else None


_ANSWER = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def answer_line(completion: str) -> str:
    """The first non-empty line of the completion, stripped ("" when there is none)."""
    for line in completion.splitlines():
        if line.strip():
            return line.strip()
    return ""


def parse_answer(completion: str) -> str | None:
    """The first ``yes``/``no`` word (case-insensitive) in the completion, lowercased; None if none."""
    m = _ANSWER.search(completion)
    return m.group(1).lower() if m else None


def format_ok(completion: str) -> bool:
    """True when the answer line is exactly ``yes`` or ``no`` (any case; no punctuation or extra words)."""
    return answer_line(completion).lower() in LABELS


def score_item(item: dict, completion: str) -> dict:
    answer = parse_answer(completion)
    return {
        "answer": answer,
        "format_ok": format_ok(completion),
        "correct": answer == item["label"],
    }


def summarize(scored_items: list[dict]) -> dict:
    """Accuracy (no answer counts wrong), format and answer rates, confusion, precision/recall of yes.

    ``confusion[true_label][prediction]`` with predictions ``yes``, ``no`` and ``none``.
    """
    n = len(scored_items)
    confusion = {label: {"yes": 0, "no": 0, "none": 0} for label in LABELS}
    n_correct = n_format = n_answered = 0
    for x in scored_items:
        answer = x["answer"] if "answer" in x else parse_answer(x.get("completion", ""))
        ok = x["format_ok"] if "format_ok" in x else format_ok(x.get("completion", ""))
        confusion[x["label"]][answer or "none"] += 1
        n_correct += answer == x["label"]
        n_format += bool(ok)
        n_answered += answer is not None
    tp = confusion["yes"]["yes"]
    predicted_yes = tp + confusion["no"]["yes"]
    actual_yes = sum(confusion["yes"].values())
    return {
        "n": n,
        "accuracy": n_correct / n if n else None,
        "format_ok_rate": n_format / n if n else None,
        "answered_rate": n_answered / n if n else None,
        "confusion": confusion,
        "precision_yes": tp / predicted_yes if predicted_yes else None,
        "recall_yes": tp / actual_yes if actual_yes else None,
    }
