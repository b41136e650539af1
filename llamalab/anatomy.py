"""Look inside a LLaMA-family model: architecture read from the model, and the published LLaMA sizes.

``architecture(model)`` reads everything from the loaded model and its config (nothing is assumed
from the name). ``llama_reference_table()`` builds LLaMA 7B/13B/33B/65B from their published
configuration values on the meta device (no weights, nothing downloaded) and computes the memory
their weights need in fp16, 8-bit and 4-bit.
"""

from __future__ import annotations

from typing import Any

# Published LLaMA-1 configurations (Touvron et al. 2023, table 2; the released params.json files).
LLAMA1_CONFIGS: dict[str, dict[str, Any]] = {
    "LLaMA-7B": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32),
    "LLaMA-13B": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40),
    "LLaMA-33B": dict(hidden_size=6656, intermediate_size=17920, num_hidden_layers=60, num_attention_heads=52),
    "LLaMA-65B": dict(hidden_size=8192, intermediate_size=22016, num_hidden_layers=80, num_attention_heads=64),
}
LLAMA1_COMMON = dict(vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-6, rope_theta=10000.0,
                     hidden_act="silu", tie_word_embeddings=False)

GIB = 1024**3
A100_SIZES_GB = (40, 80)
BYTES_PER_PARAM = {"fp16": 2.0, "int8": 1.0, "4bit": 0.5}


def _base(model):
    """The underlying PreTrainedModel (through a PEFT wrapper)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _rope_theta(cfg) -> float | None:
    rp = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if isinstance(rp, dict) and "rope_theta" in rp:
        return float(rp["rope_theta"])
    theta = getattr(cfg, "rope_theta", None)
    return float(theta) if theta is not None else None


def _mlp_kind(model) -> str:
    base = _base(model)
    mlp = base.model.layers[0].mlp if hasattr(base, "model") and hasattr(base.model, "layers") else None
    act = getattr(base.config, "hidden_act", "?")
    if mlp is not None and all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")):
        return "SwiGLU (gate*up, SiLU)" if act == "silu" else f"gated MLP ({act})"
    return f"MLP ({act})"


def _norm_kind(model) -> str:
    base = _base(model)
    try:
        norm = base.model.layers[0].input_layernorm
    except AttributeError:
        return "?"
    return type(norm).__name__.replace("Llama", "")


def architecture(model) -> dict[str, Any]:
    """Architecture figures read from a loaded model."""
    base = _base(model)
    cfg = base.config
    n_params = sum(p.numel() for p in base.parameters())
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    return {
        "class": type(base).__name__,
        "parameters": n_params,
        "layers": cfg.num_hidden_layers,
        "attention_heads": heads,
        "kv_heads": kv,
        "attention": "GQA" if kv < heads else "MHA",
        "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "vocab_size": cfg.vocab_size,
        "max_positions": getattr(cfg, "max_position_embeddings", None),
        "rope_theta": _rope_theta(cfg),
        "norm": f"{_norm_kind(model)} (eps={getattr(cfg, 'rms_norm_eps', '?')})",
        "mlp": _mlp_kind(model),
        "tied_embeddings": bool(getattr(cfg, "tie_word_embeddings", False)),
        "dtype": str(next(base.parameters()).dtype).replace("torch.", ""),
        "weights_gib": sum(p.numel() * p.element_size() for p in base.parameters()) / GIB,
    }


def meta_model(**config_values):
    """A LlamaForCausalLM on the meta device: shapes and parameter counts, no memory, no download."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**{**LLAMA1_COMMON, **config_values})
    with torch.device("meta"):
        return LlamaForCausalLM(cfg)


def weight_memory(n_params: int) -> dict[str, float]:
    """GiB needed by the weights alone in each format (no activations, KV cache or optimizer)."""
    return {fmt: n_params * b / GIB for fmt, b in BYTES_PER_PARAM.items()}


def llama_reference_table() -> list[dict[str, Any]]:
    """LLaMA 7B-65B from the published configs, built on the meta device."""
    rows = []
    for name, values in LLAMA1_CONFIGS.items():
        model = meta_model(**values)
        arch = architecture(model)
        mem = weight_memory(arch["parameters"])
        row = {"model": name, **{k: arch[k] for k in ("parameters", "layers", "attention_heads", "kv_heads",
                                                         "hidden_size", "intermediate_size", "vocab_size",
                                                         "rope_theta", "norm", "mlp")}}
        for fmt, gib in mem.items():
            row[f"{fmt}_GiB"] = round(gib, 1)
            for size in A100_SIZES_GB:
                # A100 "40 GB" = 40 * 1e9 bytes; leave ~10% for CUDA context, activations and KV cache.
                row[f"{fmt}_fits_A100_{size}GB"] = gib * GIB <= 0.9 * size * 1e9
        rows.append(row)
    return rows


def architecture_table(models: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per loaded model (name -> model), same columns as the reference table where they overlap."""
    rows = []
    for name, model in models.items():
        arch = architecture(model)
        rows.append({"model": name, **arch, **{f"{k}_GiB": round(v, 3) for k, v in
                                                 weight_memory(arch["parameters"]).items()}})
    return rows
