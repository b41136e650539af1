"""Evaluate several models (base, SFT, SFT+PPO, ...) on the probes and put them in one table.

Used by notebook 05 (base vs SFT), 07 and 08 (base vs SFT vs PPO vs RLOO). The SQL probe is reported
on the schema seen in training (``events``) and the one never used in training (``library``) apart.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import models, probes
from .config import Profile

SEEN_DB = "events"  # its schema appears in the SFT data (with other questions)
UNSEEN_DB = "library"  # never in any training file


@dataclass
class Entry:
    label: str  # "base", "sft", "ppo", ...
    spec: str  # a model spec: "default", a hub id, or a directory (runs/<profile>/sft/merged)
    chat: bool = False  # wrap the probe prompt in the chat template


def evaluate(profile: Profile, entries: list[Entry], names=("clickbait", "sql", "jokes"), *,
             limits: dict[str, int | None] | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Run each probe on each entry; results are saved as runs/<profile>/probes/<probe>__<label>.json."""
    results = []
    for e in entries:
        model, tok = models.load_model(e.spec, dtype=profile.model.dtype, verbose=progress)
        for name in names:
            limit = (limits or {}).get(name, profile.probes.limit.get(name))
            res = probes.run_probe(name, model, tok, limit=limit, chat=e.chat, model_spec=e.spec,
                                   batch_size=profile.generation.batch_size, profile=profile.name,
                                   progress=progress)
            res["label"] = e.label
            path = probes.result_path(profile.name, name, e.label)
            res["path"] = str(probes.save_result(res, path))
            results.append(res)
        del model, tok
        gc.collect()
    return results


def _get(d: dict, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def table(results: list[dict[str, Any]]):
    """One row per label: the headline metric of each probe (SQL seen/unseen apart)."""
    import pandas as pd

    rows: dict[str, dict[str, Any]] = {}
    for r in results:
        row = rows.setdefault(r.get("label") or r["model"], {"prompt": r.get("prompt_format")})
        s = r["summary"]
        if r["probe"] == "clickbait":
            row.update({"clickbait_accuracy": s["accuracy"], "clickbait_format_ok": s["format_ok_rate"]})
        elif r["probe"] == "sql":
            row.update({"sql_valid": s["valid_sql_rate"], "sql_exec_acc": s["execution_accuracy"],
                        f"sql_exec_acc_seen({SEEN_DB})": _get(s, "by_db", SEEN_DB, "execution_accuracy"),
                        f"sql_exec_acc_unseen({UNSEEN_DB})": _get(s, "by_db", UNSEEN_DB, "execution_accuracy")})
        elif r["probe"] == "jokes":
            row.update({"jokes_proxy_overlap": s.get("proxy_overlap_mean"), "jokes_empty_rate": s.get("empty_rate")})
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "model"
    return df


def side_by_side(results: list[dict[str, Any]], probe: str = "jokes", field: str = "explanation"):
    """Items of one probe with each model's answer in a column (jokes: the explanations)."""
    import pandas as pd

    sel = [r for r in results if r["probe"] == probe]
    if not sel:
        return pd.DataFrame()
    key = "joke" if probe == "jokes" else ("title" if probe == "clickbait" else "question")
    df = pd.DataFrame({key: [it[key] for it in sel[0]["items"]]})
    if probe == "jokes":
        df["reference"] = [it.get("reference") for it in sel[0]["items"]]
    for r in sel:
        df[r.get("label") or r["model"]] = [it.get(field) for it in r["items"]]
    return df


def stage_model(profile: Profile, stage: str) -> str:
    """The merged model directory of a stage, as a model spec."""
    from .train.common import require_stage

    return str(require_stage(profile, stage))


def existing(path: str | Path) -> bool:
    return Path(path).exists()
