"""Stage 3 of the recipe: PPO with LoRA (TRL 1.12's ``trl.experimental.ppo``), and RLOO beside it.

- Policy: the merged SFT model with a new LoRA adapter. Reference: the same model with the adapter
  disabled (PEFT), so no second copy of the weights; this is why the SFT adapter is merged first.
- Reward: the merged reward model; value model: initialised from the reward model (both plain
  ``AutoModelForSequenceClassification`` models, as TRL's PPO needs).
- Queries are left-padded (right padding makes the first update's KL ~31 instead of ~0), and the
  pad token is distinct from EOS, so responses are cut after EOS and the reward model reads the
  score at the last real token (the EOS). Responses without EOS get ``missing_eos_penalty``.
- Every update's metrics go to ``runs/<profile>/ppo/metrics.jsonl`` (score, KL, entropy, policy and
  value loss, clip fraction, response length).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any
from unittest import mock

from .. import models, paths
from ..config import Profile
from . import common

DEFAULT_PROMPTS = "train/ppo_prompts.jsonl"
HELDOUT_PROMPTS = "train/ppo_prompts_heldout.jsonl"

# TRL's names -> ours, for metrics.jsonl
METRIC_KEYS = {
    "objective/scores": "score", "objective/kl": "kl", "objective/entropy": "entropy",
    "objective/rlhf_reward": "rlhf_reward", "objective/non_score_reward": "non_score_reward",
    "loss/policy_avg": "policy_loss", "loss/value_avg": "value_loss", "policy/clipfrac_avg": "clip_fraction",
    "val/clipfrac_avg": "value_clip_fraction", "policy/approxkl_avg": "approx_kl", "val/num_eos_tokens": "num_eos",
    "lr": "lr", "episode": "episode",
}

FINITE_METRICS = ("score", "kl", "policy_loss", "value_loss")
"""The metrics.jsonl columns whose NaN or infinity stops PPO at that update (``common.append_update``)."""


def load_prompts(profile: Profile, path: str | Path | None = None, *, heldout: bool = False) -> list[dict]:
    from ..trainsets import load_ppo_prompts

    default = HELDOUT_PROMPTS if heldout else DEFAULT_PROMPTS
    rows = load_ppo_prompts(Path(path) if path else paths.data_dir() / default)
    if not heldout and (tasks := rl_options(profile)["tasks"]):
        rows = [r for r in rows if r.get("task") in tasks]
    n = common.section(profile, "data").get("ppo_heldout" if heldout else "ppo_train")
    return rows[:n] if n else rows


def query_dataset(tokenizer, rows: list[dict]):
    """Tokenized queries (chat template + generation prompt), for TRL's left-padding collator."""
    from datasets import Dataset

    ids = [common.chat_ids(tokenizer, r["prompt"], add_generation_prompt=True) for r in rows]
    return Dataset.from_dict({"input_ids": ids})


class _ResponseLengths:
    """Records the length of each truncated response during a PPO update (TRL does not log it)."""

    def __init__(self):
        self.lengths: list[int] = []

    @contextlib.contextmanager
    def patched(self):
        from trl.experimental.ppo import ppo_trainer as mod

        original = mod.truncate_response

        def wrapper(stop_token_id, pad_token_id, responses):
            out = original(stop_token_id, pad_token_id, responses)
            self.lengths.extend((out != pad_token_id).sum(dim=1).tolist())
            return out

        with mock.patch.object(mod, "truncate_response", wrapper):
            yield self

    def take_mean(self) -> float | None:
        vals, self.lengths = self.lengths, []
        return sum(vals) / len(vals) if vals else None


