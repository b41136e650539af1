"""Benchmarks: each prints measured figures beside the baseline they beat, in one run.

- ``bench_generate``: load time; tokens/s at batch 1 and batch 8 in fp32 and bf16; 8 prompts one at
  a time (fp32, the naive baseline) vs the default batched path; the ratio (target >= 5x).
- ``bench_probes``: the clickbait and SQL probes batched vs one prompt at a time (target >= 3x).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_PROMPTS = [
    "The three primary colours are",
    "Here is a short story about a robot who learns to paint:",
    "-- We have a table `events` with columns `event_id`, `timestamp`, `user_id`, `rpc_method`.\n"
    "-- We want to count how many users issued request \"Login\" over the last week.\n-- SQL query for this is:\n",
    "I will explain these jokes:\n(1) Always borrow money from a pessimist. They'll never expect it back.\nExplanation:",
    "Q: What is the boiling point of water at sea level?\nA:",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "The main causes of the French Revolution were",
    "A recipe for pancakes needs the following ingredients:",
]


def _table(rows: list[dict[str, Any]]) -> str:
    cols = list(rows[0])
    widths = [max(len(str(c)), *(len(str(r[c])) for r in rows)) for c in cols]
    line = "  ".join(str(c).ljust(w) for c, w in zip(cols, widths, strict=True))
    body = ["  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths, strict=True)) for r in rows]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def _cold_load_seconds(spec: str) -> float:
    """Load time from the cache in a fresh process (what a notebook pays)."""
    code = ("import time, torch, transformers, safetensors; from llamalab import models; t=time.perf_counter(); "
            f"models.load_model({spec!r}, dtype='float32', verbose=False); print(time.perf_counter()-t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def bench_generate(spec: str = "default", new_tokens: int = 64, n_prompts: int = 8) -> dict[str, Any]:
    from . import models
    from .generate import throughput

    prompts = (BENCH_PROMPTS * ((n_prompts + 7) // 8))[:n_prompts]
    models.load_model(spec, verbose=False)  # make sure the cache exists before timing the load
    load_s = _cold_load_seconds(spec)
    default_dtype, why = models.resolve_dtype("auto", models.pick_device())
    default_name = str(default_dtype).replace("torch.", "")
    rows, figures = [], {}
    for dtype in ("float32", "bfloat16"):
        model, tok = models.load_model(spec, dtype=dtype, verbose=False)
        throughput(model, tok, prompts[:2], batch_size=2, new_tokens=4)  # warm-up
        one = throughput(model, tok, prompts, batch_size=1, new_tokens=new_tokens)
        batched = throughput(model, tok, prompts, batch_size=n_prompts, new_tokens=new_tokens)
        figures[dtype] = {"batch1": one, "batched": batched}
        for label, st, bs in (("one at a time", one, 1), (f"batched x{n_prompts}", batched, n_prompts)):
            rows.append({"dtype": dtype, "mode": label, "batch": bs, "prompts": len(prompts),
                         "new_tokens": st.new_tokens, "wall_s": f"{st.seconds:.2f}",
                         "tokens/s": f"{st.tokens_per_s:.1f}"})
        del model
    base = figures["float32"]["batch1"]
    best = figures[default_name]["batched"]
    ratio = best.tokens_per_s / base.tokens_per_s
    print(f"# bench generate: {spec}, greedy, {new_tokens} new tokens per prompt (EOS suppressed), "
          f"{n_prompts} prompts")
    print(f"load from cache (fresh process after importing torch/transformers; fp32; size check, digests only "
          f"when a file changed): {load_s:.2f} s")
    print(f"default dtype on this machine: {why}")
    print(_table(rows))
    print(f"\n{n_prompts} prompts one at a time in fp32 (baseline): {base.seconds:.2f} s, "
          f"{base.tokens_per_s:.1f} tok/s")
    print(f"{n_prompts} prompts batched, default path ({default_name}, batch {n_prompts}): {best.seconds:.2f} s, "
          f"{best.tokens_per_s:.1f} tok/s")
    print(f"speed-up of the default batched path over one-at-a-time fp32: {ratio:.1f}x (target >= 5x: "
          f"{'met' if ratio >= 5 else 'NOT met'})")
    return {"load_s": load_s, "default_dtype": default_name, "ratio": ratio,
            "tokens_per_s": {d: {k: v.tokens_per_s for k, v in f.items()} for d, f in figures.items()}}


def _headline(summary: dict) -> str:
    if "format_ok_rate" in summary:
        return f"acc {summary['accuracy']:.2f} fmt {summary['format_ok_rate']:.2f}"
    return f"valid {summary['valid_sql_rate']:.2f} exec {summary['execution_accuracy']:.2f}"


def bench_probes(spec: str = "default", clickbait_n: int = 32, sql_n: int = 16, batch_size: int = 16) -> dict:
    from . import models
    from .probes import run_probe

    model, tok = models.load_model(spec, verbose=False)
    info = models.model_info(model)
    rows, out = [], {}
    modes = [("one at a time (naive)", 1, False), (f"batched x{batch_size}", batch_size, False),
             (f"batched x{batch_size} + shared-prefix cache (default)", batch_size, True)]
    for name, n in (("clickbait", clickbait_n), ("sql", sql_n)):
        res = []
        for label, bs, reuse in modes:
            t0 = time.perf_counter()
            r = run_probe(name, model, tok, limit=n, batch_size=bs, model_spec=spec, progress=False,
                          reuse_prefix=reuse)
            wall = time.perf_counter() - t0
            res.append((wall, r))
            rows.append({"probe": name, "mode": label, "items": len(r["items"]), "wall_s": f"{wall:.2f}",
                         "items/s": f"{len(r['items']) / wall:.2f}",
                         "speed-up": f"{res[0][0] / wall:.1f}x",
                         "metric": _headline(r["summary"])})
        comps = [[it["completion"] for it in r["items"]] for _, r in res]
        ratio = res[0][0] / res[-1][0]
        out[name] = {"ratio": ratio, "identical_completions": all(c == comps[0] for c in comps)}
    print(f"# bench probes: {spec} ({info.get('dtype')}), greedy, per-probe stop conditions")
    print(_table(rows))
    for name, o in out.items():
        print(f"{name}: the default batched path is {o['ratio']:.1f}x faster than one at a time (target >= 3x: "
              f"{'met' if o['ratio'] >= 3 else 'NOT met'}); identical completions in all modes: "
              f"{o['identical_completions']} (bf16 results can differ with batch composition; fp32 match)")
    return out


def speed_table(model, tokenizer, batch_sizes=(1, 8), new_tokens: int = 32) -> list[dict[str, Any]]:
    """Measured tokens/s of the loaded model at each batch size (greedy, exactly ``new_tokens``)."""
    from .generate import throughput
    from .models import model_info

    throughput(model, tokenizer, BENCH_PROMPTS[:2], batch_size=2, new_tokens=4)  # warm-up
    rows = []
    for bs in batch_sizes:
        prompts = (BENCH_PROMPTS * ((bs + 7) // 8))[:bs]
        st = throughput(model, tokenizer, prompts, batch_size=bs, new_tokens=new_tokens)
        rows.append({"batch": bs, "dtype": model_info(model).get("dtype", str(model.dtype)),
                     "new_tokens": st.new_tokens, "seconds": round(st.seconds, 2),
                     "tokens_per_s": round(st.tokens_per_s, 1),
                     "ms_per_step": round(1000 * st.seconds / new_tokens, 1)})
    return rows


def padding_free_matches(model, tok, rows: list[dict]) -> float:
    """Max |loss difference| between a padded batch and the same batch flattened padding-free
    (position_ids restart per example). ~0 means this attention implementation keeps the packed
    examples apart; a large value means cross-contamination."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from .train.common import chat_ids

    examples = []
    for r in rows:
        ids = chat_ids(tok, r["prompt"] + r["completion"])
        examples.append({"input_ids": ids, "completion_mask": [1] * len(ids)})
    losses = []
    for free in (False, True):
        coll = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=free)
        batch = coll(examples)
        with torch.inference_mode():
            out = model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")})
        logits = out.logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                 ignore_index=-100)
        losses.append(float(loss))
    return abs(losses[0] - losses[1])


