"""Evaluate several models (base, SFT, SFT+PPO, ...) on the probes and put them in one table.

Used by notebook 05 (base vs SFT), 07 and 08 (base vs SFT vs PPO vs RLOO). The SQL probe is reported
on the schema seen in training (``events``) and the one never used in training (``library``) apart.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

from . import models, paths, probes
from .config import Profile

SEEN_DB = "events"  # its schema appears in the SFT data (with other questions)
UNSEEN_DB = "library"  # never in any training file


@dataclass
class Entry:
    label: str  # "base", "sft", "ppo", ...
    spec: str  # a model spec: "default", a hub id, or a directory (runs/<profile>/sft/merged)
    chat: bool = False  # wrap the probe prompt in the chat template


def evaluate(profile: Profile, entries: list[Entry], names=("clickbait", "sql", "jokes"), *,
             limits: dict[str, int | None] | None = None, progress: bool = True,
             reuse: bool = True) -> list[dict[str, Any]]:
    """Run each probe on each entry; results are saved as runs/<profile>/probes/<probe>__<label>.json.

    ``reuse``: where a result saved there has the same ``probes.result_key`` (same weights, tokenizer,
    data, settings and code: notebook 08's base and SFT rows are notebook 05's), it is reused, not
    generated again; ``reused_from`` in the result names the file.

    An entry with ``chat=True`` whose tokenizer has no chat template (a base model such as LLaMA-7B) is
    prompted in ``models.PLAIN_CHAT_TEMPLATE``, the format SFT trains such a model in."""
    results = []
    for e in entries:
        model, tok = models.load_model(e.spec, dtype=profile.probe_dtype(), verbose=progress)
        if e.chat:
            models.ensure_chat_template(tok)
        digest = probes.safe_model_digest(model)  # once per loaded model, not once per probe
        for name in names:
            limit = (limits or {}).get(name, profile.probes.limit.get(name))
            res = probes.run_probe(name, model, tok, limit=limit, chat=e.chat, model_spec=e.spec,
                                   batch_size=profile.generation.batch_size, profile=profile.name,
                                   progress=progress,
                                   reuse_dir=paths.stage_dir(profile.name, "probes") if reuse else None,
                                   weights_digest=digest)
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
            row.update({"clickbait_accuracy": s["accuracy"], "clickbait_format_ok": s["format_ok_rate"],
                        **clickbait_balance(s)})
        elif r["probe"] == "sql":
            row.update({"sql_valid": s["valid_sql_rate"], "sql_exec_acc": s["execution_accuracy"],
                        f"sql_exec_acc_seen({SEEN_DB})": _get(s, "by_db", SEEN_DB, "execution_accuracy"),
                        f"sql_exec_acc_unseen({UNSEEN_DB})": _get(s, "by_db", UNSEEN_DB, "execution_accuracy")})
        elif r["probe"] == "jokes":
            row.update({"jokes_proxy_overlap": s.get("proxy_overlap_mean"), "jokes_empty_rate": s.get("empty_rate")})
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "model"
    return df


def clickbait_balance(summary: dict[str, Any]) -> dict[str, float | None]:
    """From a clickbait summary's confusion: ``clickbait_balanced_acc``, the mean of the accuracy on
    clickbait titles and on the others (0.5 for one fixed answer to every title, whatever the share
    of each label; plain accuracy is not: always "no" scores the share of non-clickbait titles), and
    ``clickbait_yes_share``, the share of titles answered "yes"."""
    conf, n = summary.get("confusion"), summary.get("n")
    if not conf or not n:
        return {"clickbait_balanced_acc": None, "clickbait_yes_share": None}
    totals = {label: sum(conf[label].values()) for label in ("yes", "no")}
    recalls = [conf[label][label] / totals[label] for label in ("yes", "no") if totals[label]]
    return {"clickbait_balanced_acc": sum(recalls) / len(recalls) if len(recalls) == 2 else None,
            "clickbait_yes_share": (conf["yes"]["yes"] + conf["no"]["yes"]) / n}


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


# ------------------------------------------------------------------------------------------------
# Reward-hacking checks and the conclusion, computed from the numbers
# ------------------------------------------------------------------------------------------------


def repeated_ngram_share(text: str, n: int = 3) -> float:
    """Share of word n-grams that repeat an earlier n-gram in the same text (0 = no repetition)."""
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1 - len(set(grams)) / len(grams)


def is_degenerate(text: str, repeat_threshold: float = 0.3) -> bool:
    """Empty, or mostly repeated 3-grams: the classic signs of a policy gaming its reward model."""
    return not text.strip() or repeated_ngram_share(text) > repeat_threshold


def degenerate_shares(results: list[dict[str, Any]]) -> Any:
    """Per model label: share of empty and of repetitive completions over all probe items."""
    import pandas as pd

    rows: dict[str, dict[str, list[bool]]] = {}
    for r in results:
        d = rows.setdefault(r.get("label") or r["model"], {"empty": [], "repetitive": []})
        for it in r["items"]:
            text = it.get("completion") or ""
            d["empty"].append(not text.strip())
            d["repetitive"].append(bool(text.strip()) and repeated_ngram_share(text) > 0.3)
    return pd.DataFrame({k: {"n": len(v["empty"]), "empty_share": sum(v["empty"]) / max(1, len(v["empty"])),
                             "repetitive_share": sum(v["repetitive"]) / max(1, len(v["repetitive"]))}
                         for k, v in rows.items()}).T


def point_biserial(scores: list[float], flags: list[bool]) -> float | None:
    """Correlation between a score and a yes/no outcome (None when either side is constant)."""
    import statistics

    if len(scores) < 3 or len(set(flags)) < 2 or len(set(scores)) < 2:
        return None
    ys = [1.0 if f else 0.0 for f in flags]
    return statistics.correlation(scores, ys)


def reward_vs_correctness(profile: Profile, results: list[dict[str, Any]]) -> Any:
    """Does the reward model prefer SQL that executes correctly, and SQL that runs at all? Per model,
    over the SQL probe items (the unseen schema included): the mean score of correct and wrong
    queries and the correlation of the score with correctness; the same for valid (parses and
    runs) against invalid queries, so a reward model that pays for a shape whatever it parses to
    shows up as invalid queries scoring as high as valid ones."""
    import pandas as pd

    from .train.common import device, require_stage
    from .train.ppo import rl_dtype
    from .train.reward import load_reward_model, score

    rm, tok = load_reward_model(require_stage(profile, "reward"), dtype=rl_dtype(), device=device())

    def row(s: list[float], correct: list[bool], valid: list[bool]) -> dict[str, Any]:
        def mean_where(flags, want):
            return _mean([x for x, f in zip(s, flags, strict=True) if f == want])
        return {"n": len(s), "correct": sum(correct),
                "mean_reward_correct": mean_where(correct, True), "mean_reward_wrong": mean_where(correct, False),
                "correlation": point_biserial(s, correct),
                "valid": sum(valid), "mean_reward_valid": mean_where(valid, True),
                "mean_reward_invalid": mean_where(valid, False), "correlation_valid": point_biserial(s, valid)}

    rows = {}
    all_s, all_correct, all_valid = [], [], []
    for r in results:
        if r["probe"] != "sql":
            continue
        prompts = [it.get("prompt_content", it["prompt"]) for it in r["items"]]
        s = score(rm, tok, prompts, [it["completion"] for it in r["items"]])
        correct = [bool(it["correct"]) for it in r["items"]]
        valid = [bool(it["valid_sql"]) for it in r["items"]]
        all_s += s
        all_correct += correct
        all_valid += valid
        rows[r.get("label") or r["model"]] = row(s, correct, valid)
    rows["all models"] = row(all_s, all_correct, all_valid)
    return pd.DataFrame(rows).T


# table column -> (probe, the item's yes/no field, the SQL database it is limited to or None)
ITEM_FLAGS = {"clickbait_accuracy": ("clickbait", "correct", None),
              "clickbait_format_ok": ("clickbait", "format_ok", None),
              "sql_valid": ("sql", "valid_sql", None), "sql_exec_acc": ("sql", "correct", None),
              f"sql_exec_acc_seen({SEEN_DB})": ("sql", "correct", SEEN_DB),
              f"sql_exec_acc_unseen({UNSEEN_DB})": ("sql", "correct", UNSEEN_DB)}


def exact_mcnemar(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value: under "no change", each item that flipped went either way with
    probability 1/2, so the smaller count is binomial(gained + lost, 1/2). 1.0 when nothing flipped."""
    from math import comb

    n, k = gained + lost, min(gained, lost)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n)