class _TaskBaseline:
    """rl.reward_baseline: task. Subtracts from each response's reward-model score the running mean of
    every score so far (this update's included) for its prompt's task, before TRL adds the KL penalty
    and computes advantages.

    A constant per prompt leaves PPO's objective, and so the best policy, as it is; what it changes is
    where the value model starts. That model is initialised from the reward model, whose reading of a
    prompt with no answer yet is close to 0 for every task (cpu profile, held-out: SQL 0.04, general
    0.34, jokes 0.88) while SFT's answers score 2.02, -1.47 and -0.38 on average: with raw scores the
    first updates' advantages mostly say which task a prompt comes from. Centred, each task's scores
    average about 0, where that first baseline already is.

    Queries are recognised by their token ids (left padding removed). Held-out queries that TRL may
    score for its sample logs are not training prompts and keep their raw scores. Under several
    processes each keeps its own running means (and metrics.jsonl's "score" adds the main process's
    mean baseline to TRL's mean over all of them)."""

    def __init__(self, reward_model, queries: dict[tuple[int, ...], str], pad_token_id: int):
        self.reward_model = reward_model
        self.queries = queries
        self.pad = pad_token_id
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.subtracted: list[float] = []

    def task_of(self, query) -> str | None:
        return self.queries.get(tuple(t for t in query.tolist() if t != self.pad))

    def centre(self, query_ids, scores):
        tasks = [self.task_of(q) for q in query_ids]
        for task, score in zip(tasks, scores.tolist(), strict=True):
            if task is not None:
                self.sums[task] = self.sums.get(task, 0.0) + score
                self.counts[task] = self.counts.get(task, 0) + 1
        base = [self.sums[t] / self.counts[t] if t is not None else 0.0 for t in tasks]
        self.subtracted.extend(b for b, t in zip(base, tasks, strict=True) if t is not None)
        return scores - scores.new_tensor(base)

    @contextlib.contextmanager
    def patched(self):
        from trl.experimental.ppo import ppo_trainer as mod

        original = mod.get_reward

        def wrapper(model, query_responses, pad_token_id, context_length):
            logits, scores, lengths = original(model, query_responses, pad_token_id, context_length)
            if model is self.reward_model:
                scores = self.centre(query_responses[:, :context_length], scores)
            return logits, scores, lengths

        with mock.patch.object(mod, "get_reward", wrapper):
            yield self

    def take_mean(self) -> float:
        vals, self.subtracted = self.subtracted, []
        return sum(vals) / len(vals) if vals else 0.0