def _steady_tokens_per_s(log_history: list[dict], step_seconds: list[float]) -> tuple[float, int, float]:
    """Real tokens/s over steps 2..N (step 1 pays the process's first allocations: 40-60 s here).

    ``log_history`` must log every step (``logging_steps=1``): TRL's ``num_tokens`` is cumulative.
    """
    cum = [h["num_tokens"] for h in log_history if "num_tokens" in h]
    if len(cum) < 2 or len(step_seconds) < 2:
        raise ValueError(f"need at least 2 logged steps to leave the first out, got {len(cum)} logged, "
                         f"{len(step_seconds)} timed")
    tokens = int(cum[-1] - cum[0])
    wall = float(sum(step_seconds[1:]))
    return tokens / wall, tokens, wall


def bench_train(profile_name: str = "cpu", steps: int = 6, batch_size: int = 8) -> dict[str, Any]:
    """SFT training tokens/s, same data, one run: LoRA dropout 0.05 (the cpu profile's value before
    2026-12-03) against the profile's LoRA, then padding-free and packed (TRL 1.12) with the profile's.
    Step 1 of each mode is left out of the rate (first allocations); every mode runs in this process."""
    import tempfile

    from transformers import TrainerCallback

    from . import config, models
    from .train import common, sft

    profile = config.load_profile(profile_name)
    train_rows, _ = sft.load_splits(profile)
    train_rows = train_rows[: steps * batch_size]
    lora_now = common.section(profile, "lora")
    modes = [("padded, LoRA dropout 0.05 (baseline)", {}, {"lora_dropout": 0.05}),
             (f"padded, LoRA dropout {lora_now.get('lora_dropout', 0.0)} (profile)", {}, {}),
             ("padding-free", {"padding_free": True, "max_length": None}, {}),
             ("packed (bfd)", {"packing": True, "packing_strategy": "bfd"}, {})]

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds: list[float] = []
            self._t0 = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self._t0)

    rows, out = [], {}
    model0, tok0 = models.load_model(profile.model.spec, dtype=profile.model.dtype, verbose=False)
    models.ensure_chat_template(tok0)  # as train_sft does: a base model's tokenizer may have none
    diff = padding_free_matches(model0, tok0, train_rows[:4])
    del model0
    for label, extra, lora_extra in modes:
        model, tok = models.load_model(profile.model.spec, dtype=profile.model.dtype, verbose=False)
        tok.padding_side = "right"
        prof = config.load_profile(profile_name)
        prof.extra.setdefault("lora", {}).update(lora_extra)
        timer = StepTimer()
        with tempfile.TemporaryDirectory() as tmp:
            args = sft.sft_config(prof, Path(tmp), max_steps=steps, per_device_train_batch_size=batch_size,
                                  save_strategy="no", eval_strategy="no", logging_steps=1, disable_tqdm=True,
                                  num_train_epochs=1, **extra)
            common.seed_everything(args.seed)
            trainer = sft.make_trainer(prof, model, tok, args, train_rows, [], callbacks=[timer])
            trainer.train()
        rate, tokens, wall = _steady_tokens_per_s(trainer.state.log_history, timer.seconds)
        loss = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        out[label] = rate
        rows.append({"mode": label, "timed steps": f"2-{len(timer.seconds)}", "tokens": tokens,
                     "wall_s": f"{wall:.1f}", "first_step_s": f"{timer.seconds[0]:.1f}", "tokens/s": f"{rate:.0f}",
                     "speed-up": f"{rate / out[modes[0][0]]:.2f}x", "last_loss": f"{loss[-1]:.3f}" if loss else "n/a"})
        del model, trainer
    print(f"# bench train: SFT with LoRA on {profile.model.spec} ({profile.name} profile hyperparameters, "
          f"{steps} steps x batch {batch_size}), tokens = real (non-pad) tokens trained on, rate over steps 2-{steps}")
    print(_table(rows))
    print(f"padding-free correctness on this attention implementation: |loss(padded) - loss(flattened)| = "
          f"{diff:.2e} ({'examples stay apart' if diff < 1e-2 else 'CROSS-CONTAMINATION: do not use'})")
    return {"tokens_per_s": out, "padding_free_loss_diff": diff}


