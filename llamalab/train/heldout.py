"""Held-out evaluation of RL policies: reward-model score and KL to the SFT model.

On prompts never used in training (``data/train/ppo_prompts_heldout.jsonl``), each policy samples
the profile's ``heldout.samples_per_prompt`` responses per prompt (default 1; fixed seeds, the RL
temperature); the reward model scores each, and the KL
to the reference (the SFT model) is estimated per sequence as the sum over response tokens of
``log pi(y_t) - log pi_ref(y_t)``, with logits scaled by the temperature as TRL's PPO does.

``best_of_n`` gives the baseline on the same prompts: the score that picking the best of k samples
from the SFT model reaches, and the KL that costs (``evaluate_policies(..., best_of=N)``,
``python -m llamalab heldout --best-of N``). On SQL prompts it also runs every sample's query, so it
says whether the reward model's pick is correct more often than a random sample, and how often any of
the k is (the most a reranker could get).

``reference_check`` calibrates the score itself: the held-out prompts carry reference answers (the
gold query for SQL), so the report says what a policy that gave every reference answer would score,
and whether the reward model ranks a correct query above SFT's wrong one on prompts it never saw.
Each policy's SQL is also run against its schema (``sql_valid``, ``sql_correct``): measures of quality
that do not go through the reward model (a policy can raise its score with SQL that does not run).
``constant_answers`` scores one fixed reply ("yes", "no", ...) to every prompt: where that outscores
SFT, the reward model can be raised without answering at all.
``sql_shapes`` counts the SQL answers that use COUNT(DISTINCT, GROUP BY or HAVING, beside the reference
queries, and whether the reward model scores them above the same policy's other answers to the same
prompt: a policy that writes them far more often than the questions need them is gaining by the shape.

``value_baseline`` asks how good a baseline PPO's value model gives before it learns (it starts as
the reward model): the reward model's reading of each bare prompt against the mean score of SFT's
answers to it.
"""

from __future__ import annotations

import gc
import math
import re
import statistics
from pathlib import Path
from typing import Any

from .. import models
from ..config import Profile
from . import common
from .ppo import rl_options


def _load_causal(path: Path, dtype, device: str = "cpu"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    tok = models.prepare_tokenizer(AutoTokenizer.from_pretrained(path), m)
    m.eval()
    return m, tok


def _response_logprobs(model, seqs, context: int, pad: int, temperature: float):
    import torch

    mask = (seqs != pad).long()
    mask[:, :context] = (seqs[:, :context] != pad).long()
    with torch.inference_mode():
        logits = model(input_ids=seqs, attention_mask=mask).logits[:, context - 1:-1].float() / temperature
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, seqs[:, context:].unsqueeze(-1)).squeeze(-1)


def sample(model, tok, prompts: list[list[dict]], *, max_new_tokens: int, temperature: float, seed: int,
           batch_size: int = 16) -> list[dict[str, Any]]:
    """One sampled response per prompt, with its token ids and the position of the prompt's end."""
    import torch

    pad, eos = tok.pad_token_id, tok.eos_token_id
    out = []
    torch.manual_seed(seed)
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        ids = [common.chat_ids(tok, p, add_generation_prompt=True) for p in chunk]
        width = max(len(x) for x in ids)
        q = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=model.device)
        m = (q != pad).long()
        with torch.inference_mode():
            seqs = model.generate(input_ids=q, attention_mask=m, do_sample=True, temperature=temperature, top_k=0,
                                  top_p=1.0, max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos,
                                  use_cache=True)
        for row in range(len(chunk)):
            resp = seqs[row, width:].tolist()
            if eos in resp:
                resp = resp[: resp.index(eos) + 1]
            else:
                resp = [t for t in resp if t != pad]
            out.append({"prompt": chunk[row], "query_ids": q[row].tolist(), "response_ids": resp,
                        "text": tok.decode(resp, skip_special_tokens=True), "has_eos": eos in resp})
    return out


def kl_per_sequence(policy, reference, samples: list[dict], pad: int, temperature: float) -> list[float]:
    import torch

    kls = []
    for s in samples:
        if not s["response_ids"]:
            kls.append(0.0)
            continue
        seq = torch.tensor([s["query_ids"] + s["response_ids"]], device=policy.device)
        ctx = len(s["query_ids"])
        lp = _response_logprobs(policy, seq, ctx, pad, temperature)
        lr = _response_logprobs(reference, seq, ctx, pad, temperature)
        kls.append(float((lp - lr).sum()))
    return kls


def _setup(profile: Profile, limit: int | None, max_new_tokens: int | None) -> dict[str, Any]:
    """The held-out prompts, sampling settings, reward model and SFT model, as both evaluations use them."""
    from .ppo import load_prompts, rl_dtype
    from .reward import load_reward_model

    ppo = common.section(profile, "ppo")
    rows = load_prompts(profile, heldout=True)
    rows = rows[:limit] if limit else rows
    sft_dir = common.require_stage(profile, "sft")
    dtype, device = rl_dtype(), common.device()
    rm, rm_tok = load_reward_model(common.require_stage(profile, "reward"), dtype=dtype, device=device)
    reference, ref_tok = _load_causal(sft_dir, dtype, device)
    return {"rows": rows, "prompts": [r["prompt"] for r in rows], "tasks": [r.get("task") or "other" for r in rows],
            "temperature": float(ppo.get("temperature", 0.7)),
            "max_new_tokens": max_new_tokens or int(ppo.get("response_length", 64)),
            "sft_dir": sft_dir, "dtype": dtype, "device": device, "rm": rm, "rm_tok": rm_tok,
            "reference": reference, "ref_tok": ref_tok}