def _metrics_callback(path: Path, lengths: _ResponseLengths, warmup: int = 0, baseline: _TaskBaseline | None = None):
    from transformers import TrainerCallback

    class MetricsJsonl(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "objective/kl" not in logs:
                return
            row = {"update": state.global_step, **{ours: logs.get(theirs) for theirs, ours in METRIC_KEYS.items()},
                   "response_length": lengths.take_mean(), "kl_coef": args.kl_coef,
                   "phase": "value warmup" if state.global_step <= warmup else "policy"}
            if baseline is not None:  # "score" and "rlhf_reward" stay the reward model's, as without a baseline
                row["score_centred"] = row["score"]
                row["baseline"] = baseline.take_mean()
                for key in ("score", "rlhf_reward"):
                    if row[key] is not None:
                        row[key] = row[key] + row["baseline"]
            common.append_update(path, row, "ppo", FINITE_METRICS)

    return MetricsJsonl()


def _samples_callback(path: Path, tokenizer, prompts: list[str], max_new_tokens: int):
    """Greedy responses of the policy to fixed held-out prompts at the first, middle and last update."""
    from transformers import TrainerCallback

    from ..generate import generate

    class Samples(TrainerCallback):
        def on_log(self, args, state, control, logs=None, model=None, **kwargs):
            if not logs or "objective/kl" not in logs or model is None:
                return
            total = max(1, state.max_steps)
            if state.global_step not in {1, (total + 1) // 2, total}:
                return
            policy = getattr(model, "policy", model)
            was_training = policy.training
            side, tokenizer.padding_side = tokenizer.padding_side, "left"
            policy.eval()
            try:
                texts = generate(policy, tokenizer, prompts, chat=True, max_new_tokens=max_new_tokens,
                                 progress=False)
            finally:
                tokenizer.padding_side = side
                if was_training:
                    policy.train()
            row = {"update": state.global_step, "of": total,
                   "samples": [{"prompt": p[-300:], "response": t} for p, t in zip(prompts, texts, strict=True)]}
            with path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")

    return Samples()


def _value_warmup_callback(updates: int):
    """Holds the policy's trainable weights still for the first ``updates`` PPO updates
    (rl.value_warmup_updates), then lets them learn from a fresh optimizer state.

    Not through ``requires_grad``: each update's reference pass goes through PEFT's
    ``disable_adapter()``, which switches the adapter's gradients back on when it exits. A hook
    zeroes their gradients instead; AdamW (no weight decay: ``train_ppo`` refuses it with a warmup) then
    leaves them exactly as they are."""
    from transformers import TrainerCallback

    class ValueWarmup(TrainerCallback):
        def __init__(self):
            self.params: list = []
            self.hooks: list = []

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.params = [p for p in model.policy.parameters() if p.requires_grad]
            self.hooks = [p.register_hook(lambda grad: grad.new_zeros(grad.shape)) for p in self.params]

        def on_step_end(self, args, state, control, optimizer=None, **kwargs):
            if state.global_step == updates:
                for hook in self.hooks:
                    hook.remove()
                for p in self.params:  # AdamW's moments and step count for them: zero moments, but a step
                    optimizer.state.pop(p, None)  # count that would damp the first real updates

    return ValueWarmup()


KL_CONTROL_CLIP = 0.2  # Ziegler et al.'s clip of the proportional error, as TRL's AdaptiveKLController had it


def _adaptive_kl_callback(target: float, horizon: int, warmup: int = 0, floor: float | None = None):
    """rl.kl_target: Ziegler et al. (2019)'s adaptive KL controller, which TRL's PPOTrainer had before
    its rewrite (``adap_kl_ctrl``; target 6, horizon 10000). After each update,
    ``kl_coef *= 1 + e * n / horizon``, where ``e = clip(KL / target - 1, -0.2, 0.2)``, KL is the update's
    mean KL per sequence (``objective/kl``, measured on its rollouts) and n its episodes. TRL 1.12's
    trainer reads ``args.kl_coef`` at every rollout, so the next update's rewards use the new value.
    Value-warmup updates (policy held still, KL 0) leave it alone. ``floor`` (rl.kl_coef_min): the
    coefficient never goes below it; at the start value, the controller only ever raises the coefficient,
    so the first updates, whose KL is near 0 while the policy still equals its reference, cannot wind it
    down (without a floor, a 40-update run did: README, "An adaptive KL coefficient")."""
    from transformers import TrainerCallback

    class AdaptiveKL(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "objective/kl" not in logs or state.global_step <= warmup:
                return
            error = min(max(logs["objective/kl"] / target - 1, -KL_CONTROL_CLIP), KL_CONTROL_CLIP)
            args.kl_coef = max(args.kl_coef * (1 + error * args.batch_size / horizon), floor or 0.0)

    return AdaptiveKL()


def ppo_config(profile: Profile, output_dir: Path, **overrides):
    import torch
    from trl.experimental.ppo import PPOConfig

    values = common.section(profile, "ppo")
    values.update(overrides)
    return common.build_dataclass(PPOConfig, values, profile, "ppo", output_dir=str(output_dir), report_to=[],
                                  use_cpu=not torch.cuda.is_available(), stop_token="eos",
                                  save_strategy="no")


def rl_dtype():
    """fp32 for online RL on CPU: PPO's first-update KL compares the logits seen while sampling with a
    fresh forward pass of the reference; in bf16 those differ (KL ~0.2 on the first update, measured)
    where fp32 gives ~0. On CUDA, bf16."""
    import torch

    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32


FIRST_UPDATE_KL_LIMIT = {"float32": 0.01, "bfloat16": 1.0, "float16": 1.0}
"""The largest |first-update KL| (``objective/kl``, nats per sequence) that still means the policy and its
reference agree before PPO has changed anything. In fp32 it is ~1e-5 (cpu profile, measured); in bf16
0.074 (smoke PPO on an H200) to ~0.2 (on a CPU): the rollout's logits come from cached generation and the
reference's from a fresh forward pass, and the two round differently. Right-padded queries give ~31
in either dtype, the silent bug this check is for."""


def check_first_update_kl(summary: dict[str, Any]) -> float:
    """Raise if PPO's first update shows the policy and reference disagreeing (a ``train_ppo`` summary);
    return the limit applied, which depends on the dtype PPO trained in (``FIRST_UPDATE_KL_LIMIT``). A
    summary saved before the dtype was recorded is read with this machine's ``rl_dtype``."""
    first = summary.get("first_update") or {}
    if first.get("kl") is None:
        raise ValueError("the PPO summary has no first update with a KL (did training run any update?)")
    dtype = summary.get("dtype") or str(rl_dtype()).removeprefix("torch.")
    if dtype not in FIRST_UPDATE_KL_LIMIT:
        raise ValueError(f"no first-update KL limit for dtype {dtype!r}; known: {sorted(FIRST_UPDATE_KL_LIMIT)}")
    limit = FIRST_UPDATE_KL_LIMIT[dtype]
    if not abs(first["kl"]) < limit:
        raise AssertionError(f"first-update KL {first['kl']:.3g} nats is not below {limit} ({dtype}): the policy "
                             "and its reference disagree before any update (right-padded queries give ~31)")
    return limit


def _fp32_head(head):
    """A copy of a linear score head that keeps its weights in fp32 and takes bf16 hidden states."""
    import torch

    class Fp32Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = head.float()

        @property
        def weight(self):
            return self.head.weight

        def forward(self, hidden):
            return self.head(hidden.to(self.head.weight.dtype))

    return Fp32Head()


def value_with_lora(profile: Profile, value):
    """Freeze the value model's base and inject LoRA (the score head stays trainable): a 7B critic
    then costs its bf16 weights plus a few MB of trainable state instead of full fine-tuning.

    In bf16 (on a GPU) the trained weights are kept in fp32, as ``get_peft_model`` does for the policy's
    LoRA: PEFT's ``inject_adapter_in_model`` gives them the base's bf16, where an AdamW step of about the
    learning rate (a100: 5e-5) is below half a bf16 step for any weight of magnitude 1/64 or more, and
    rounds away. In fp32 (the cpu profile) nothing changes."""
    import torch
    from peft import inject_adapter_in_model

    value.requires_grad_(False)
    cfg = common.lora_config(profile, task_type="SEQ_CLS")
    inject_adapter_in_model(cfg, value)
    for p in value.parameters():  # the LoRA weights just injected (PEFT casts inputs to their dtype)
        if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16):
            p.data = p.data.float()
    if type(value.score) is torch.nn.Linear and value.score.weight.dtype != torch.float32:  # not quantized
        value.score = _fp32_head(value.score)
    value.score.requires_grad_(True)
    return value


RL_KEYS = {"value": ("full", "lora"), "critic_quantization": (None, *models.QUANTIZATIONS), "tasks": None,
           "value_warmup_updates": None, "reward_baseline": (None, "task"), "kl_target": None, "kl_horizon": None,
           "kl_coef_min": None}
# rl keys RLOO has no use for, with their defaults ("off")
PPO_ONLY_RL = {"value_warmup_updates": 0, "reward_baseline": None, "kl_target": None, "kl_horizon": 10000,
               "kl_coef_min": None}


def ppo_only_settings(profile: Profile) -> dict[str, Any]:
    """The profile's ``rl`` settings that only PPO reads and that are not off: RLOO has no value model to
    warm up, and its baseline is already the mean score of the other responses to the same prompt."""
    return {k: v for k, v in rl_options(profile).items() if k in PPO_ONLY_RL and v != PPO_ONLY_RL[k]}


def rl_options(profile: Profile) -> dict[str, Any]:
    """The profile's ``rl`` section, checked.

    - ``value``: "full" (every value weight trained) or "lora" (frozen base + LoRA).
    - ``critic_quantization``: null, "8bit" or "4bit": the reward model and the value model's frozen
      base loaded through bitsandbytes, so that a 7B policy with a 7B critic fits a 40 GB card;
      needs ``value: lora``, as a quantized base cannot be trained.
    - ``tasks``: which tasks' prompts PPO and RLOO train on (null = all; held-out evaluation always
      keeps every task). The cpu profile leaves out clickbait: its reward model scores "yes" and
      "no" alike (it learned the answer format, not the label), so those prompts carry no signal.
    - ``value_warmup_updates``: PPO only. This many updates before the profile's, in which the policy's
      LoRA is frozen and only the value model learns (OpenRLHF's ``freezing_actor_steps``). The value
      model starts as the reward model, which reads a prompt with no answer yet as a baseline for it;
      on the cpu profile's held-out prompts that reading correlates at -0.37 with the mean score of
      SFT's answers, so the first updates' advantages rank tasks, not answers. 0 = none (TRL's way).
    - ``reward_baseline``: PPO only. null (TRL's way: the reward model's score as it is) or "task":
      each score less the running mean of its task's scores (``_TaskBaseline``), which the value
      model's first baseline already sits near.
    - ``kl_target``: PPO only. null (TRL 1.12's way: ``ppo.kl_coef`` fixed) or a KL per sequence in
      nats that an adaptive controller steers each update's rollouts towards, starting from
      ``ppo.kl_coef`` (``_adaptive_kl_callback``; Ziegler et al. 2019, old TRL's ``adap_kl_ctrl``).
    - ``kl_horizon``: PPO only, with ``kl_target``: the controller's horizon in episodes (10000, old
      TRL's default; each update moves the coefficient by at most 0.2 x its episodes / horizon).
    - ``kl_coef_min``: PPO only, with ``kl_target``: null (no floor, Ziegler's and old TRL's way) or the
      lowest coefficient the controller may set, at most ``ppo.kl_coef`` (equal to it: the controller only
      raises the coefficient).
    """
    from ..config import ConfigError
    from ..trainsets import TASKS

    opts = {"value": "full", "critic_quantization": None, "tasks": None, **PPO_ONLY_RL,
            **common.section(profile, "rl")}
    for key, val in opts.items():
        if key not in RL_KEYS:
            raise ConfigError(f"{profile.path}: rl.{key}: unknown key (known: {', '.join(RL_KEYS)})")
        if RL_KEYS[key] is not None and val not in RL_KEYS[key]:
            raise ConfigError(f"{profile.path}: rl.{key}: {val!r} is not one of {list(RL_KEYS[key])}")
    tasks = opts["tasks"]
    if tasks is not None and (not isinstance(tasks, list) or not tasks or any(t not in TASKS for t in tasks)):
        raise ConfigError(f"{profile.path}: rl.tasks: expected null or a non-empty list drawn from {list(TASKS)}, "
                          f"got {tasks!r}")
    warm = opts["value_warmup_updates"]
    if isinstance(warm, bool) or not isinstance(warm, int) or warm < 0:
        raise ConfigError(f"{profile.path}: rl.value_warmup_updates: expected a whole number >= 0, got {warm!r}")
    target = opts["kl_target"]
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float)) or not target > 0):
        raise ConfigError(f"{profile.path}: rl.kl_target: expected null or a KL in nats > 0, got {target!r}")
    horizon = opts["kl_horizon"]
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ConfigError(f"{profile.path}: rl.kl_horizon: expected a whole number of episodes >= 1, got {horizon!r}")
    if target is None and horizon != PPO_ONLY_RL["kl_horizon"]:
        raise ConfigError(f"{profile.path}: rl.kl_horizon: {horizon} is the adaptive KL controller's, which "
                          "rl.kl_target switches on (null here)")
    floor = opts["kl_coef_min"]
    if floor is not None:
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not floor > 0:
            raise ConfigError(f"{profile.path}: rl.kl_coef_min: expected null or a coefficient > 0, got {floor!r}")
        if target is None:
            raise ConfigError(f"{profile.path}: rl.kl_coef_min: {floor} is a floor for the adaptive KL "
                              "controller, which rl.kl_target switches on (null here)")
        start = common.section(profile, "ppo").get("kl_coef")
        if start is None:  # the profile leaves it to TRL
            from trl.experimental.ppo import PPOConfig

            start = PPOConfig.__dataclass_fields__["kl_coef"].default
        if isinstance(start, (int, float)) and floor > start:
            raise ConfigError(f"{profile.path}: rl.kl_coef_min: {floor} is above the coefficient the controller "
                              f"starts from (ppo.kl_coef: {start})")
    if opts["critic_quantization"] and opts["value"] != "lora":
        raise ConfigError(f"{profile.path}: rl.critic_quantization needs rl.value: lora "
                          "(a quantized base cannot be fine-tuned)")
    return opts


