"""``python -m llamalab bench gpu``: the GPU path measured on one card, nothing downloaded.

1. A LLaMA-7B-shaped model (the published 7B configuration, with the default tokenizer's vocabulary
   so real text can be tokenized) with random weights in bf16: a few LoRA SFT steps, reward-model
   steps and one PPO update with rollout (TRL's PPOTrainer: policy + LoRA, value = reward + LoRA).
   Prints tokens/s, model-FLOPs utilisation and peak memory per stage, and generation tokens/s at
   batch 1 and 32.
2. The smoke chain (SFT -> reward -> PPO) of the default model on the GPU.

FLOPs per trained token: ``4 * N`` for LoRA training with a frozen base (forward ``2N``, backward
through activations ``2N``; the frozen weights' gradients are never computed), plus attention
``6 * L * s * h``. ``--tiny`` runs every part on a small config (CPU, for tests of the code path).
"""

from __future__ import annotations

import time
from typing import Any

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16, per the vendors' data sheets


def _peak(device_name: str) -> float | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k in device_name), None)


def _config(tiny: bool, vocab: int):
    from transformers import LlamaConfig

    from .anatomy import LLAMA1_COMMON, LLAMA1_CONFIGS

    values = {**LLAMA1_COMMON, **LLAMA1_CONFIGS["LLaMA-7B"], "vocab_size": vocab}
    if tiny:
        values.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    return LlamaConfig(**values)


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_gib(reset: bool = False) -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    peak = torch.cuda.max_memory_allocated() / 1024**3
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return round(peak, 1)


def bench_gpu(tiny: bool = False, steps: int = 4, batch: int = 8, seq: int = 512,
              smoke_chain: bool = True) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    from . import models

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cuda" and not tiny:
        raise RuntimeError("bench gpu needs a CUDA GPU (use --tiny to exercise the code path on CPU)")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if tiny:
        steps, batch, seq = 2, 2, 32
    tok = models.prepare_tokenizer(models.tiny_tokenizer() if tiny else _default_tokenizer())
    cfg = _config(tiny, len(tok))
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    peak = _peak(name)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                           "up_proj", "down_proj"])
    report: dict[str, Any] = {"device": name, "dtype": str(dtype), "stages": {}}
    torch.manual_seed(0)

    # ---- SFT steps
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    n_params = sum(p.numel() for p in model.parameters())
    flops_per_token = 4 * n_params + 6 * cfg.num_hidden_layers * seq * cfg.hidden_size
    _peak_gib(reset=True)
    pm = get_peft_model(model, lora)
    pm.gradient_checkpointing_enable()
    pm.enable_input_require_grads()
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)

    def timed_steps(fn) -> float:
        fn()  # warm-up
        _sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        _sync()
        return time.perf_counter() - t0

    def sft_step():
        loss = pm(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    secs = timed_steps(sft_step)
    tps = steps * batch * seq / secs
    report["stages"]["lora_sft"] = {"tokens_per_s": round(tps), "peak_gib": _peak_gib(reset=True),
                                    "mfu": round(tps * flops_per_token / (peak * 1e12), 3) if peak else None}

    # ---- generation tokens/s at batch 1 and 32 (LoRA merged away: the plain model)
    base = pm.merge_and_unload()
    base.gradient_checkpointing_disable()
    base.config.use_cache = True
    base.eval()
    gen = {}
    for b in (1, 32):
        q = torch.randint(0, cfg.vocab_size, (b, 64), device=device)
        new = 8 if tiny else 128
        with torch.inference_mode():
            base.generate(q, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
            _sync()
            t0 = time.perf_counter()
            base.generate(q, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=tok.pad_token_id)
            _sync()
        gen[f"batch_{b}_tokens_per_s"] = round(b * new / (time.perf_counter() - t0), 1)
    report["stages"]["generation"] = {**gen, "peak_gib": _peak_gib(reset=True)}
    pm = base = model = opt = None  # free before the next stage
    _free()

    # ---- reward-model steps (pairwise loss on chosen/rejected)
    with torch.device(device):
        rm = LlamaForSequenceClassification(cfg.__class__(**{**cfg.to_dict(), "num_labels": 1,
                                                              "pad_token_id": tok.pad_token_id})).to(dtype)
    rpm = get_peft_model(rm, LoraConfig(**{**lora.to_dict(), "task_type": "SEQ_CLS"}))
    rpm.gradient_checkpointing_enable()
    rpm.enable_input_require_grads()
    ropt = torch.optim.AdamW([p for p in rpm.parameters() if p.requires_grad], lr=1e-4)
    chosen = torch.randint(1, cfg.vocab_size, (batch, seq), device=device)
    rejected = torch.randint(1, cfg.vocab_size, (batch, seq), device=device)

    def rm_step():
        r = rpm(input_ids=torch.cat([chosen, rejected])).logits[:, 0]
        loss = -torch.nn.functional.logsigmoid(r[:batch] - r[batch:]).mean()
        loss.backward()
        ropt.step()
        ropt.zero_grad(set_to_none=True)

    secs = timed_steps(rm_step)
    tps = steps * 2 * batch * seq / secs
    report["stages"]["lora_reward"] = {"tokens_per_s": round(tps), "peak_gib": _peak_gib(reset=True),
                                       "mfu": round(tps * flops_per_token / (peak * 1e12), 3) if peak else None}
    rpm = rm = ropt = None
    _free()

    # ---- one PPO update with rollout (TRL), value = reward model + LoRA
    report["stages"]["ppo_update"] = _ppo_update(cfg, tok, device, dtype, tiny)
    if smoke_chain and not tiny:
        report["smoke_chain"] = _smoke_chain()
    _print(report, flops_per_token, n_params, peak, batch, seq)
    return report


def _default_tokenizer():
    from transformers import AutoTokenizer

    from . import models

    return AutoTokenizer.from_pretrained(models.fetch_default_model())


def _free():
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _ppo_update(cfg, tok, device, dtype, tiny) -> dict[str, Any]:
    import tempfile

    import torch
    from datasets import Dataset
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    batch, resp = (2, 8) if tiny else (16, 128)
    with torch.device(device):
        policy = LlamaForCausalLM(cfg).to(dtype)
        seq_cfg = cfg.__class__(**{**cfg.to_dict(), "num_labels": 1, "pad_token_id": tok.pad_token_id})
        reward = LlamaForSequenceClassification(seq_cfg).to(dtype)
        value = LlamaForSequenceClassification(seq_cfg).to(dtype)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    value.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=16, target_modules=targets), value)
    value.score.requires_grad_(True)
    queries = Dataset.from_dict({"input_ids": [[5 + (i % 50)] * 64 for i in range(batch)]})
    with tempfile.TemporaryDirectory() as tmp:
        args = PPOConfig(output_dir=tmp, per_device_train_batch_size=batch, total_episodes=batch,
                         num_ppo_epochs=1, num_mini_batches=1, response_length=resp, report_to=[],
                         local_rollout_forward_batch_size=batch, num_sample_generations=0, bf16=device == "cuda",
                         use_cpu=device != "cuda", gradient_checkpointing=True, save_strategy="no",
                         disable_tqdm=True, stop_token="eos")
        trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=None, reward_model=reward,
                             value_model=value, train_dataset=queries, eval_dataset=queries,
                             peft_config=LoraConfig(r=16, target_modules=targets))
        _sync()
        t0 = time.perf_counter()
        trainer.train()
        _sync()
        secs = time.perf_counter() - t0
    out = {"episodes": batch, "seconds": round(secs, 1), "episodes_per_s": round(batch / secs, 2),
           "peak_gib": _peak_gib(reset=True)}
    del trainer, policy, reward, value
    _free()
    return out