HELDOUT_KEYS = ("samples_per_prompt",)


def samples_setting(profile: Profile) -> int:
    """The profile's ``heldout.samples_per_prompt`` (default 1): responses per held-out prompt from
    every policy. Not part of any stage's fingerprint: changing it retrains nothing."""
    from ..config import ConfigError

    opts = common.section(profile, "heldout")
    for key in opts:
        if key not in HELDOUT_KEYS:
            raise ConfigError(f"{profile.path}: heldout.{key}: unknown key (known: {', '.join(HELDOUT_KEYS)})")
    n = opts.get("samples_per_prompt", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{profile.path}: heldout.samples_per_prompt: expected a whole number >= 1, got {n!r}")
    return n


def evaluate_policies(profile: Profile, policies: dict[str, Path], *, limit: int | None = None,
                      max_new_tokens: int | None = None, seed: int = 1234, best_of: int = 0,
                      samples_per_prompt: int | None = None) -> dict[str, Any]:
    """Mean/std reward and mean KL to SFT, per policy label, on the held-out prompts. With ``best_of``
    = n >= 2, also the best-of-k curve of the SFT model (``report["best_of_n"]``, see ``best_of_n``),
    from the same loaded models.

    ``samples_per_prompt`` = n (default: the profile's ``heldout.samples_per_prompt``, else 1) draws
    n responses per prompt from every policy (round r seeded with
    ``seed + r``, so round 0 is the one-sample report). Each prompt's entry in ``samples`` then holds
    the mean score and KL of its n responses (and the lists ``scores``, ``kls``, ``responses``);
    ``sql_correct`` (``sql_valid``) holds the share of its n queries that are correct (that run). The
    unit of every gain stays the standard deviation of single SFT samples (over all n x prompts), so a
    larger n narrows the paired standard error without shrinking the unit."""
    from .reward import score

    if best_of and best_of < 2:
        raise ValueError(f"best-of-n needs n >= 2 samples per prompt, got {best_of}")
    if samples_per_prompt is None:
        samples_per_prompt = samples_setting(profile)
    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be at least 1, got {samples_per_prompt}")
    ctx = _setup(profile, limit, max_new_tokens)
    prompts, temperature, max_new_tokens = ctx["prompts"], ctx["temperature"], ctx["max_new_tokens"]
    sft_dir, dtype, device = ctx["sft_dir"], ctx["dtype"], ctx["device"]
    rm, rm_tok, reference, ref_tok = ctx["rm"], ctx["rm_tok"], ctx["reference"], ctx["ref_tok"]
    n = samples_per_prompt
    report: dict[str, Any] = {"n_prompts": len(prompts), "temperature": temperature,
                              "max_new_tokens": max_new_tokens, "samples_per_prompt": n, "policies": {}}
    for label, path in {"sft": sft_dir, **policies}.items():
        model, tok = (reference, ref_tok) if Path(path) == sft_dir else _load_causal(Path(path), dtype, device)
        rounds = []
        for r in range(n):
            samples = sample(model, tok, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                             seed=seed + r)
            scores = score(rm, rm_tok, prompts, [[{"role": "assistant", "content": s["text"]}] for s in samples])
            kls = ([0.0] * len(samples) if model is reference  # SFT against itself: 0 by definition
                   else kl_per_sequence(model, reference, samples, tok.pad_token_id, temperature))
            rounds.append((samples, scores, kls))
        entry = report["policies"][label] = _policy_entry(rounds)
        entry["sql_correct"], entry["sql_valid"] = _sql_rounds(ctx["rows"], [[s["text"] for s in smp]
                                                                              for smp, _, _ in rounds])
        if model is not reference:  # freed before the next policy loads: with 7B models on one GPU, SFT, the
            del model, tok          # reward model and two policies at once would not fit a 40 GB card
            gc.collect()
    _summarise(profile, ctx, report)
    if best_of:
        report["best_of_n"] = best_of_n(ctx, best_of)
    return report


def _summarise(profile: Profile, ctx: dict[str, Any], report: dict[str, Any]) -> None:
    """Per-task means, gains over SFT and the checks that read the scores, from each policy's samples
    (``evaluate_policies``, and ``rescore`` after scoring them again)."""
    tasks = ctx["tasks"]
    for p in report["policies"].values():
        if "sql_valid" not in p:  # a report saved before validity was counted: run its queries again
            p["sql_correct"], p["sql_valid"] = _sql_rounds(ctx["rows"], _texts(p["samples"]))
        p["by_task"] = by_task(tasks, [s["score"] for s in p["samples"]], [s["kl"] for s in p["samples"]])
    base = report["policies"]["sft"]
    within = within_task_std(*_flat(tasks, base["samples"]))
    report["sft_within_task_std"] = within
    for p in report["policies"].values():
        gain = p["mean_score"] - base["mean_score"]
        p["gain_in_sft_within_task_std"] = gain / within if within else None
        p["gain_in_sft_std"], p["gain_se_in_sft_std"] = gain_in_std(
            [s["score"] for s in p["samples"]], [s["score"] for s in base["samples"]], base["std_score"])
    report["trained_tasks"] = trained_tasks_gain(report, tasks, rl_options(profile)["tasks"])
    report["reference"] = reference_check(ctx, report)
    report["sql_shapes"] = sql_shapes(ctx["rows"], report)
    report["constant_answers"] = constant_answers(ctx, report)


def rescore(profile: Profile, report: dict[str, Any], reward_dir: str | Path) -> dict[str, Any]:
    """A saved ``evaluate_policies`` report judged by another reward model: every policy's responses (the
    same texts; KL and SQL correctness are the texts', so they stay; a report saved without ``sql_valid``
    gets it) scored again, and the gains, the reference answers, the fixed replies and the SQL shapes
    worked out again in the new model's scores
    (``python -m llamalab heldout --rescore REPORT --reward DIR``). Asks, without sampling anything,
    whether what one reward model paid for another one pays for too. The best-of-n curve, drawn under
    the old model, is left out. ValueError when the report's prompts are not the profile's held-out
    prompts."""
    import copy

    from .ppo import load_prompts, rl_dtype
    from .reward import load_reward_model, score

    try:
        n, base = int(report["n_prompts"]), report["policies"]["sft"]["samples"]
        if not all("prompt" in e and ("responses" in e or "response" in e) for e in base):
            raise KeyError("samples")
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a held-out report with SFT's responses (as `python -m llamalab heldout --json` "
                         f"writes): no {exc}") from None
    rows = load_prompts(profile, heldout=True)[:n]
    same = [e["prompt"] == _prompt_tail(r["prompt"]) for e, r in zip(base, rows, strict=False)]
    if len(rows) != len(base) or not all(same):
        bad = same.index(False) if not all(same) else len(same)
        raise ValueError(f"the report's held-out prompt {bad + 1} is not the {profile.name} profile's: rescore the "
                         "report with the profile it was made with")
    rm, rm_tok = load_reward_model(Path(reward_dir), dtype=rl_dtype(), device=common.device())
    ctx = {"rows": rows, "prompts": [r["prompt"] for r in rows], "tasks": [r.get("task") or "other" for r in rows],
           "rm": rm, "rm_tok": rm_tok}
    new = copy.deepcopy(report)
    new.pop("best_of_n", None)
    new["reward_model"] = str(reward_dir)
    for p in new["policies"].values():
        texts = [e.get("responses") or [e["response"]] for e in p["samples"]]
        flat = score(rm, rm_tok, [ctx["prompts"][i] for i, t in enumerate(texts) for _ in t],
                     [[{"role": "assistant", "content": x}] for t in texts for x in t])
        at = 0
        for e, t in zip(p["samples"], texts, strict=True):
            mine, at = flat[at:at + len(t)], at + len(t)
            e["score"] = statistics.fmean(mine)
            if "responses" in e:
                e["scores"] = mine
        p["mean_score"], p["std_score"] = statistics.fmean(flat), statistics.pstdev(flat)
    _summarise(profile, ctx, new)
    return new


