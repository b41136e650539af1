"""Held-out evaluation of RL policies: reward-model score and KL to the SFT model.

On prompts never used in training (``data/train/ppo_prompts_heldout.jsonl``), each policy samples
one response per prompt (fixed seed, the RL temperature); the reward model scores it, and the KL
to the reference (the SFT model) is estimated per sequence as the sum over response tokens of
``log pi(y_t) - log pi_ref(y_t)``, with logits scaled by the temperature as TRL's PPO does.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from .. import models
from ..config import Profile
from . import common


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


def evaluate_policies(profile: Profile, policies: dict[str, Path], *, limit: int | None = None,
                      max_new_tokens: int | None = None, seed: int = 1234) -> dict[str, Any]:
    """Mean/std reward and mean KL to SFT, per policy label, on the held-out prompts."""
    from .ppo import load_prompts, rl_dtype
    from .reward import load_reward_model, score

    ppo = common.section(profile, "ppo")
    temperature = float(ppo.get("temperature", 0.7))
    max_new_tokens = max_new_tokens or int(ppo.get("response_length", 64))
    rows = load_prompts(profile, heldout=True)
    rows = rows[:limit] if limit else rows
    prompts = [r["prompt"] for r in rows]
    sft_dir = common.require_stage(profile, "sft")
    dtype, device = rl_dtype(), common.device()
    rm, rm_tok = load_reward_model(common.require_stage(profile, "reward"), dtype=dtype, device=device)
    reference, ref_tok = _load_causal(sft_dir, dtype, device)
    report: dict[str, Any] = {"n_prompts": len(prompts), "temperature": temperature,
                              "max_new_tokens": max_new_tokens, "policies": {}}
    for label, path in {"sft": sft_dir, **policies}.items():
        model, tok = (reference, ref_tok) if Path(path) == sft_dir else _load_causal(Path(path), dtype, device)
        samples = sample(model, tok, prompts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
        scores = score(rm, rm_tok, prompts, [[{"role": "assistant", "content": s["text"]}] for s in samples])
        kls = kl_per_sequence(model, reference, samples, tok.pad_token_id, temperature)
        report["policies"][label] = {
            "mean_score": statistics.fmean(scores), "std_score": statistics.pstdev(scores),
            "mean_kl": statistics.fmean(kls), "eos_rate": statistics.fmean(s["has_eos"] for s in samples),
            "mean_length": statistics.fmean(len(s["response_ids"]) for s in samples),
            "samples": [{"prompt": s["prompt"][-1]["content"][-200:], "response": s["text"], "score": sc, "kl": k}
                        for s, sc, k in zip(samples, scores, kls, strict=True)],
        }
    tasks = [r.get("task") or "other" for r in rows]
    for p in report["policies"].values():
        p["by_task"] = by_task(tasks, [s["score"] for s in p["samples"]], [s["kl"] for s in p["samples"]])
    base = report["policies"]["sft"]
    within = within_task_std(tasks, [s["score"] for s in base["samples"]])
    report["sft_within_task_std"] = within
    for p in report["policies"].values():
        gain = p["mean_score"] - base["mean_score"]
        p["gain_in_sft_std"] = gain / base["std_score"] if base["std_score"] else None
        p["gain_in_sft_within_task_std"] = gain / within if within else None
        se = paired_se([s["score"] for s in p["samples"]], [s["score"] for s in base["samples"]])
        p["gain_se_in_sft_std"] = se / base["std_score"] if se is not None and base["std_score"] else None
    return report


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


def within_task_std(tasks: list[str], scores: list[float]) -> float | None:
    """The standard deviation of scores around their own task's mean (pooled over tasks). The plain
    standard deviation of a mixed prompt set is mostly the gap between tasks (the reward model's
    scale differs by task), which no policy change within a task can move."""
    means = {t: statistics.fmean(s for s, x in zip(scores, tasks, strict=True) if x == t) for t in set(tasks)}
    resid = [s - means[t] for s, t in zip(scores, tasks, strict=True)]
    return math.sqrt(statistics.fmean(r * r for r in resid)) if resid else None


def summary_lines(report: dict[str, Any]) -> list[str]:
    """One line per policy: mean score, gain over SFT in SFT standard deviations (± paired standard
    error; also within tasks) and mean KL per sequence."""
    lines = [f"{report['n_prompts']} held-out prompts, one sample each at temperature {report['temperature']}, "
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
        lines.append(line)
    return lines