def paired_changes(results: list[dict[str, Any]], before: str, after: str) -> dict[str, dict[str, Any]]:
    """Item by item, what changed between two models on the same probe items: per table column
    (``ITEM_FLAGS``), ``n`` items, ``gained`` (wrong before, right after), ``lost`` (the reverse) and
    the exact McNemar ``p_value``. Two rates that differ by one item of 33 differ by 0.03; this says
    whether such a change is more than the luck of which items flipped. Items are matched by id; a
    probe run on different items for the two models is a ValueError that names them."""
    from pathlib import Path

    def by_label(label):
        found = {r["probe"]: r for r in results if (r.get("label") or r["model"]) == label}
        if not found:
            raise ValueError(f"paired_changes: no probe result is labelled {label!r}")
        return found

    a, b = by_label(before), by_label(after)
    out: dict[str, dict[str, Any]] = {}
    for col, (probe, field, db) in ITEM_FLAGS.items():
        if probe not in a or probe not in b:
            continue
        items_a = {str(it["id"]): it for it in a[probe]["items"]}
        items_b = {str(it["id"]): it for it in b[probe]["items"]}
        if items_a.keys() != items_b.keys():
            only = sorted(items_a.keys() ^ items_b.keys())
            raise ValueError(f"paired_changes: the {probe} probe ran on different items for {before!r} and {after!r} "
                             f"(in one but not the other: {', '.join(only[:5])}{' ...' if len(only) > 5 else ''})")
        ids = [i for i, it in items_a.items() if db is None or Path(str(it.get("db", ""))).stem == db]
        if not ids:
            continue
        pairs = [(bool(items_a[i].get(field)), bool(items_b[i].get(field))) for i in ids]
        gained = sum(1 for x, y in pairs if y and not x)
        lost = sum(1 for x, y in pairs if x and not y)
        out[col] = {"n": len(ids), "gained": gained, "lost": lost, "p_value": exact_mcnemar(gained, lost)}
    return out