def _prompt_tail(messages: list[dict]) -> str:
    """How a report names a prompt: the last 200 characters of its last message (``rescore`` matches on it)."""
    return messages[-1]["content"][-200:]


def _policy_entry(rounds: list[tuple[list[dict], list[float], list[float]]]) -> dict[str, Any]:
    """One policy's report from its rounds of (samples, scores, KLs), one round per response drawn for
    every prompt: per prompt the mean score and KL (with every round's values where there are several);
    overall means and the SD over all single responses."""
    every = [x for smp, _, _ in rounds for x in smp]
    all_scores = [x for _, sc, _ in rounds for x in sc]
    entries = []
    for i, first in enumerate(rounds[0][0]):
        sc, kl = [rd[1][i] for rd in rounds], [rd[2][i] for rd in rounds]
        entry = {"prompt": _prompt_tail(first["prompt"]), "response": first["text"],
                 "score": statistics.fmean(sc), "kl": statistics.fmean(kl)}
        if len(rounds) > 1:
            entry.update(scores=sc, kls=kl, responses=[rd[0][i]["text"] for rd in rounds])
        entries.append(entry)
    return {"mean_score": statistics.fmean(all_scores), "std_score": statistics.pstdev(all_scores),
            "mean_kl": statistics.fmean(k for _, _, kl in rounds for k in kl),
            "eos_rate": statistics.fmean(s["has_eos"] for s in every),
            "mean_length": statistics.fmean(len(s["response_ids"]) for s in every),
            "samples": entries}


def _sql_rounds(rows: list[dict], rounds: list[list[str]]) -> tuple[list, list]:
    """(``sql_correct``, ``sql_valid``) of a policy from its rounds of responses (one list of texts per
    round): with one round True/False per prompt, with several the share of each prompt's queries that
    are correct (valid); None for prompts without a reference query."""
    checks = [sql_check(rows, texts) for texts in rounds]

    def column(key: str) -> list:
        if len(checks) == 1:
            return [None if c is None else c[key] for c in checks[0]]
        return [None if col[0] is None else sum(c[key] for c in col) / len(col) for col in zip(*checks, strict=True)]

    return column("correct"), column("valid")


def _texts(samples: list[dict]) -> list[list[str]]:
    """A report's per-prompt entries as rounds of responses (one list of texts per round)."""
    per_prompt = [e.get("responses") or [e["response"]] for e in samples]
    return [list(r) for r in zip(*per_prompt, strict=True)]


def _flat(tasks: list[str], samples: list[dict]) -> tuple[list[str], list[float]]:
    """(task, score) of every single response behind per-prompt entries (one or several rounds)."""
    pairs = [(t, x) for t, s in zip(tasks, samples, strict=True) for x in s.get("scores", [s["score"]])]
    return [t for t, _ in pairs], [x for _, x in pairs]


