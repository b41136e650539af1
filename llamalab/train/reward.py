"""Stage 2 of the recipe: a reward model with LoRA (TRL ``RewardTrainer``), from the merged SFT model.

A sequence-classification head with one label on the merged SFT model; LoRA on the attention and
MLP projections (the head is trained fully). Evaluated by pairwise accuracy (chosen scored above
rejected) and mean margin on held-out pairs. Writes ``runs/<profile>/reward/``: ``adapter/``,
``merged/`` (a plain ``AutoModelForSequenceClassification``, as PPO needs), ``metrics.json``,
``run_info.json``, and ``checkpoints/`` for ``--resume``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from .. import models, paths
from ..config import ConfigError, Profile
from . import common

DEFAULT_DATA = "train/preferences.jsonl"
OWN_PAIRS_FILE = "own_mistakes.jsonl"  # runs/<profile>/reward/: the pairs the stage sampled from the SFT model
FIXED_REPLIES = ("yes", "no", "I don't know.")  # replies that ignore the question (heldout.constant_answers)


def load_pair_splits(profile: Profile, data: str | Path | None = None, *,
                     own: list[dict] | None = None) -> tuple[list[dict], list[dict]]:
    """(train, eval) pairs: the profile's ``data.pairs_train``/``pairs_eval`` first rows of each split.

    ``own``: pairs from the SFT model's own SQL (``execution_pairs``). With ``data.execution_pairs`` = k,
    up to k of them (a seeded draw) take the place of the first training rows, so the budget stays
    ``pairs_train``; without ``own`` the rows stay the data set's. With ``data.policy_pairs`` = m, up to
    m pairs of the file ``data.policy_pairs_from`` (another policy's mistakes, written by
    ``python -m llamalab reward pairs --policy DIR --pairs-only``; a seeded draw, leaving out pairs the
    SFT draw holds already) join them, and the two are shuffled together. With
    ``data.fixed_reply_pairs`` = k, the last k of the training rows give way to k pairs that reject a
    fixed reply (``fixed_reply_pairs``)."""
    import random

    from ..trainsets import load_preferences

    rows = load_preferences(Path(data) if data else paths.data_dir() / DEFAULT_DATA)
    lim = common.section(profile, "data")
    keep = ("prompt", "chosen", "rejected")
    train = [{k: r[k] for k in keep} for r in rows if r.get("split", "train") == "train"]
    evals = [{k: r[k] for k in keep} for r in rows if r.get("split") == "eval"]
    n_train, n_eval = lim.get("pairs_train"), lim.get("pairs_eval")
    train = train[:n_train] if n_train else train
    n_own, _ = execution_options(profile, len(train))
    n_more, more_file = policy_pair_options(profile, len(train) - n_own)
    drawn: list[dict] = []
    if own and n_own:
        drawn = [{k: r[k] for k in keep} for r in own]
        random.Random(0).shuffle(drawn)
        drawn = drawn[:n_own]
    if n_more:
        held = {json.dumps(r, sort_keys=True) for r in drawn}
        more = [{k: r[k] for k in keep} for r in load_preferences(more_file)]
        more = [r for r in more if json.dumps(r, sort_keys=True) not in held]
        random.Random(1).shuffle(more)
        drawn = drawn + more[:n_more]
        random.Random(0).shuffle(drawn)
    train = drawn + train[:len(train) - len(drawn)]
    if k := lim.get("fixed_reply_pairs"):
        where = f"{profile.path}: data.fixed_reply_pairs"
        n_set = n_own + n_more
        if not isinstance(k, int) or isinstance(k, bool) or not 0 < k < len(train) - n_set:
            less = " + ".join(f"data.{name} = {v}" for name, v in (("execution_pairs", n_own), ("policy_pairs", n_more))
                              if v)
            raise ConfigError(f"{where}: {k!r} is not a whole number between 1 and {len(train) - n_set - 1} (the "
                              "training pairs" + (f" less {less}" if less else "") + ")")
        try:
            train = fixed_reply_pairs(train[:len(train) - k], k)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return train, evals[:n_eval] if n_eval else evals


def execution_options(profile: Profile, n_train: int | None = None) -> tuple[int, int]:
    """(``data.execution_pairs``, ``data.execution_samples``): how many training pairs come from the SFT
    model's own SQL mistakes (0 = none) and how many responses per SQL training prompt are sampled to
    find them (default 2). ConfigError, naming the profile file and key, for anything else."""
    lim = common.section(profile, "data")
    k, samples = lim.get("execution_pairs") or 0, lim.get("execution_samples", 2)
    top = n_train - 1 if n_train is not None else None
    if not isinstance(k, int) or isinstance(k, bool) or k < 0 or (top is not None and k > top):
        raise ConfigError(f"{profile.path}: data.execution_pairs: {k!r} is not a whole number between 0 and "
                          f"{top if top is not None else 'the training pairs'} (the training pairs less one)")
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ConfigError(f"{profile.path}: data.execution_samples: {samples!r} is not a whole number of at least 1")
    return k, samples


def policy_pair_options(profile: Profile, room: int | None = None) -> tuple[int, Path | None]:
    """(``data.policy_pairs``, ``data.policy_pairs_from``): how many training pairs come from a file of
    another policy's mistakes (0 = none) and that file (a path, relative to the working directory or
    absolute). ``room``: the training pairs left beside the execution pairs. ConfigError, naming the
    profile file and key, for a bad count, a missing file, or a file without a count."""
    lim = common.section(profile, "data")
    m, where = lim.get("policy_pairs") or 0, lim.get("policy_pairs_from")
    top = room - 1 if room is not None else None
    if not isinstance(m, int) or isinstance(m, bool) or m < 0 or (top is not None and m > top):
        raise ConfigError(f"{profile.path}: data.policy_pairs: {m!r} is not a whole number between 0 and "
                          f"{top if top is not None else 'the training pairs'} (the training pairs less "
                          "data.execution_pairs, less one)")
    if not m:
        if where:
            raise ConfigError(f"{profile.path}: data.policy_pairs_from: {where} is set but data.policy_pairs is "
                              f"{m!r}: say how many of its pairs to train on")
        return 0, None
    if not where:
        raise ConfigError(f"{profile.path}: data.policy_pairs: {m} pairs, but data.policy_pairs_from names no file "
                          "(write one with `python -m llamalab reward pairs --policy DIR --pairs-only --out FILE`)")
    path = Path(where).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"{profile.path}: data.policy_pairs_from: {path}: no such file")
    return m, path


def fixed_reply_pairs(rows: list[dict], k: int, *, replies: tuple[str, ...] = FIXED_REPLIES,
                      seed: int = 0) -> list[dict]:
    """``rows`` plus k pairs that put a fixed reply ("yes", "no", ...) below a real answer, shuffled in.

    Bradley-Terry pairs only compare two replies to the same prompt. In the data set a bare "yes" or
    "no" only ever answers a clickbait prompt, where it is the chosen reply of every pair, so nothing
    stops a reward model from rating "yes" to a joke above any explanation: on the cpu profile it does
    (``heldout.constant_answers``). Each added pair takes a row whose chosen reply is not itself one of
    ``replies`` (drawn without replacement) and rejects a random fixed reply against that chosen one."""
    import random

    rng = random.Random(seed)
    fixed = {r.lower() for r in replies}
    cands = [r for r in rows if _as_messages(r["chosen"], "assistant")[-1]["content"].strip().lower() not in fixed]
    if k > len(cands):
        raise ValueError(f"{k} fixed-reply pairs asked for, but only {len(cands)} rows have a chosen reply to "
                         "keep")
    added = [{"prompt": r["prompt"], "chosen": r["chosen"],
              "rejected": [{"role": "assistant", "content": rng.choice(replies)}]} for r in rng.sample(cands, k)]
    out = rows + added
    rng.shuffle(out)
    return out


def load_reward_model(path: str | Path, dtype: Any = None, device: str | None = None):
    """A merged reward model directory -> (model, tokenizer), eval mode.

    ``dtype`` is a torch dtype or its name; by default the RL dtype (``ppo.rl_dtype``: fp32 on a CPU, bf16
    on a GPU) on this process's device (``common.device()``): left on the CPU in fp32, a 7B reward model
    would score every batch there while the GPU waits."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .ppo import rl_dtype

    path = Path(path)
    if not (path / "config.json").is_file():
        raise models.ModelError(f"{path} is not a reward model directory (no config.json)")
    dtype = rl_dtype() if dtype is None else dtype
    device = common.device() if device is None else device
    model = AutoModelForSequenceClassification.from_pretrained(
        path, dtype=getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    tok = models.prepare_tokenizer(AutoTokenizer.from_pretrained(path), model)
    if device:
        model.to(device)
    model.eval()
    return model, tok


def _as_messages(x, role: str) -> list[dict]:
    return [{"role": role, "content": x}] if isinstance(x, str) else list(x)


def tokenize_pairs(tokenizer, rows: list[dict]) -> list[dict]:
    """Pre-tokenize preference rows for RewardTrainer (``chosen_ids``/``rejected_ids``), cut after EOS."""
    return [{"chosen_ids": common.chat_ids(tokenizer, _as_messages(r["prompt"], "user") + _as_messages(r["chosen"], "assistant")),
             "rejected_ids": common.chat_ids(tokenizer, _as_messages(r["prompt"], "user") + _as_messages(r["rejected"], "assistant"))}
            for r in rows]


def score(model, tokenizer, prompts: list, responses: list, batch_size: int = 16) -> list[float]:
    """Reward of each (prompt, response). Conversational items are tokenized as RewardTrainer does."""
    import torch

    seqs = [common.chat_ids(tokenizer, _as_messages(p, "user") + _as_messages(r, "assistant"))
            for p, r in zip(prompts, responses, strict=True)]
    out: list[float] = []
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start:start + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(chunk):  # right padding, as the trainer's collator
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        out.extend(logits[:, 0].float().cpu().tolist())
    return out


def pairwise_metrics(model, tokenizer, pairs: list[dict]) -> dict[str, Any]:
    """Pairwise accuracy, mean margin, and the scores themselves (for histograms)."""
    chosen = score(model, tokenizer, [p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
    rejected = score(model, tokenizer, [p["prompt"] for p in pairs], [p["rejected"] for p in pairs])
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    n = len(pairs)
    return {"n": n, "pairwise_accuracy": sum(m > 0 for m in margins) / n if n else None,
            "mean_margin": sum(margins) / n if n else None,
            "chosen_scores": chosen, "rejected_scores": rejected}


def reward_config(profile: Profile, output_dir: Path, **overrides):
    import torch
    from trl import RewardConfig

    values = common.section(profile, "reward")
    values.update(overrides)
    values.update(common.autocast_default(profile, values))  # TRL's bf16=True would autocast on any CPU
    return common.build_dataclass(RewardConfig, values, profile, "reward", output_dir=str(output_dir),
                                  report_to=[], use_cpu=not torch.cuda.is_available(),
                                  dataloader_num_workers=0)


OWN_MISTAKES_READS = ("ppo.response_length", "ppo.temperature", "rl.tasks")  # what sampling SFT's SQL reads


def stage_fingerprint(profile: Profile, inputs: list[Path], sample_own: bool) -> str:
    """The reward stage's fingerprint. Sampling SFT's own SQL mistakes (``execution_options``) reads the RL
    training prompts (``rl.tasks``) at the RL temperature and response length, and no other online-RL
    setting: tuning PPO's KL coefficient or learning rate leaves the reward model reusable."""
    if sample_own:
        from .ppo import DEFAULT_PROMPTS

        return common.fingerprint(profile, "reward", [*inputs, paths.data_dir() / DEFAULT_PROMPTS],
                                  upstream=["sft"], extra_sections=OWN_MISTAKES_READS)
    return common.fingerprint(profile, "reward", inputs, upstream=["sft"])


def train_reward(profile: Profile, *, resume: bool = False, data: str | Path | None = None,
                 callbacks: list | None = None, progress: bool = True, retrain: bool = True) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardTrainer

    from .sft import merge_adapter

    base_dir = common.require_stage(profile, "sft")
    # a bad file or profile fails here, before anything is sampled or trained
    train_rows, eval_rows = load_pair_splits(profile, data)
    data_file = Path(data) if data else paths.data_dir() / DEFAULT_DATA
    n_own, n_samples = execution_options(profile)
    n_more, more_file = policy_pair_options(profile)
    sample_own = bool(n_own) and data is None  # a --data file is used as it is (it may hold such pairs already)
    inputs = [data_file] + ([more_file] if more_file else [])
    fp = stage_fingerprint(profile, inputs, sample_own)
    if not retrain and not resume and (done := common.reusable(profile, "reward", fp)):
        return done
    out, ck_dir, last = common.stage_checkpoints(profile, "reward", resume)
    own, own_stats = None, {}
    if sample_own:
        own_file = out / OWN_PAIRS_FILE
        if resume and own_file.is_file():  # the pairs the interrupted run trained on
            from ..trainsets import load_preferences

            own = load_preferences(own_file)
            own_stats = {"execution_pairs_made": len(own), "execution_pairs_from": str(own_file)}
        else:
            started = time.perf_counter()
            res = execution_pairs(profile, samples=n_samples)
            own = res["pairs"]
            own_stats = {"execution_samples": res["samples"], "execution_samples_correct": res["correct"],
                         "execution_pairs_made": len(own), "execution_sampling_s": time.perf_counter() - started}
            if common.is_main_process():  # each process samples the same pairs (same seeds); one writes them
                common.write_text_atomic(own_file, "".join(json.dumps(r) + "\n" for r in own))
        train_rows, eval_rows = load_pair_splits(profile, data, own=own)
        own_stats["execution_pairs_used"] = min(n_own, len(own))
    if more_file:
        from ..trainsets import load_preferences

        own_stats.update(policy_pairs_from=str(more_file), policy_pairs=n_more,
                         policy_pairs_in_file=len(load_preferences(more_file)))
    dtype, why = common.train_dtype(profile)
    args = reward_config(profile, ck_dir, disable_tqdm=not progress)
    common.seed_everything(args.seed)  # the new score head is drawn here, the LoRA adapter next
    model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1, dtype=dtype)
    tok = models.prepare_tokenizer(AutoTokenizer.from_pretrained(base_dir), model)
    tok.padding_side = "right"
    steps = common.step_recorder()
    lora = common.lora_config(profile, task_type="SEQ_CLS")
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(tokenize_pairs(tok, train_rows)),
                            eval_dataset=Dataset.from_list(tokenize_pairs(tok, eval_rows)) if eval_rows else None,
                            processing_class=tok, peft_config=lora, callbacks=[steps, *(callbacks or [])])
    started = common.stage_clock()
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    stats = common.memory_and_time(trainer, started)
    metrics: dict[str, Any] = {"train_loss": result.training_loss, "global_step": trainer.state.global_step,
                               "train_pairs": len(train_rows), "eval_pairs": len(eval_rows),
                               "resumed_from": last.name if last else None, "first_step_this_run": steps.first_step, "base_dtype": why, **own_stats, **stats}
    if common.is_main_process():
        with tempfile.TemporaryDirectory(dir=out, prefix=".tmp-") as tmp:
            tmp = Path(tmp)
            trainer.model.save_pretrained(tmp / "adapter")
            merge_adapter(str(base_dir), tmp / "adapter", tmp / "merged", seq_cls=True)
            rm, rtok = load_reward_model(tmp / "merged")
            with torch.inference_mode():
                held = pairwise_metrics(rm, rtok, eval_rows) if eval_rows else {}
            metrics.update({f"eval_{k}": v for k, v in held.items() if not k.endswith("_scores")})
            metrics["eval_scores"] = {"chosen": held.get("chosen_scores"), "rejected": held.get("rejected_scores")}
            common.replace_dir(tmp / "adapter", out / "adapter")
            common.replace_dir(tmp / "merged", out / "merged")
        metrics["log_history"] = trainer.state.log_history
        common.write_json(out / "metrics.json", metrics)
        common.write_json(out / "run_info.json", common.run_info(
            profile, "reward", {"reward": args, "lora": lora},
            {"base_model": str(base_dir), "data": str(data_file), "fingerprint": fp,
             "own_mistakes": str(out / OWN_PAIRS_FILE) if sample_own else None,
             "policy_pairs_from": str(more_file) if more_file else None}))
    return metrics


def pairs_from_samples(rows: list[dict], texts: list[list[str]], flags: list[list[bool | None]], *,
                       seed: int = 0, max_per_prompt: int = 2) -> list[dict]:
    """Preference rows from sampled SQL that was run: per prompt, up to ``max_per_prompt`` distinct wrong
    responses, each rejected against the reference query or a sampled query that returned the right
    rows. ``texts[i]``/``flags[i]``: prompt i's responses and whether each is correct (None: not
    checked, left out)."""
    import random

    rng = random.Random(seed)
    out = []
    for row, said, ok in zip(rows, texts, flags, strict=True):
        good = [row["reference"]] + [t for t, f in zip(said, ok, strict=True) if f]
        bad = list(dict.fromkeys(t for t, f in zip(said, ok, strict=True) if f is False and t.strip()))
        for text in bad[:max_per_prompt]:
            out.append({"prompt": row["prompt"], "chosen": [{"role": "assistant", "content": rng.choice(good)}],
                        "rejected": [{"role": "assistant", "content": text}], "task": "sql",
                        "schema": row.get("schema"), "split": "train"})
    return out


def execution_pairs(profile: Profile, *, samples: int = 4, seed: int = 7000,
                    max_per_prompt: int = 2, model_dir: str | Path | None = None) -> dict[str, Any]:
    """Preference pairs from the SFT model's own mistakes: ``samples`` responses per RL training SQL
    prompt (the RL temperature and length), each run against its schema (read-only, bounded); a
    query that returns the wrong rows becomes a rejected answer, beside the reference query. The
    data set's synthetic pairs cover a few templated failure kinds; these are the errors the policy
    actually makes (invented columns, made-up constants), which is what RL will push on.
    ``model_dir``: sample this merged model instead (an RL policy: its mistakes, for
    ``data.policy_pairs``).

    Returns ``pairs`` (preference rows, split "train") and the counts."""
    from . import heldout
    from .ppo import load_prompts, rl_dtype

    if samples < 1:
        raise ValueError(f"execution pairs: samples must be at least 1, got {samples}")
    rows = [r for r in load_prompts(profile) if r.get("task") == "sql" and r.get("reference") and r.get("schema")]
    if not rows:
        raise ValueError("execution pairs: no SQL training prompt with a reference and a schema")
    ppo = common.section(profile, "ppo")
    where = Path(model_dir) if model_dir else common.require_stage(profile, "sft")
    if not (where / "config.json").is_file():
        raise FileNotFoundError(f"{where}: no merged model here (config.json and weights)")
    model, tok = heldout._load_causal(where, rl_dtype(), common.device())
    texts: list[list[str]] = [[] for _ in rows]
    flags: list[list[bool | None]] = [[] for _ in rows]
    prompts = [r["prompt"] for r in rows]
    for round_ in range(samples):
        drawn = heldout.sample(model, tok, prompts, max_new_tokens=int(ppo.get("response_length", 64)),
                               temperature=float(ppo.get("temperature", 0.7)), seed=seed + round_)
        said = [d["text"] for d in drawn]
        for i, (t, f) in enumerate(zip(said, heldout.sql_correct(rows, said), strict=True)):
            texts[i].append(t)
            flags[i].append(f)
    pairs = pairs_from_samples(rows, texts, flags, seed=seed, max_per_prompt=max_per_prompt)
    n = sum(len(f) for f in flags)
    return {"pairs": pairs, "prompts": len(rows), "samples": n, "correct": sum(sum(bool(x) for x in f) for f in flags)}
