"""What every training stage shares: typed TRL/PEFT configs from a profile, stage directories,
run_info.json, metrics, checkpoint discovery and a timing callback."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from .. import models, paths
from ..config import ConfigError, Profile
from ..memory import LORA_TARGETS


class StageMissing(FileNotFoundError):
    """A stage needs an earlier stage's output that is not there."""


# Which notebook/CLI produces each stage, for "run X first" messages.
PRODUCERS = {
    "sft": "notebook 05_sft_lora (or `python -m llamalab train sft --profile {p}`)",
    "reward": "notebook 06_reward_model (or `python -m llamalab train reward --profile {p}`)",
}


def require_stage(profile: Profile, stage: str, what: str = "merged") -> Path:
    """The directory of an earlier stage's artifact, or a StageMissing saying what to run."""
    path = profile.stage_dir(stage) / what
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise StageMissing(
            f"{path} is missing: run {PRODUCERS.get(stage, stage).format(p=profile.name)} first"
        )
    return path


def section(profile: Profile, name: str) -> dict[str, Any]:
    return dict(profile.extra.get(name, {}))


def build_dataclass(cls: type, values: dict[str, Any], profile: Profile, section_name: str, **fixed):
    """``cls(**values, **fixed)``; an unknown key is a ConfigError naming the profile file and key."""
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            where = "--set" if f"{section_name}.{key}" in profile.overrides else str(profile.path)
            raise ConfigError(f"{where}: {section_name}.{key}: unknown key for {cls.__name__}")
    return cls(**{**values, **fixed})


def lora_config(profile: Profile, task_type: str = "CAUSAL_LM", **overrides):
    """PEFT LoraConfig from the profile's ``lora`` section (attention and MLP projections)."""
    from peft import LoraConfig

    values = section(profile, "lora")
    values.setdefault("target_modules", list(LORA_TARGETS))
    values.update(overrides)
    return build_dataclass(LoraConfig, values, profile, "lora", task_type=task_type)