def trained_tasks_gain(report: dict[str, Any], tasks: list[str], trained: list[str] | None) -> dict[str, Any] | None:
    """Each policy's gain on the held-out prompts of the tasks RL trained on (the profile's ``rl.tasks``),
    in the standard deviation of SFT's scores on those prompts, with its paired standard error. The
    held-out set keeps every task, so where ``rl.tasks`` leaves one out (the cpu profile: clickbait),
    the headline gain mixes prompts the policy was trained for with prompts it never saw the like of.
    None where RL trains on every held-out task."""
    if trained is None:
        return None
    idx = [i for i, t in enumerate(tasks) if t in trained]
    if len(idx) == len(tasks) or len(idx) < 2:
        return None
    sft = [report["policies"]["sft"]["samples"][i] for i in idx]
    base = [s["score"] for s in sft]
    std = statistics.pstdev(_flat([tasks[i] for i in idx], sft)[1])  # of single responses, as the headline SD
    out: dict[str, Any] = {"tasks": sorted({tasks[i] for i in idx}), "n": len(idx), "sft_std_score": std,
                           "left_out": sorted(set(tasks) - {tasks[i] for i in idx}), "policies": {}}
    for label, p in report["policies"].items():
        if label == "sft":
            continue
        scores = [p["samples"][i]["score"] for i in idx]
        gain, se = gain_in_std(scores, base, std)
        out["policies"][label] = {"mean_score": statistics.fmean(scores), "gain_in_sft_std": gain,
                                  "gain_se_in_sft_std": se,
                                  "mean_kl": statistics.fmean(p["samples"][i]["kl"] for i in idx)}
    return out


def sql_check(rows: list[dict], responses: list[str]) -> list[dict[str, bool] | None]:
    """Per held-out prompt: ``{"valid": ..., "correct": ...}`` for the response's SQL on the prompt's
    schema, as the SQL probe scores it (valid: it runs, or is stopped only by the time or row bound;
    correct: it returns the reference query's rows). None for prompts that are not SQL or carry no
    reference (sandboxed: read-only, bounded)."""
    from .. import trainsets
    from ..probes import sql as sqlprobe

    out: list[dict[str, bool] | None] = []
    for i, (row, text) in enumerate(zip(rows, responses, strict=True)):
        if row.get("task") != "sql" or not row.get("reference") or not row.get("schema"):
            out.append(None)
            continue
        item = {"id": f"held-out prompt {i}", "gold_sql": row["reference"],
                "_db_path": str(trainsets.schema_path(row["schema"]))}
        r = sqlprobe.score_item(item, text)
        out.append({"valid": bool(r["valid_sql"]), "correct": bool(r["correct"])})
    return out


def sql_correct(rows: list[dict], responses: list[str]) -> list[bool | None]:
    """Per held-out prompt: does the response's SQL return the reference query's rows on the prompt's
    schema? None for prompts that are not SQL or carry no reference (``sql_check``)."""
    return [None if c is None else c["correct"] for c in sql_check(rows, responses)]


SQL_SHAPES = {"COUNT(DISTINCT": re.compile(r"\bcount\s*\(\s*distinct\b", re.I),
              "GROUP BY": re.compile(r"\bgroup\s+by\b", re.I),
              "HAVING": re.compile(r"\bhaving\b", re.I)}


def sql_shapes(rows: list[dict], report: dict[str, Any]) -> dict[str, Any] | None:
    """How often the answers to the held-out SQL prompts that carry a reference query take an aggregate
    shape (``SQL_SHAPES``: COUNT(DISTINCT, GROUP BY, HAVING), beside the reference queries, and whether the
    reward model pays for the shape: per policy, on the prompts where it wrote both kinds (several
    samples per prompt), the mean of each prompt's score difference (with one, less without) and on how
    many prompts it is above zero (same prompt, so a shape common on prompts the reward model rates high
    anyway does not count as paid for). A policy that writes
    a shape on most answers where the references need one on some, when the reward model scores it
    higher on the same prompt, is reward hacking (cpu profile: README, "What the policies at the bar
    have in common"). Works on a saved ``heldout --json`` report with ``load_prompts(profile,
    heldout=True)`` as ``rows``. None when no SQL prompt has a reference."""
    idx = [i for i, r in enumerate(rows) if r.get("task") == "sql" and r.get("reference")]
    if not idx:
        return None

    def shapes(text: str) -> list[str]:
        return [name for name, rx in SQL_SHAPES.items() if rx.search(text)]

    refs = [shapes(rows[i]["reference"]) for i in idx]
    out: dict[str, Any] = {"n_prompts": len(idx), "reference": {
        "any": sum(map(bool, refs)), **{name: sum(name in r for r in refs) for name in SQL_SHAPES}}, "policies": {}}
    for label, p in report["policies"].items():
        per_prompt = [[(shapes(text), sc) for text, sc in (zip(s["responses"], s["scores"], strict=True)
                                                           if "responses" in s else [(s["response"], s["score"])])]
                      for s in (p["samples"][i] for i in idx)]  # several rounds per prompt, or one
        answers = [a for prompt in per_prompt for a in prompt]
        diffs = []
        for prompt in per_prompt:
            with_one, without = [sc for f, sc in prompt if f], [sc for f, sc in prompt if not f]
            if with_one and without:
                diffs.append(statistics.fmean(with_one) - statistics.fmean(without))
        out["policies"][label] = {
            "n": len(answers), "any": sum(bool(f) for f, _ in answers),
            **{name: sum(name in f for f, _ in answers) for name in SQL_SHAPES},
            "both_prompts": len(diffs), "both_mean_diff": statistics.fmean(diffs) if diffs else None,
            "both_higher": sum(d > 0 for d in diffs)}
    return out