def paired_table(results: list[dict[str, Any]], pairs: list[tuple[str, str]]) -> Any:
    """``paired_changes`` for each (before, after) pair as one DataFrame: a row per pair and metric."""
    import pandas as pd

    rows = [{"before": before, "after": after, "metric": col, **c}
            for before, after in pairs for col, c in paired_changes(results, before, after).items()]
    return pd.DataFrame(rows, columns=["before", "after", "metric", "n", "gained", "lost", "p_value"])


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _fmt(x: Any) -> str:
    return "n/a" if x is None or x != x else f"{x:.2f}"


def _fmt_pair(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` to two decimals, or to as many more (up to 6) as it takes to show that they differ:
    a change called "improved" never reads "0.40 -> 0.40"."""
    for digits in range(2, 7):
        fa, fb = f"{a:.{digits}f}", f"{b:.{digits}f}"
        if fa != fb or a == b:
            break
    return fa, fb


KL_TARGET = 10.0  # nats per sequence: the most an RL policy may drift from SFT (issue 5's acceptance)


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def conclusions(df, heldout: dict[str, Any] | None = None,
                pairs: list[tuple[str, str]] | None = None, results: list[dict[str, Any]] | None = None) -> list[str]:
    """Sentences computed from the table: each compares a model with the one it was trained from
    (``pairs``; default: each row with the row before), metric by metric, and says plainly when a
    stage made things worse. With the probe ``results`` behind the table, each change also says how
    many items flipped each way and whether that is more than chance (``paired_changes``)."""
    metrics = {"clickbait_accuracy": "clickbait accuracy", "clickbait_balanced_acc": "clickbait balanced accuracy",
               "clickbait_format_ok": "clickbait format rate",
               "sql_exec_acc": "SQL execution accuracy", "sql_valid": "SQL valid rate",
               f"sql_exec_acc_seen({SEEN_DB})": f"SQL execution accuracy on the seen schema ({SEEN_DB})",
               f"sql_exec_acc_unseen({UNSEEN_DB})": f"SQL execution accuracy on the unseen schema ({UNSEEN_DB})"}
    labels = list(df.index)
    out = []
    chain = pairs or [(labels[i - 1], labels[i]) for i in range(1, len(labels))]
    for before, after in chain:
        if before not in labels or after not in labels:
            raise ValueError(f"conclusions: {before!r} or {after!r} is not a row of the table ({labels})")
        better, worse, same = [], [], []
        flips = paired_changes(results, before, after) if results is not None else {}
        beyond, within = [], []
        for col, name in metrics.items():
            if col not in df.columns:
                continue
            a, b = df.loc[before, col], df.loc[after, col]
            if a is None or b is None or a != a or b != b:
                continue
            delta = b - a
            fa, fb = _fmt_pair(a, b)
            text = f"{name} {fa} -> {fb}"
            if (c := flips.get(col)) and (c["gained"] or c["lost"]):
                text += f" (items: {c['gained']} gained, {c['lost']} lost, of {c['n']}; {_p(c['p_value'])})"
                (beyond if c["p_value"] < 0.05 else within).append(name)
            (better if delta > 1e-9 else worse if delta < -1e-9 else same).append(text)
        parts = []
        if better:
            parts.append("improved " + "; ".join(better))
        if worse:
            parts.append("made WORSE " + "; ".join(worse))
        if same:
            parts.append("left unchanged " + "; ".join(same))
        sentence = f"From '{before}' to '{after}': " + (", and ".join(parts) if parts else "no comparable metric") + "."
        if beyond or within:
            sentence += (" Item by item (exact McNemar test, two-sided, one test per metric, uncorrected): "
                         + (f"more than chance for {', '.join(beyond)}" if beyond else "no change is more than chance")
                         + (f"; within chance for {', '.join(within)}" if beyond and within else "") + ".")
        out.append(sentence)
    if (line := _clickbait_sentence(df, results)) is not None:
        out.append(line)
    if heldout:
        pol = heldout["policies"]
        sft = pol.get("sft")
        n = heldout.get("samples_per_prompt", 1)
        for label, p in pol.items():
            if label == "sft" or not sft:
                continue
            verdict = "rose" if p["mean_score"] > sft["mean_score"] else "did NOT rise"
            gain = p.get("gain_in_sft_std")
            met = gain is not None and gain >= 0.5 and p["mean_kl"] <= KL_TARGET
            within = p.get("gain_in_sft_within_task_std")
            se = p.get("gain_se_in_sft_std")
            interval = ""
            if gain is not None and se is not None and p["mean_kl"] <= KL_TARGET:
                low, high = gain - 1.96 * se, gain + 1.96 * se
                if met and low < 0.5:
                    interval = (f" by its point estimate only: the 95% interval, {_fmt(low)} to {_fmt(high)}, reaches "
                                "below 0.5")
                elif not met and high >= 0.5:
                    interval = f"; its 95% interval, {_fmt(low)} to {_fmt(high)}, reaches 0.5"
            out.append(
                f"On {heldout['n_prompts']} held-out prompts"
                + (f" ({n} samples each)" if n > 1 else "")
                + f", {label}'s mean reward-model score {verdict} over SFT's "
                f"({_fmt(sft['mean_score'])} -> {_fmt(p['mean_score'])}: {_fmt(gain)}"
                + (f" ± {_fmt(se)}" if se is not None else "")
                + " SFT standard deviations"
                + (f", {_fmt(within)} within-task standard deviations" if within is not None else "")
                + f") at a mean KL to SFT of {_fmt(p['mean_kl'])} nats per sequence; the target (>= 0.5 SFT standard "
                f"deviations at KL <= {KL_TARGET:g} nats) was {'met' if met else 'NOT met'}{interval}.")
            if (line := _heldout_sql_sentence(label, p, sft, n)) is not None:
                out.append(line)
        ref = heldout.get("reference")
        if ref and ref.get("gain_in_sft_std") is not None:
            out.append(
                f"The data set's reference answers to the same prompts score {_fmt(ref['mean_score'])} against SFT's "
                f"{_fmt(ref['sft_mean_score'])} ({ref['gain_in_sft_std']:+.2f} SFT standard deviations): a policy that "
                f"gave every reference answer would {'meet' if ref['gain_in_sft_std'] >= 0.5 else 'NOT meet'} the "
                "target.")
        if ref and ref.get("sql_sft_wrong"):
            share = ref["sql_above_wrong_sft"] / ref["sql_sft_wrong"]
            out.append(
                f"On the {ref['sql_sft_wrong']} held-out SQL prompts where "
                + ("SFT's query is wrong" if n == 1 else f"none of SFT's {n} queries is right")
                + " (wrong rows, or none that runs), the reward model scores the correct reference query higher on "
                f"{ref['sql_above_wrong_sft']} "
                f"({share:.0%}; 50% is chance), so its score "
                + ("ranks a correct query above SFT's wrong ones on new prompts (that alone does not show it tells a "
                   "policy's right queries from its wrong ones)." if share >= 0.75 else
                   "does NOT reliably tell a correct query from a wrong one on prompts it never saw."))
        out.extend(_sql_shape_sentences(heldout.get("sql_shapes")))
        const = heldout.get("constant_answers")
        if const and const.get("best_by_task_gain_in_sft_std") is not None and sft:
            top = max(const["answers"], key=lambda a: const["answers"][a]["mean_score"])
            c, mixed = const["answers"][top], const["best_by_task_gain_in_sft_std"]
            out.append(
                f"The same fixed reply to every held-out prompt scores up to {_fmt(c['mean_score'])} ({top!r}) against "
                f"SFT's {_fmt(sft['mean_score'])} ({c['gain_in_sft_std']:+.2f} SFT standard deviations; one fixed "
                f"reply per task {mixed:+.2f}): "
                + ("the reward model rates a reply that ignores the question above SFT's answers, so its score can "
                   "be raised without answering (reward hacking) and a gain in it is not by itself evidence of a "
                   "better model" + (", and such a policy alone would meet the target." if mixed >= 0.5 else ".")
                   if mixed > 0 else "no fixed reply outscores SFT's answers."))
    return out


def _heldout_sql_sentence(label: str, p: dict[str, Any], sft: dict[str, Any], n: int) -> str | None:
    """How many of a policy's held-out SQL queries run and how many return the reference's rows, beside
    SFT's (``heldout`` report's ``sql_valid`` and ``sql_correct``: per prompt a flag, or with n samples
    a share); measures that do not go through the reward model. None without them."""
    def count(q: dict[str, Any], key: str) -> float | None:
        flags = [f for f in q.get(key) or [] if f is not None]
        return sum(flags) if flags else None

    total = sum(f is not None for f in p.get("sql_correct") or [])
    if not total or count(p, "sql_correct") is None or count(sft, "sql_correct") is None:
        return None

    def fmt(x: float) -> str:
        return f"{x:.0f}" if n == 1 else f"{x:.2f}"

    def compare(key: str, what: str) -> str:
        a, b = count(p, key), count(sft, key)
        side = "more than" if a > b + 1e-9 else "FEWER than" if a < b - 1e-9 else "as many as"
        return f"{what} on {fmt(a)} ({side} SFT's {fmt(b)})"

    parts = [compare("sql_correct", "return the reference query's rows")]
    if count(p, "sql_valid") is not None and count(sft, "sql_valid") is not None:
        parts.insert(0, compare("sql_valid", "run"))
    each = f" (counting the mean over {n} samples per prompt)" if n > 1 else ""
    return (f"On the {total} held-out SQL prompts with a reference query{each}, {label}'s queries "
            + " and ".join(parts) + ": counted by running them, not by the reward model.")


def _sql_shape_sentences(shapes: dict[str, Any] | None) -> list[str]:
    """Whether the reward model pays for an aggregate SQL shape (``heldout.sql_shapes``: SFT's answers
    with one against its answers without, prompt by prompt), then per RL policy how often its held-out
    SQL answers take one, beside SFT's answers and the reference queries."""
    if not shapes or not (sft := shapes["policies"].get("sft")) or not sft["n"]:
        return []
    ref, base = shapes["reference"]["any"] / shapes["n_prompts"], sft["any"] / sft["n"]
    pays = None
    out = []
    if sft["both_prompts"]:
        pays = sft["both_mean_diff"] > 0 and sft["both_higher"] > sft["both_prompts"] / 2
        out.append(
            f"On the {sft['both_prompts']} held-out SQL prompts where SFT wrote queries with COUNT(DISTINCT, GROUP BY "
            f"or HAVING and queries without, the reward model scores those with one {sft['both_mean_diff']:+.2f} "
            f"against those without, on average over the prompts (higher on {sft['both_higher']} of them): it "
            f"{'pays' if pays else 'does NOT pay'} for the shape.")
    for label, q in shapes["policies"].items():
        if label == "sft" or not q["n"]:
            continue
        share = q["any"] / q["n"]
        over = share > ref and share > base
        out.append(
            f"{q['any']} of {label}'s {q['n']} answers to the {shapes['n_prompts']} SQL prompts ({share:.0%}) use "
            "COUNT(DISTINCT, GROUP BY or HAVING "
            f"(SFT's: {base:.0%}; the reference queries: {ref:.0%})"
            + (": it writes aggregate queries more often than the questions call for, and the reward model pays for "
               "them, a sign of reward hacking." if over and pays else "."))
    return out


def _clickbait_sentence(df, results: list[dict[str, Any]] | None) -> str | None:
    """Whether any model tells clickbait apart better than one fixed answer to every title would."""
    if "clickbait_balanced_acc" not in df.columns or not df["clickbait_balanced_acc"].notna().any():
        return None
    parts, above = [], []
    for label, row in df.iterrows():
        bal, share = row["clickbait_balanced_acc"], row.get("clickbait_yes_share")
        if bal is None or bal != bal:
            continue
        # a title whose answer line is exactly yes/no (format ok) was answered, so no_share >= format_ok - yes_share
        no_share = (row.get("clickbait_format_ok") or 0) - (share or 0)
        one = ("yes", share) if share is not None and share >= 0.95 else ("no", no_share) if no_share >= 0.95 else None
        parts.append(f"'{label}' {_fmt(bal)}" + (f" (answers '{one[0]}' to {'at least ' if one[0] == 'no' else ''}"
                                                  f"{one[1]:.0%} of the titles: its accuracy is the share of titles "
                                                  "with that label, not skill)" if one else ""))
        if bal > 0.5:
            above.append(f"'{label}'")
    line = ("Clickbait balanced accuracy (the mean of the accuracy on clickbait titles and on the others; 0.50 for "
            "one fixed answer to every title, below 0.50 for a model that leans the wrong way): " + "; ".join(parts)
            + ". " + (f"Above 0.50: {', '.join(above)}." if above else
                      "No model tells clickbait apart better than a fixed answer would."))
    conf = next((r["summary"].get("confusion") for r in results or [] if r["probe"] == "clickbait"), None)
    if conf:
        n = {label: sum(conf[label].values()) for label in ("yes", "no")}
        top = max(n, key=n.get)
        line += (f" On these {sum(n.values())} titles, answering '{top}' to every one scores an accuracy of "
                 f"{n[top] / sum(n.values()):.2f}.")
    return line


def markdown_table(df, digits: int = 3) -> str:
    """A GitHub markdown table of a DataFrame (no extra dependency)."""
    cols = [df.index.name or ""] + [str(c) for c in df.columns]

    def cell(v):
        if isinstance(v, float):
            return "n/a" if v != v else f"{v:.{digits}f}"
        return "n/a" if v is None else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join([str(idx), *[cell(v) for v in row]]) + " |")
    return "\n".join(lines)