def load_stack(profile: Profile, dtype=None):
    """(policy, value, reward, tokenizer) for PPO/RLOO from the earlier stages' directories."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    opts = rl_options(profile)
    sft_dir = common.require_stage(profile, "sft")
    rm_dir = common.require_stage(profile, "reward")
    if dtype is None:
        dtype = rl_dtype()
    critic_kwargs: dict[str, Any] = {"num_labels": 1, "dtype": dtype}
    if opts["critic_quantization"]:
        critic_kwargs["quantization_config"] = models.quantization_config(opts["critic_quantization"],
                                                                          models.pick_device(None))
        critic_kwargs["device_map"] = {"": common.local_rank()}  # this process's GPU under accelerate
    policy = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=dtype)
    tok = models.prepare_tokenizer(AutoTokenizer.from_pretrained(sft_dir), policy)
    value = AutoModelForSequenceClassification.from_pretrained(rm_dir, **critic_kwargs)
    reward = AutoModelForSequenceClassification.from_pretrained(rm_dir, **critic_kwargs)
    for m in (value, reward):
        m.config.pad_token_id = tok.pad_token_id
    reward.eval()
    if opts["value"] == "lora":
        value_with_lora(profile, value)
    return policy, value, reward, tok, sft_dir, rm_dir


def train_ppo(profile: Profile, *, prompts: str | Path | None = None, progress: bool = True,
              callbacks: list | None = None, retrain: bool = True,
              query_padding_side: str = "left") -> dict[str, Any]:
    """Train the PPO policy. ``query_padding_side="right"`` exists only to demonstrate (in a test)
    the silent bug it causes: a first-update KL of ~31 instead of ~0."""
    from trl.experimental.ppo import PPOTrainer


    train_rows = load_prompts(profile, prompts)
    prompt_file = Path(prompts) if prompts else paths.data_dir() / DEFAULT_PROMPTS
    fp = common.fingerprint(profile, "ppo", [prompt_file], upstream=["sft", "reward"])
    if not retrain and (done := common.reusable(profile, "ppo", fp, "train_summary.json")):
        return done
    held_rows = load_prompts(profile, heldout=True)
    out = profile.stage_dir("ppo")
    args = ppo_config(profile, out / "checkpoints", disable_tqdm=not progress)  # a bad key fails before any change
    opts = rl_options(profile)
    warmup = opts["value_warmup_updates"]
    if warmup and args.weight_decay:
        from ..config import ConfigError

        raise ConfigError(f"{profile.path}: rl.value_warmup_updates needs ppo.weight_decay: 0 (AdamW's decay "
                          f"would move the policy that the warmup holds still; got {args.weight_decay})")
    if warmup:  # extra updates: the policy still gets the profile's episodes
        base = args.total_episodes or int(args.num_train_epochs * len(train_rows))
        args.total_episodes = base + warmup * args.per_device_train_batch_size * args.gradient_accumulation_steps \
            * common.world_size()
    lora = common.lora_config(profile)
    common.seed_everything(args.seed)  # the value model's and the policy's LoRA are drawn before PPOTrainer seeds
    dtype = rl_dtype()
    policy, value, reward, tok, sft_dir, rm_dir = load_stack(profile, dtype)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    samples_path = out / "samples.jsonl"
    samples_path.unlink(missing_ok=True)
    fixed = [r["prompt"][-1]["content"] for r in held_rows[:3]]
    lengths = _ResponseLengths()
    queries = query_dataset(tok, train_rows)
    baseline = None
    if opts["reward_baseline"] == "task":
        baseline = _TaskBaseline(reward, {tuple(ids): r["task"] for ids, r in zip(queries["input_ids"], train_rows,
                                                                                  strict=True)}, tok.pad_token_id)
    tok.padding_side = query_padding_side
    if args.gradient_checkpointing:
        # TRL 1.12's PPOTrainer has its own training loop and never applies this flag. Measured on one
        # H200 (`bench gpu`, LLaMA-7B shape, 16 episodes of 64+128 tokens, value = reward + LoRA): peak
        # 81.2 GiB as TRL leaves it, 41.4 GiB with checkpointing on the policy and the value model.
        for model in (policy, value):
            common.enable_checkpointing(model)
    from ..generate import enable_kv_cache

    enable_kv_cache(policy)  # rollouts generate; gradient checkpointing would have switched the cache off
    trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=None, reward_model=reward,
                         value_model=value, train_dataset=queries,
                         eval_dataset=query_dataset(tok, held_rows[: max(args.per_device_eval_batch_size, 1)]),
                         peft_config=lora,
                         callbacks=[_metrics_callback(metrics_path, lengths, warmup, baseline),
                                    *([_value_warmup_callback(warmup)] if warmup else []),
                                    *([_adaptive_kl_callback(opts["kl_target"], opts["kl_horizon"], warmup,
                                                           opts["kl_coef_min"])]
                                      if opts["kl_target"] is not None else []),
                                    _samples_callback(samples_path, tok, fixed, args.response_length),
                                    *(callbacks or [])])
    if baseline:  # under DeepSpeed, PPOTrainer replaces its reward model with an engine wrapping it
        baseline.reward_model = trainer.reward_model
    started = common.stage_clock()
    kl_coef = args.kl_coef  # the controller (rl.kl_target) moves it; run_info keeps the profile's start
    with lengths.patched(), (baseline.patched() if baseline else contextlib.nullcontext()):
        trainer.train()
    final_kl_coef, args.kl_coef = args.kl_coef, kl_coef
    tok.padding_side = "left"
    stats = common.memory_and_time(trainer, started)
    updates = [json.loads(line) for line in metrics_path.read_text().splitlines()] if metrics_path.exists() else []
    result = {"updates": len(updates), "first_update": updates[0] if updates else None,
              "last_update": updates[-1] if updates else None, "train_prompts": len(train_rows),
              "episodes": trainer.state.episode, "dtype": str(dtype).removeprefix("torch."),
              "final_kl_coef": final_kl_coef, **stats}
    if common.is_main_process():
        policy_model = trainer.accelerator.unwrap_model(trainer.model).policy
        common.save_adapter_and_merged(policy_model, str(sft_dir), out)
        common.write_json(out / "train_summary.json", result)
        common.write_json(out / "run_info.json", common.run_info(
            profile, "ppo", {"ppo": args, "lora": lora},
            {"policy_base": str(sft_dir), "reward_model": str(rm_dir), "value_init": str(rm_dir),
             "value_warmup_updates": warmup, "reward_baseline": opts["reward_baseline"],
             "kl_target": opts["kl_target"], "kl_horizon": opts["kl_horizon"] if opts["kl_target"] else None,
             "kl_coef_min": opts["kl_coef_min"],
             "reference": "policy with its LoRA adapter disabled", "fingerprint": fp}))
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return result