def sql_shape_line(shapes: dict[str, Any]) -> str:
    """One line of ``sql_shapes``: answers with an aggregate shape per policy, and what the reward model
    gives them against the same policy's answers without one to the same prompt."""
    def counts(q: dict[str, Any]) -> str:
        return ", ".join(f"{name} {q[name]}" for name in SQL_SHAPES)

    each = []
    for label, q in shapes["policies"].items():
        text = f"{label} {q['any']}/{q['n']} ({counts(q)}"
        if q["both_prompts"]:
            text += (f"; on the {q['both_prompts']} prompts with both kinds, {q['both_mean_diff']:+.2f} with one, "
                     f"higher on {q['both_higher']}")
        each.append(text + ")")
    ref = shapes["reference"]
    return (f"SQL answers with COUNT(DISTINCT, GROUP BY or HAVING: reference queries {ref['any']}/{shapes['n_prompts']}"
            f" ({counts(ref)}); {'; '.join(each)}")


def reference_check(ctx: dict[str, Any], report: dict[str, Any]) -> dict[str, Any] | None:
    """What the reward model gives the data set's reference answers on the held-out prompts, beside
    SFT's samples on the same prompts: the gain a policy would show by answering every prompt with its
    reference (in SFT SD, as the policies' gains), how often the reference outscores SFT's sample, and
    on SQL prompts where SFT's query is wrong, how often the reward model ranks the correct query
    higher (0.5 = chance). None when no held-out prompt has a reference."""
    from .reward import score

    idx = [i for i, r in enumerate(ctx["rows"]) if r.get("reference")]
    if not idx:
        return None
    base = report["policies"]["sft"]
    ref = score(ctx["rm"], ctx["rm_tok"], [ctx["prompts"][i] for i in idx],
                [[{"role": "assistant", "content": ctx["rows"][i]["reference"]}] for i in idx])
    sft = [base["samples"][i]["score"] for i in idx]
    wrong = [j for j, i in enumerate(idx)  # no correct query (False, or a share of 0 over several rounds)
             if base["sql_correct"][i] is not None and not base["sql_correct"][i]]
    std = base["std_score"]
    return {"n": len(idx), "mean_score": statistics.fmean(ref), "sft_mean_score": statistics.fmean(sft),
            "gain_in_sft_std": (statistics.fmean(ref) - statistics.fmean(sft)) / std if std else None,
            "above_sft": sum(r > s for r, s in zip(ref, sft, strict=True)),
            "sql_sft_wrong": len(wrong), "sql_above_wrong_sft": sum(ref[j] > sft[j] for j in wrong),
            "by_task": task_means([ctx["tasks"][i] for i in idx], ref),
            "scores": ref}


