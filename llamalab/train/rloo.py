"""The online-RL row beside PPO: TRL's RLOO (REINFORCE leave-one-out), same reward model and prompts.

RLOO needs no value model: it samples ``num_generations`` responses per prompt and uses the mean
reward of the others as each one's baseline. Policy: the merged SFT model with a new LoRA
(reference = adapter disabled); reward: the merged reward model, called through
``reward.score`` so it reads responses exactly as in PPO (cut after EOS). Writes
``runs/<profile>/rloo/``: adapter, merged policy, metrics.jsonl, run_info.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..config import Profile
from . import common
from .ppo import PPO_ONLY_RL, load_prompts, ppo_only_settings, rl_dtype

PPO_ONLY_FINGERPRINT_OMIT = tuple(f"rl.{key}" for key in PPO_ONLY_RL)  # changing them leaves RLOO's run reusable


FINITE_METRICS = ("reward", "loss", "kl")
"""The metrics.jsonl columns whose NaN or infinity stops RLOO at that update (``common.append_update``)."""


def _metrics_callback(path: Path):
    """Each update's logs, as TRL names them, to ``path``; a NaN reward, loss or KL stops the run there."""
    from transformers import TrainerCallback

    class Jsonl(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:
                common.append_update(path, {"update": state.global_step, **logs}, "rloo", FINITE_METRICS)

    return Jsonl()


def stage_fingerprint(profile: Profile) -> str:
    """RLOO's fingerprint: its sections, the RL prompts, SFT and the reward model; not the PPO-only ``rl`` keys."""
    from .. import paths
    from .ppo import DEFAULT_PROMPTS

    return common.fingerprint(profile, "rloo", [paths.data_dir() / DEFAULT_PROMPTS], upstream=["sft", "reward"],
                              omit=PPO_ONLY_FINGERPRINT_OMIT)


def rloo_config(profile: Profile, output_dir: Path, **overrides):
    import torch
    from trl import RLOOConfig

    values = common.section(profile, "rloo")
    values.update(overrides)
    values.update(common.autocast_default(profile, values))  # TRL's bf16=True would autocast on any CPU
    return common.build_dataclass(RLOOConfig, values, profile, "rloo", output_dir=str(output_dir), report_to=[],
                                  use_cpu=not torch.cuda.is_available(), save_strategy="no")


def reward_function(rm, rm_tok):
    """A TRL reward function backed by our reward model (conversational prompts/completions)."""
    from .reward import score

    def reward_model_score(prompts, completions, **kwargs) -> list[float]:
        return score(rm, rm_tok, list(prompts), list(completions))

    reward_model_score.__name__ = "reward_model"
    return reward_model_score


def train_rloo(profile: Profile, *, progress: bool = True, retrain: bool = True) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import RLOOTrainer

    from .. import models
    from .reward import load_reward_model

    sft_dir = common.require_stage(profile, "sft")
    rm_dir = common.require_stage(profile, "reward")
    ignored = ppo_only_settings(profile)
    for key, val in ignored.items():  # said, not refused: notebook 07 trains PPO and RLOO from one profile
        print(f"{profile.path}: rl.{key}: {val!r} is read by PPO only; RLOO ignores it (no value model; "
              "each response's baseline is the mean score of the other responses to its prompt)")
    rows = load_prompts(profile)
    fp = stage_fingerprint(profile)
    if not retrain and (done := common.reusable(profile, "rloo", fp, "train_summary.json")):
        return done
    out = profile.stage_dir("rloo")
    args = rloo_config(profile, out / "checkpoints", disable_tqdm=not progress)  # a bad key fails before any change
    lora = common.lora_config(profile)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    dtype = rl_dtype()
    common.seed_everything(args.seed)  # the policy's LoRA is drawn before RLOOTrainer seeds
    policy = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=dtype)
    tok = models.prepare_tokenizer(AutoTokenizer.from_pretrained(sft_dir), policy)
    rm, rm_tok = load_reward_model(rm_dir, dtype=dtype, device=common.device())  # TRL leaves a reward function where it is

    trainer = RLOOTrainer(model=policy, reward_funcs=reward_function(rm, rm_tok), args=args,
                          train_dataset=Dataset.from_list([{"prompt": r["prompt"]} for r in rows]),
                          processing_class=tok, peft_config=lora, callbacks=[_metrics_callback(metrics_path)])
    started = common.stage_clock()
    trainer.train()
    stats = common.memory_and_time(trainer, started)
    updates = [json.loads(line) for line in metrics_path.read_text().splitlines()] if metrics_path.exists() else []
    result = {"updates": len(updates), "first_update": updates[0] if updates else None,
              "last_update": updates[-1] if updates else None, "train_prompts": len(rows), **stats}
    if common.is_main_process():
        common.save_adapter_and_merged(trainer.model, str(sft_dir), out)
        common.write_json(out / "train_summary.json", result)
        common.write_json(out / "run_info.json", common.run_info(
            profile, "rloo", {"rloo": args, "lora": lora},
            {"policy_base": str(sft_dir), "reward_model": str(rm_dir), "fingerprint": fp,
             "rl_ignored": ignored}))
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return result
