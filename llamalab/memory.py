"""Memory plan of each training stage: weights, LoRA, gradients, optimizer state, activations.

Estimates, not measurements (``bench gpu`` measures the peaks): they say what fits before a run
starts. Activations follow Korthikanti et al. (2022): per layer and token about ``34*h`` bytes in
16-bit plus ``5*a*s`` for attention scores (``2*h`` per layer with gradient checkpointing, plus one
layer recomputed); logits are fp32 over the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 1024**3
BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "8bit": 1.0, "4bit": 0.55}  # 4bit incl. NF4 scales
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    params: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @classmethod
    def from_config(cls, cfg, params: int | None = None) -> Shape:
        if params is None:
            from .anatomy import meta_model

            params = sum(p.numel() for p in meta_model(**{k: getattr(cfg, k) for k in (
                "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size")}).parameters())
        return cls(cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.num_attention_heads,
                   getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads, cfg.vocab_size, params)


def lora_params(s: Shape, r: int, targets=LORA_TARGETS) -> int:
    kv = s.kv_heads * s.head_dim
    dims = {"q_proj": (s.hidden, s.hidden), "k_proj": (s.hidden, kv), "v_proj": (s.hidden, kv),
            "o_proj": (s.hidden, s.hidden), "gate_proj": (s.hidden, s.intermediate),
            "up_proj": (s.hidden, s.intermediate), "down_proj": (s.intermediate, s.hidden)}
    return s.layers * sum(r * (a + b) for t, (a, b) in dims.items() if t in targets)


def activations(s: Shape, batch: int, seq: int, checkpointing: bool, act_bytes: float = 2.0) -> float:
    per_layer_full = batch * seq * (34 * s.hidden + 5 * s.heads * seq) * act_bytes / 2
    if checkpointing:
        stored = s.layers * batch * seq * s.hidden * act_bytes
        return stored + per_layer_full
    return s.layers * per_layer_full


def logits(s: Shape, batch: int, seq: int) -> float:
    return batch * seq * s.vocab * 4 * 2  # fp32 logits and their gradient


def kv_cache(s: Shape, batch: int, seq: int, kv_bytes: float = 2.0) -> float:
    return 2 * s.layers * s.kv_heads * s.head_dim * seq * batch * kv_bytes


def stage_plan(s: Shape, stage: str, *, weights: str = "bfloat16", lora_r: int = 16, batch: int = 8,
               seq: int = 512, checkpointing: bool = True, response: int = 96,
               value: str = "full", critic_weights: str | None = None) -> dict[str, Any]:
    """GiB per component for ``stage`` in {"sft", "reward", "ppo"}. ``value``: "lora" (value model =
    reward model + LoRA, frozen base), "full" (all value weights trained). ``critic_weights``: the
    precision of PPO's reward model and frozen value base (default: ``weights``; "4bit" is
    ``rl.critic_quantization``)."""
    wb = BYTES[weights]
    cb = BYTES[critic_weights or weights]
    lora = lora_params(s, lora_r)
    act_b = 4.0 if weights == "float32" else 2.0
    row: dict[str, float] = {"weights": s.params * wb, "lora (fp32)": lora * 4, "gradients": lora * 4,
                             "adam state": lora * 8}
    if stage in ("sft", "reward"):
        n = 2 * batch if stage == "reward" else batch  # chosen + rejected
        row["activations"] = activations(s, n, seq, checkpointing, act_b)
        row["logits"] = logits(s, n, seq) if stage == "sft" else 0.0
    elif stage == "ppo":
        full = seq + response
        row["reward model weights"] = s.params * cb
        if value == "full":
            if critic_weights and critic_weights != weights:
                raise ValueError("a quantized value model cannot be trained in full: use value='lora'")
            row["value model weights"] = s.params * wb
            row["gradients"] += s.params * 4
            row["adam state"] += s.params * 8
        else:
            row["value model weights"] = s.params * cb
            row["lora (fp32)"] += lora * 4
            row["gradients"] += lora * 4
            row["adam state"] += lora * 8
        row["rollout kv cache"] = kv_cache(s, batch, full, act_b)
        row["activations"] = 2 * activations(s, batch, full, checkpointing, act_b)  # policy + value
        row["logits"] = logits(s, batch, response)
    else:
        raise ValueError(f"unknown stage {stage!r} (sft, reward, ppo)")
    total = sum(row.values())
    out: dict[str, Any] = {k: round(v / GIB, 2) for k, v in row.items()}
    out["total"] = round(total / GIB, 2)
    out["fits A100 40GB"] = total <= 0.9 * 40e9
    out["fits A100 80GB"] = total <= 0.9 * 80e9
    return out


def profile_plan(profile, shape: Shape) -> list[dict[str, Any]]:
    """One row per stage with the profile's own batch sizes, lengths, LoRA rank and precision."""
    ex = profile.extra
    quant = profile.model.quantization
    dtype = profile.model.dtype if profile.model.dtype != "auto" else "bfloat16"
    weights = quant or dtype
    r = int(ex.get("lora", {}).get("r", 16))
    from .train.ppo import rl_options

    rows = []
    rl = rl_options(profile)
    for stage in ("sft", "reward", "ppo"):
        sec = ex.get(stage, {})
        batch = int(sec.get("per_device_train_batch_size", 8))
        seq = int(sec.get("max_length", 512) or 512) if stage != "ppo" else 256
        ckpt = bool(sec.get("gradient_checkpointing", True))  # TRL's SFT, reward and PPO configs default to on
        critic = rl["critic_quantization"] if stage == "ppo" else None
        plan = stage_plan(s=shape, stage=stage, weights=weights, lora_r=r, batch=batch, seq=seq,
                          checkpointing=ckpt, response=int(sec.get("response_length", 96)),
                          value=rl["value"], critic_weights=critic)
        precision = f"{weights} (reward/value base {critic})" if critic else weights
        rows.append({"stage": stage, "precision": precision, "batch": batch, "seq": seq, "grad ckpt": ckpt, **plan})
    return rows


def shape_for_spec(spec: str) -> Shape:
    """The shape of a model spec's architecture, read from its config (no weights loaded)."""
    from transformers import AutoConfig

    from . import models

    kind, where = models.resolve_spec(spec)
    if kind == "tiny":
        model, _ = models.tiny_model()
        return Shape.from_config(model.config, sum(p.numel() for p in model.parameters()))
    if kind == "default":
        models.fetch_default_model()
    cfg = AutoConfig.from_pretrained(where, token=models.hf_token()) if kind == "hub" else AutoConfig.from_pretrained(where)
    return Shape.from_config(cfg)


def plan_table(profile):
    """The profile's memory plan as a DataFrame (stages as columns)."""
    import pandas as pd

    return pd.DataFrame(profile_plan(profile, shape_for_spec(profile.model.spec))).set_index("stage").T