def _smoke_chain() -> dict[str, Any]:
    import os
    import tempfile

    from . import config
    from .train.ppo import train_ppo
    from .train.reward import train_reward
    from .train.sft import train_sft

    with tempfile.TemporaryDirectory() as tmp:
        old = os.environ.get("LLAMALAB_RUNS")
        os.environ["LLAMALAB_RUNS"] = tmp
        try:
            prof = config.load_profile("smoke")
            out = {}
            for stage, fn in (("sft", train_sft), ("reward", train_reward), ("ppo", train_ppo)):
                t0 = time.perf_counter()
                m = fn(prof, progress=False)
                out[stage] = {"seconds": round(time.perf_counter() - t0, 1)}
                if stage == "reward":
                    out[stage]["pairwise_accuracy"] = m.get("eval_pairwise_accuracy")
                if stage == "ppo":
                    out[stage]["first_update_kl"] = (m.get("first_update") or {}).get("kl")
        finally:
            if old is None:
                os.environ.pop("LLAMALAB_RUNS", None)
            else:
                os.environ["LLAMALAB_RUNS"] = old
    return out


def _print(report, flops_per_token, n_params, peak, batch, seq) -> None:
    print(f"# bench gpu on {report['device']} ({report['dtype']}); model: LLaMA-7B shape, {n_params / 1e9:.2f}B "
          f"parameters, random weights; batch {batch} x {seq} tokens")
    print(f"FLOPs per trained token used for MFU: 4*N + 6*L*s*h = {flops_per_token / 1e9:.1f} GFLOP "
          f"(peak {peak or 'unknown'} TFLOP/s dense bf16)")
    for stage, vals in report["stages"].items():
        print(f"{stage:12s} " + "  ".join(f"{k}={v}" for k, v in vals.items()))
    if "smoke_chain" in report:
        print("smoke chain of the default model on this GPU: " +
              "  ".join(f"{k}: {v}" for k, v in report["smoke_chain"].items()))