def git_sha() -> str | None:
    root = paths.repo_root()
    if root is None:
        return None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                               timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def device() -> str:
    """Where this process's models run: its own GPU under accelerate/torchrun, else the best device."""
    import torch

    return f"cuda:{local_rank()}" if torch.cuda.is_available() else models.pick_device()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (``transformers.set_seed``) before a stage creates its models.

    The trainers seed only inside ``Trainer.__init__``, too late for two random draws that decide a
    run: TRL 1.12's SFT, RLOO and PPO trainers attach the LoRA adapter (random ``lora_A`` matrices)
    before they call it, and a reward model's new score head is drawn when
    ``AutoModelForSequenceClassification.from_pretrained`` builds it, before the trainer exists. A new
    process starts its torch generator from a random seed, so without this call two runs of one stage
    with the same profile, data and ``seed`` started from different adapters and heads."""
    from transformers import set_seed

    set_seed(int(seed))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file: an interrupted write leaves the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_json(path: Path, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=1, default=str))


def run_info(profile: Profile, stage: str, config_objs: dict[str, Any], extra: dict | None = None) -> dict:
    def plain(obj):
        if dataclasses.is_dataclass(obj):
            return {k: v for k, v in dataclasses.asdict(obj).items() if _jsonable(v)}
        return obj

    return {"stage": stage, "profile": profile.name, "profile_file": str(profile.path),
            "overrides": profile.overrides,
            "config": {k: plain(v) for k, v in config_objs.items()}, "versions": models.env_summary(),
            "git_sha": git_sha(), "world_size": world_size(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra or {})}


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v, default=str)
        return True
    except (TypeError, ValueError):
        return False


def last_checkpoint(directory: Path) -> Path | None:
    cks = sorted(directory.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return cks[-1] if cks else None


def replace_dir(src: Path, dst: Path) -> None:
    """Move a finished artifact into place, replacing an older one (never a half-written mix)."""
    if dst.exists():
        old = dst.with_name(dst.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        dst.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    src.rename(dst)


def train_dtype(profile: Profile) -> tuple[Any, str]:
    """dtype for the frozen base weights during training (LoRA weights stay fp32)."""
    return models.resolve_dtype(profile.model.dtype, models.pick_device())


def autocast_default(profile: Profile, values: dict[str, Any]) -> dict[str, Any]:
    """``{"bf16": ...}`` for a Trainer-based stage's config, unless its profile section sets ``bf16`` or
    ``fp16`` itself: bf16 autocast where the training dtype (``train_dtype``) is bf16, that is on CUDA
    with bf16 and on a CPU whose bf16 matmuls were measured faster than fp32 (AMX, AVX512-BF16). RLOO
    reads the same measurement, though its weights stay in ``ppo.rl_dtype`` (fp32 on a CPU), as they
    did under TRL's default.

    TRL's SFT, reward and RLOO configs default to ``bf16=True``, and on a CPU the Trainer then autocasts
    every matmul to bf16 whatever the CPU. Where bf16 has no hardware path that is ruinous: on an
    AVX2-only AMD EPYC (2026-12-02) a 1024x1024 bf16 matmul ran at 0.8 GFLOP/s against 80 for fp32, and
    the smoke profile's SFT took 167 s per step. On a CPU with AMX, where the earlier runs were made,
    the measurement picks bf16 and nothing changes."""
    import torch

    if "bf16" in values or "fp16" in values:
        return {}
    return {"bf16": train_dtype(profile)[0] == torch.bfloat16}


def enable_checkpointing(model) -> None:
    """Gradient (activation) checkpointing, non-reentrant, so LoRA weights inside a frozen base get
    their gradients without ``enable_input_require_grads``."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def stage_clock() -> float:
    """Start a training stage's clock for ``memory_and_time`` and, on a GPU, its peak-memory count:
    without the reset a stage's ``peak_cuda_gib`` is the largest of every stage run before it in the same
    process (notebook 07 trains RLOO after PPO; the reward stage samples SFT's SQL before it trains)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    return time.perf_counter()


def memory_and_time(trainer, started: float) -> dict[str, Any]:
    """Memory and time stats after training, from one place (unsloth's habit)."""
    import resource

    import torch

    out = {"train_seconds": round(time.perf_counter() - started, 1),
           "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)}
    if torch.cuda.is_available():
        out["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated() / 1024**3, 2)
    return out


def log(msg: str) -> None:
    models._log(msg)


def chat_ids(tokenizer, messages: list[dict], *, add_generation_prompt: bool = False) -> list[int]:
    """Token ids of a conversation in the model's chat template.

    A finished conversation is cut right after its last EOS (ChatML adds a newline after
    ``<|im_end|>``): reward models are trained and queried on sequences whose last real token is
    the EOS, exactly what PPO's rollouts end with.
    """
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt,
                                        return_dict=True)["input_ids"]
    ids = list(ids)
    if not add_generation_prompt and tokenizer.eos_token_id in ids:
        last = len(ids) - 1 - ids[::-1].index(tokenizer.eos_token_id)
        ids = ids[: last + 1]
    return ids


def step_recorder():
    """A TrainerCallback that records the first and last optimizer step of *this* process's run."""
    from transformers import TrainerCallback

    class StepRecorder(TrainerCallback):
        first_step: int | None = None
        last_step: int | None = None

        def on_step_end(self, args, state, control, **kwargs):
            if self.first_step is None:
                self.first_step = state.global_step
            self.last_step = state.global_step

    return StepRecorder()


def _file_sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


RL_SECTIONS = {"ppo": ("rl",), "rloo": ("rl",)}  # sections only online RL reads (SFT/reward keep their reuse)


def _profile_part(profile: Profile, name: str, omit: tuple[str, ...]):
    """``name`` is a section ("rl") or one key of it ("ppo.temperature"); a whole section leaves out the
    "section.key" names in ``omit``."""
    section, _, key = name.partition(".")
    values = profile.extra.get(section)
    if key:
        return values.get(key) if isinstance(values, dict) else None
    if isinstance(values, dict) and omit:
        return {k: v for k, v in values.items() if f"{section}.{k}" not in omit}
    return values


def fingerprint(profile: Profile, stage: str, data_files: list[Path], upstream: list[str] = (),
                extra_sections: tuple[str, ...] = (), omit: tuple[str, ...] = ()) -> str:
    """A digest of everything a stage's result depends on: its profile sections (and ``extra_sections``:
    whole sections, or single keys as "section.key"; less the "section.key" names in ``omit``), the
    model spec, the data files' contents and the upstream stages' fingerprints. Equal fingerprint =
    same inputs; a setting the stage does not read is left out, so changing it retrains nothing."""
    import hashlib

    names = (stage, "lora", "data", *RL_SECTIONS.get(stage, ()), *extra_sections)
    parts = {"stage": stage, "model": profile.model.spec, "dtype": profile.model.dtype,
             "sections": {k: _profile_part(profile, k, omit) for k in names},
             "data": {str(Path(f).name): _file_sha(f) for f in data_files},
             "upstream": {u: read_fingerprint(profile, u) for u in upstream}}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def read_fingerprint(profile: Profile, stage: str) -> str | None:
    info = profile.stage_dir(stage) / "run_info.json"
    try:
        return json.loads(info.read_text()).get("fingerprint")
    except (OSError, ValueError):
        return None


def append_update(path: Path, row: dict[str, Any], stage: str, must_be_finite: tuple[str, ...]) -> None:
    """Append one online-RL update's metrics to ``path`` (metrics.jsonl), then stop the run if any of
    ``must_be_finite`` is NaN or infinite. A diverged PPO or RLOO run otherwise trains on to the end and
    saves a NaN policy (and, with ``rl.kl_target``, a NaN KL coefficient) with nothing said. The row is
    written first, so the update that diverged is on disk with every one before it."""
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    bad = [f"{key} is {row[key]}" for key in must_be_finite
           if isinstance(row.get(key), float) and not math.isfinite(row[key])]
    if bad:
        raise FloatingPointError(f"{stage}: update {row.get('update')}: {', '.join(bad)}: training diverged, so it "
                                 f"stopped there without saving a policy. Every update up to this one is in {path}; "
                                 f"a merged policy already in {path.parent}, if any, is an earlier run's.")


def reusable(profile: Profile, stage: str, fp: str, summary_file: str = "metrics.json") -> dict | None:
    """The finished stage's metrics when its artifacts exist and were made from the same inputs."""
    out = profile.stage_dir(stage)
    if read_fingerprint(profile, stage) != fp or not (out / "merged" / "config.json").is_file():
        return None
    try:
        metrics = json.loads((out / summary_file).read_text())
    except (OSError, ValueError):
        return None
    log(f"{stage}: reusing {out} (same profile, data and upstream stages; pass retrain=True to train again)")
    metrics["reused"] = True
    return metrics


def save_adapter_and_merged(model, base: str, out: Path, *, seq_cls: bool = False, tokenizer=None) -> None:
    """Write ``out/adapter`` and ``out/merged`` (the adapter merged into fp32 base weights) through a
    temporary directory, so a stage directory never holds a half-written model."""
    import tempfile

    from .sft import merge_adapter

    with tempfile.TemporaryDirectory(dir=out, prefix=".tmp-") as tmp:
        tmp = Path(tmp)
        model.save_pretrained(tmp / "adapter")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / "adapter")
        merge_adapter(base, tmp / "adapter", tmp / "merged", seq_cls=seq_cls)
        replace_dir(tmp / "adapter", out / "adapter")
        replace_dir(tmp / "merged", out / "merged")


def stage_checkpoints(profile: Profile, stage: str, resume: bool) -> tuple[Path, Path, Path | None]:
    """``(stage dir, checkpoints dir, checkpoint to resume from)``. Without ``resume`` old checkpoints
    are removed, so a fresh run never continues a stale one by accident."""
    out = profile.stage_dir(stage)
    out.mkdir(parents=True, exist_ok=True)
    ck_dir = out / "checkpoints"
    last = last_checkpoint(ck_dir) if resume else None
    if resume and last is None:
        log(f"--resume: no checkpoint in {ck_dir}; starting from scratch")
    if not resume and ck_dir.exists():
        shutil.rmtree(ck_dir)
    return out, ck_dir, last