def bench_ppo(profile_name: str = "smoke", episodes: int = 16) -> dict[str, Any]:
    """PPO episodes/s and the share of time spent generating, scoring and optimising."""
    import contextlib
    import os

    from trl.experimental.ppo import ppo_trainer as mod

    from . import config, paths
    from .train import common
    from .train.ppo import train_ppo

    base = config.load_profile(profile_name)
    for stage in ("sft", "reward"):
        common.require_stage(base, stage)
    timers = {"generate": 0.0, "reward+value scoring": 0.0}

    def timed(fn, key):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timers[key] += time.perf_counter() - t0
        return wrapper

    bench_runs = paths.runs_dir() / f"bench-{profile_name}"
    bench_runs.mkdir(parents=True, exist_ok=True)
    for stage in ("sft", "reward"):
        link = bench_runs / stage
        if not link.exists():
            os.symlink(base.stage_dir(stage).resolve(), link)
    prof = config.load_profile(profile_name)
    prof.name = f"bench-{profile_name}"
    bs = int(prof.extra["ppo"].get("per_device_train_batch_size", 8))
    prof.extra["ppo"]["total_episodes"] = max(episodes, bs)
    orig = (mod.batch_generation, mod.get_reward)
    mod.batch_generation = timed(mod.batch_generation, "generate")
    mod.get_reward = timed(mod.get_reward, "reward+value scoring")
    try:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(open(os.devnull, "w")):  # noqa: SIM115
            summary = train_ppo(prof, progress=False)
        wall = time.perf_counter() - t0
    finally:
        mod.batch_generation, mod.get_reward = orig
    train_s = summary["train_seconds"]
    other = train_s - sum(timers.values())
    eps = summary["episodes"]
    print(f"# bench ppo: {prof.model.spec}, {profile_name} profile PPO settings, {eps} episodes "
          f"({summary['updates']} updates of {bs}), response_length {prof.extra['ppo'].get('response_length')}")
    print(f"episodes/s: {eps / train_s:.2f}  (PPO loop {train_s:.1f} s; with loading and merging {wall:.1f} s)")
    rows = [{"part": k, "seconds": f"{v:.1f}", "share": f"{v / train_s:.0%}"} for k, v in timers.items()]
    rows.append({"part": "PPO optimisation (policy+value fwd/bwd, ref logprobs)", "seconds": f"{other:.1f}",
                 "share": f"{other / train_s:.0%}"})
    print(_table(rows))
    return {"episodes_per_s": eps / train_s, **{k: v / train_s for k, v in timers.items()}}