def constant_answers(ctx: dict[str, Any], report: dict[str, Any],
                     answers: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A reward-hacking check on the score itself: what the reward model gives one fixed answer, the
    same for every held-out prompt, beside SFT's samples. A fixed answer carries no information about
    the prompt, so where it outscores SFT the reward model can be raised without answering anything,
    and a policy's gain is no evidence of a better model unless it also beats these.

    Per answer: mean score, gain in SFT SD (as the policies' gains), on how many prompts it beats SFT's
    sample, and the mean per task. ``best_by_task`` picks, for each task, the answer with the highest
    mean score there (picked on these same prompts, so an upper bound): the score of a policy that only
    recognises the task and says one fixed thing. ``answers``: default ``reward.FIXED_REPLIES``, which
    the profile key ``data.fixed_reply_pairs`` teaches a reward model to put below real answers."""
    from .reward import FIXED_REPLIES, score

    answers = answers or FIXED_REPLIES
    base = report["policies"]["sft"]
    sft = [s["score"] for s in base["samples"]]
    std, tasks, prompts = base["std_score"], ctx["tasks"], ctx["prompts"]

    def gain(mean: float) -> float | None:
        return (mean - base["mean_score"]) / std if std else None

    per: dict[str, dict[str, Any]] = {}
    for a in answers:
        sc = score(ctx["rm"], ctx["rm_tok"], prompts, [[{"role": "assistant", "content": a}]] * len(prompts))
        per[a] = {"mean_score": statistics.fmean(sc), "gain_in_sft_std": gain(statistics.fmean(sc)),
                  "above_sft": sum(x > s for x, s in zip(sc, sft, strict=True)),
                  "by_task": task_means(tasks, sc),
                  "scores": sc}
    best = {t: max(answers, key=lambda a: per[a]["by_task"][t]) for t in sorted(set(tasks))}
    mixed = [per[best[t]]["scores"][i] for i, t in enumerate(tasks)]
    return {"n": len(prompts), "answers": per, "best_by_task": best,
            "best_by_task_mean_score": statistics.fmean(mixed),
            "best_by_task_gain_in_sft_std": gain(statistics.fmean(mixed))}


def expected_best_of(scores: list[float], k: int, values: list[float] | None = None) -> float:
    """Unbiased estimate, from n >= k scored samples of one prompt, of the expected best score among k
    samples: the i-th smallest score is the best of a k-subset in C(i-1, k-1) of the C(n, k) subsets.
    With ``values`` (one per sample), the expected value of the sample that the best score picks
    instead (e.g. 1.0 where its SQL is correct); of samples with equal scores, the later one is picked."""
    n = len(scores)
    if not 1 <= k <= n:
        raise ValueError(f"best of {k} needs 1 <= k <= {n} samples")
    if values is not None and len(values) != n:
        raise ValueError(f"{len(values)} values for {n} scored samples")
    order = sorted(range(n), key=lambda i: scores[i])
    picked = [scores[i] if values is None else values[i] for i in order]
    return sum(math.comb(i, k - 1) * picked[i] for i in range(k - 1, n)) / math.comb(n, k)


def any_of(flags: list[bool], k: int) -> float:
    """Unbiased estimate, from n >= k samples of which c pass, of the chance that at least one of k
    random samples passes: 1 - C(n-c, k) / C(n, k) (pass@k; Chen et al., 2021)."""
    n, c = len(flags), sum(map(bool, flags))
    if not 1 <= k <= n:
        raise ValueError(f"any of {k} needs 1 <= k <= {n} samples")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def best_of_n_kl(k: int) -> float:
    """KL (nats) from the sampling model to its best-of-k policy: at most log k - (k-1)/k, and close to
    it when the same response is rarely sampled twice (Beirami et al., 2024, "Theoretical guarantees
    on the best-of-n alignment policy")."""
    return math.log(k) - (k - 1) / k


def best_of_n(ctx: dict[str, Any], n: int, seed: int = 5000) -> dict[str, Any]:
    """The reward that plain sampling from the SFT model reaches at a given KL: n responses per
    held-out prompt, each scored by the reward model, and for k = 1, 2, 4, ..., n the mean over
    prompts of the expected best score among k (with the KL bound of picking it). It is the baseline
    an RL policy has to beat on the reward-KL frontier (Gao et al., 2022, "Scaling laws for reward
    model overoptimization"), and it says how far a given gain lies from the SFT model.

    ``ctx`` is ``_setup``'s (``evaluate_policies(..., best_of=n)`` passes its own). Gains are in
    standard deviations of the SFT scores, pooled over all n samples.

    On the SQL prompts with a reference query, every sample's query is run (``sql_correct``), and each
    k also gets ``sql_picked_correct``, the expected number of those prompts where the reward model's
    pick among k samples is correct (at k = 1: a random sample's), and ``sql_any_correct``, the
    expected number where at least one of the k is: whether reranking by this reward model finds
    correct SQL, measured without going through the reward model."""
    from .reward import score

    prompts, tasks = ctx["prompts"], ctx["tasks"]
    per_prompt: list[list[float]] = [[] for _ in prompts]
    texts: list[list[str]] = [[] for _ in prompts]
    correct: list[list[bool | None]] = [[] for _ in prompts]
    for round_ in range(n):
        samples = sample(ctx["reference"], ctx["ref_tok"], prompts, max_new_tokens=ctx["max_new_tokens"],
                         temperature=ctx["temperature"], seed=seed + round_)
        replies = [s["text"] for s in samples]
        scores = score(ctx["rm"], ctx["rm_tok"], prompts, [[{"role": "assistant", "content": t}] for t in replies])
        flags = sql_correct(ctx["rows"], replies)
        for i, (sc, t, f) in enumerate(zip(scores, replies, flags, strict=True)):
            per_prompt[i].append(sc)
            texts[i].append(t)
            correct[i].append(f)
    pooled = [x for row in per_prompt for x in row]
    mean, std = statistics.fmean(pooled), statistics.pstdev(pooled)
    sql = [i for i, row in enumerate(correct) if row[0] is not None]
    ks = sorted({*(2 ** i for i in range(n.bit_length()) if 2 ** i <= n), n})
    curve = []
    for k in ks:
        best = [expected_best_of(row, k) for row in per_prompt]
        curve.append({"k": k, "mean_score": statistics.fmean(best), "kl_bound": best_of_n_kl(k),
                      "gain_in_sft_std": (statistics.fmean(best) - mean) / std if std else None,
                      "by_task": task_means(tasks, best),
                      "sql_picked_correct": sum(expected_best_of(per_prompt[i], k, [float(bool(f)) for f in correct[i]])
                                                for i in sql),
                      "sql_any_correct": sum(any_of(correct[i], k) for i in sql)})
    return {"n": n, "n_prompts": len(prompts), "temperature": ctx["temperature"],
            "max_new_tokens": ctx["max_new_tokens"], "sft_mean_score": mean, "sft_std_score": std,
            "n_sql": len(sql), "curve": curve, "tasks": tasks, "scores": per_prompt, "texts": texts,
            "sql_correct": correct}


def best_of_n_lines(report: dict[str, Any]) -> list[str]:
    """One line per k: the expected best-of-k score, its gain in SFT SD and its KL bound."""
    lines = [f"best-of-k sampling from the SFT model ({report['n']} samples per prompt, {report['n_prompts']} "
             f"prompts; SFT score SD {report['sft_std_score']:.2f} over all samples)"]
    for c in report["curve"]:
        line = (f"best-of-{c['k']:<3d} mean score {c['mean_score']:6.2f}  KL <= {c['kl_bound']:5.2f} nats  "
                f"gain {c['gain_in_sft_std']:+.2f} SFT SD")
        if report.get("n_sql"):
            line += (f"  SQL correct: the reward model's pick {c['sql_picked_correct']:.1f}/{report['n_sql']}, "
                     f"any of {c['k']} {c['sql_any_correct']:.1f}/{report['n_sql']}")
        lines.append(line)
    return lines


def gain_in_std(scores: list[float], base_scores: list[float], std: float) -> tuple[float | None, float | None]:
    """The mean gain of ``scores`` over ``base_scores`` (the same prompts, in order) and its paired
    standard error, both in units of ``std``; None where ``std`` is 0 or the SE is undefined."""
    if not std:
        return None, None
    se = paired_se(scores, base_scores)
    return (statistics.fmean(scores) - statistics.fmean(base_scores)) / std, None if se is None else se / std


def paired_se(scores: list[float], base_scores: list[float]) -> float | None:
    """Standard error of the mean gain over the same prompts (paired: the gap between tasks, which
    both policies share, cancels)."""
    diffs = [a - b for a, b in zip(scores, base_scores, strict=True)]
    return statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None


def by_task(tasks: list[str], scores: list[float], kls: list[float]) -> dict[str, dict[str, float]]:
    """Mean score and KL per task: where the reward moved, and where it had no room to."""
    out = {}
    for t in sorted(set(tasks)):
        idx = [i for i, x in enumerate(tasks) if x == t]
        out[t] = {"n": len(idx), "mean_score": statistics.fmean(scores[i] for i in idx),
                  "mean_kl": statistics.fmean(kls[i] for i in idx)}
    return out


def task_means(tasks: list[str], values: list[float]) -> dict[str, float]:
    """The mean of ``values`` per task, tasks in sorted order."""
    return {t: statistics.fmean(v for v, x in zip(values, tasks, strict=True) if x == t) for t in sorted(set(tasks))}


def within_task_std(tasks: list[str], scores: list[float]) -> float | None:
    """The standard deviation of scores around their own task's mean (pooled over tasks). The plain
    standard deviation of a mixed prompt set is mostly the gap between tasks (the reward model's
    scale differs by task), which no policy change within a task can move."""
    means = task_means(tasks, scores)
    resid = [s - means[t] for s, t in zip(scores, tasks, strict=True)]
    return math.sqrt(statistics.fmean(r * r for r in resid)) if resid else None


def policy_table(report: dict[str, Any]):
    """A report's policies as a DataFrame, one row each: its single figures (mean score, SD, KL, gains,
    EOS rate, length); the per-prompt lists (``samples``, ``sql_correct``, ``sql_valid``) and the
    per-task dicts left out."""
    import pandas as pd

    return pd.DataFrame({label: {k: v for k, v in p.items() if not isinstance(v, list | dict)}
                         for label, p in report["policies"].items()}).T


def summary_lines(report: dict[str, Any]) -> list[str]:
    """One line per policy: mean score, gain over SFT in SFT standard deviations (± paired standard
    error; also within tasks) and mean KL per sequence."""
    n = report.get("samples_per_prompt", 1)
    each = "one sample each" if n == 1 else f"{n} samples each (gains and SEs on per-prompt means)"
    lines = [f"{report['n_prompts']} held-out prompts, {each} at temperature {report['temperature']}, "
             f"SFT score SD {report['policies']['sft']['std_score']:.2f} ({report['sft_within_task_std']:.2f} within "
             f"tasks)"]
    for label, p in report["policies"].items():
        line = f"{label:5s} mean score {p['mean_score']:6.2f}  mean KL {p['mean_kl']:5.2f} nats"
        if label != "sft" and p.get("gain_in_sft_std") is not None:
            se = p.get("gain_se_in_sft_std")
            line += (f"  gain {p['gain_in_sft_std']:+.2f}" + (f" ± {se:.2f}" if se is not None else "")
                     + " SFT SD")
            if p.get("gain_in_sft_within_task_std") is not None:
                line += f" ({p['gain_in_sft_within_task_std']:+.2f} within-task SD)"
        flags = [f for f in p.get("sql_correct") or [] if f is not None]
        valid = [f for f in p.get("sql_valid") or [] if f is not None]
        if flags:
            fmt = "{}" if n == 1 else "{:.2f}"
            line += "  SQL " + (f"valid {fmt.format(sum(valid))}/{len(valid)}, " if valid else "")
            line += f"correct {fmt.format(sum(flags))}/{len(flags)}" + (f" (mean over {n} samples)" if n > 1 else "")
        lines.append(line)
    if (sub := report.get("trained_tasks")) and sub["policies"]:
        each = ", ".join(f"{label} {q['gain_in_sft_std']:+.2f}" + (f" ± {q['gain_se_in_sft_std']:.2f}"
                                                                    if q["gain_se_in_sft_std"] is not None else "")
                         + f" at {q['mean_kl']:.2f} nats" for label, q in sub["policies"].items()
                         if q["gain_in_sft_std"] is not None)
        lines.append(f"on the {sub['n']} prompts of the tasks RL trains on ({', '.join(sub['tasks'])}; not "
                     f"{', '.join(sub['left_out'])}), SFT score SD {sub['sft_std_score']:.2f}: gain {each} "
                     "(in that SD)")
    if ref := report.get("reference"):
        gain = ref["gain_in_sft_std"]
        lines.append(f"reference answers: mean score {ref['mean_score']:6.2f} on {ref['n']} prompts (SFT "
                     f"{ref['sft_mean_score']:.2f}), gain {gain:+.2f} SFT SD if a policy gave every one; above "
                     f"SFT's {'sample' if n == 1 else 'mean'} on {ref['above_sft']}/{ref['n']}" if gain is not None else
                     f"reference answers: mean score {ref['mean_score']:6.2f} on {ref['n']} prompts")
        if ref["sql_sft_wrong"]:
            which = "SFT's query is wrong" if n == 1 else f"none of SFT's {n} queries is right"
            lines.append(f"on the {ref['sql_sft_wrong']} SQL prompts where {which}, the reward model "
                         f"scores the reference query higher on {ref['sql_above_wrong_sft']} "
                         f"({ref['sql_above_wrong_sft'] / ref['sql_sft_wrong']:.0%}; 50% = chance)")
    if shapes := report.get("sql_shapes"):
        lines.append(sql_shape_line(shapes))
    if (const := report.get("constant_answers")) and const["best_by_task_gain_in_sft_std"] is not None:
        each = ", ".join(f"{a!r} {c['gain_in_sft_std']:+.2f} (above SFT on {c['above_sft']}/{const['n']})"
                         for a, c in const["answers"].items())
        best = ", ".join(f"{t}: {a!r}" for t, a in const["best_by_task"].items())
        lines.append(f"one fixed answer to every prompt, gain in SFT SD: {each}; the best one per task ({best}; "
                     f"picked on these prompts) {const['best_by_task_gain_in_sft_std']:+.2f}")
    return lines


def baseline_stats(v0: list[float], scores: list[list[float]], tasks: list[str]) -> dict[str, Any]:
    """How well a per-prompt baseline ``v0`` (one value per prompt) predicts the scores of that
    prompt's sampled responses (``scores[i]``, two or more per prompt), beside the baselines RLOO and a
    per-task mean would give. The standard deviations are of score minus baseline over every response:
    a baseline is useful where its SD is below the plain one (no baseline)."""
    if len(v0) != len(scores) or len(scores) != len(tasks) or any(len(s) < 2 for s in scores):
        raise ValueError("baseline_stats: one v0 and task per prompt, and at least two scores per prompt")
    flat = [x for s in scores for x in s]
    means = [statistics.fmean(s) for s in scores]
    per_task = task_means([t for t, s in zip(tasks, scores, strict=True) for _ in s], flat)
    return {
        "prompts": len(scores), "responses": len(flat),
        "corr_v0_prompt_mean": statistics.correlation(v0, means) if len(set(v0)) > 1 else None,
        "sd_none": statistics.pstdev(flat),
        "sd_minus_v0": statistics.pstdev([x - b for s, b in zip(scores, v0, strict=True) for x in s]),
        "sd_minus_task_mean": statistics.pstdev([x - per_task[t] for s, t in zip(scores, tasks, strict=True)
                                                 for x in s]),
        "sd_minus_loo_mean": statistics.pstdev([x - (sum(s) - x) / (len(s) - 1) for s in scores for x in s]),
        "by_task": {t: {"v0": statistics.fmean(b for b, x in zip(v0, tasks, strict=True) if x == t),
                        "score": per_task[t]} for t in sorted(per_task)},
    }


def response_ids(tok, prompt: list[dict], text: str, query: list[int] | None = None) -> list[int]:
    """The token ids the reward model scores for ``text`` as the answer to ``prompt`` (``reward.score``'s
    sequence: the whole conversation through the chat template, cut after its EOS), checked to start
    with the query's ids. Not the query's ids followed by ``text`` tokenized alone: a SentencePiece
    tokenizer (LLaMA's) marks the start of a separately tokenized text with a word boundary that the
    same text inside the template does not get."""
    if query is None:
        query = common.chat_ids(tok, prompt, add_generation_prompt=True)
    ids = common.chat_ids(tok, [*prompt, {"role": "assistant", "content": text}])
    if ids[: len(query)] != query:
        raise ValueError("the chat template renders the prompt differently once an answer follows it; "
                         f"cannot locate the answer's tokens (answer {text[:60]!r})")
    return ids


def value_baseline(profile: Profile, report: dict[str, Any], reward_dir: str | Path | None = None) -> dict[str, Any]:
    """PPO's value model starts as the reward model (``load_stack``), so before it learns, its baseline
    for a prompt is the reward model's reading of the prompt with no answer yet, V(0). This scores
    that reading against the SFT responses of a held-out report (``evaluate_policies`` with two or
    more samples per prompt): ``baseline_stats``, plus the mean size of the value's step from one
    response token to the next (GAE turns those steps into per-token advantages)."""
    import torch

    from .ppo import load_prompts
    from .reward import load_reward_model

    rows = load_prompts(profile, heldout=True)
    samples = report["policies"]["sft"]["samples"]
    if len(samples) != len(rows):
        raise ValueError(f"value_baseline: the report has {len(samples)} prompts, the profile's held-out set "
                         f"{len(rows)}")
    rm, tok = load_reward_model(reward_dir or common.require_stage(profile, "reward"))
    v0, finals, steps = [], [], []
    with torch.no_grad():
        for row, sample in zip(rows, samples, strict=True):
            query = common.chat_ids(tok, row["prompt"], add_generation_prompt=True)
            per_prompt = []
            for text in sample["responses"]:
                ids = response_ids(tok, row["prompt"], text, query)
                hidden = rm.model(input_ids=torch.tensor([ids], device=rm.device)).last_hidden_state
                values = rm.score(hidden)[0, len(query) - 1:, 0].tolist()  # V(0) .. V(T) = the score
                per_prompt.append(values[-1])
                steps += [abs(b - a) for a, b in zip(values[:-1], values[1:], strict=True)]
            v0.append(values[0])
            finals.append(per_prompt)
    out = baseline_stats(v0, finals, [r.get("task", "?") for r in rows])
    out["mean_abs_value_step"] = statistics.fmean(steps)
    return out
