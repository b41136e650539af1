"""``python -m llamalab bench gpu``: the GPU path measured on one card, nothing downloaded.

1. A LLaMA-7B-shaped model (the published 7B configuration, with the default tokenizer's vocabulary
   so real text can be tokenized) with random weights in bf16: a few LoRA SFT steps, reward-model
   steps and one PPO update with rollout (TRL's PPOTrainer: policy + LoRA, value = reward + LoRA),
   with gradient checkpointing as ``llamalab.train.ppo`` applies it and, as the baseline, without it
   (TRL 1.12's PPOTrainer ignores the flag).
   Prints tokens/s, model-FLOPs utilisation and peak memory per stage beside the memory plan's
   estimate for the same shape and batch (``llamalab.memory``), and generation tokens/s at batch 1
   and 32.
2. The smoke chain (SFT -> reward -> PPO) of the default model on the GPU, then PPO once more with
   ``rl.critic_quantization: 4bit`` (reward model and value base through bitsandbytes) when
   bitsandbytes is installed.

FLOPs per trained token: ``4 * N`` for LoRA training with a frozen base (forward ``2N``, backward
through activations ``2N``; the frozen weights' gradients are never computed), plus attention
``6 * L * s * h``. ``--tiny`` runs every part on a small config (CPU, for tests of the code path).

A stage that fails is reported with its error and the next stage still runs: one run on a borrowed
GPU should bring back every figure it can.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .memory import LORA_TARGETS

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


def _peak_gib() -> float | None:
    """Peak CUDA memory since the last ``_free()`` (which resets it)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 1024**3, 1)


def _free():
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _run_stage(report: dict[str, Any], key: str, name: str, fn) -> None:
    """``report[key][name] = fn()``; a failure is recorded as ``{"error": ...}`` and printed, not raised."""
    t0 = time.perf_counter()
    try:
        report[key][name] = fn()
    except Exception as exc:  # noqa: BLE001 - every stage's figure or its error, in one run
        traceback.print_exc(file=sys.stderr)
        report[key][name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    finally:
        _free()
    report[key][name]["wall_s"] = round(time.perf_counter() - t0, 1)
    print(f"[bench gpu] {name}: " + "  ".join(f"{k}={v}" for k, v in report[key][name].items()), flush=True)


def bench_gpu(tiny: bool = False, steps: int = 4, batch: int = 8, seq: int = 512, smoke_chain: bool = True,
              tokenizer: str | None = None, json_path: str | Path | None = None) -> dict[str, Any]:
    import torch

    from . import models
    from .memory import Shape, stage_plan

    t_start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cuda" and not tiny:
        raise RuntimeError("bench gpu needs a CUDA GPU (use --tiny to exercise the code path on CPU)")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if tiny:
        steps, batch, seq = 2, 2, 32
    if tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer)
    else:
        tok = models.tiny_tokenizer() if tiny else _default_tokenizer()
    tok = models.prepare_tokenizer(tok)
    cfg = _config(tiny, len(tok))
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    peak = _peak(name)
    shape = Shape.from_config(cfg)  # parameter count from a meta-device copy, no memory
    n_params = shape.params
    flops_per_token = 4 * n_params + 6 * cfg.num_hidden_layers * seq * cfg.hidden_size
    report: dict[str, Any] = {"device": name, "dtype": str(dtype), "parameters": n_params, "batch": batch,
                              "seq": seq, "flops_per_token": flops_per_token, "peak_tflops": peak,
                              "stages": {}}
    if device == "cuda":
        report["torch"] = torch.__version__
        report["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 1024**3, 1)
    _free()

    def mfu(tps: float) -> float | None:
        return round(tps * flops_per_token / (peak * 1e12), 3) if peak else None

    def plan(stage: str, **kw) -> float:
        return stage_plan(shape, stage, weights="bfloat16" if device == "cuda" else "float32", lora_r=16,
                          checkpointing=True, **kw)["total"]

    def lora_steps(fn, stage: str):
        def run():
            out = fn(cfg, tok, device, dtype, steps, batch, seq)
            out["mfu"] = mfu(out["tokens_per_s"])
            out["plan_gib"] = plan(stage, batch=batch, seq=seq)
            return out
        return run

    _run_stage(report, "stages", "lora_sft", lora_steps(_lora_sft, "sft"))
    _run_stage(report, "stages", "generation", lambda: _generation(cfg, tok, device, dtype, tiny))
    _run_stage(report, "stages", "lora_reward", lora_steps(_lora_reward, "reward"))
    ppo_batch, query, resp = (2, 64, 8) if tiny else (16, 64, 128)

    def ppo(checkpointing: bool):
        def run():
            out = _ppo_update(cfg, tok, device, dtype, ppo_batch, query, resp, checkpointing=checkpointing)
            out["plan_gib"] = plan("ppo", batch=ppo_batch, seq=query, response=resp, value="lora")
            return out
        return run

    _run_stage(report, "stages", "ppo_update", ppo(True))
    # the baseline: TRL's PPOTrainer as it is, which never applies gradient_checkpointing
    _run_stage(report, "stages", "ppo_update_trl_as_is", ppo(False))
    if smoke_chain and not tiny:
        report["smoke_chain"] = {}
        _smoke_chain(report)
    report["total_s"] = round(time.perf_counter() - t_start, 1)
    _print(report)
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _default_tokenizer():
    from transformers import AutoTokenizer

    from . import models

    return AutoTokenizer.from_pretrained(models.fetch_default_model())


def _timed_steps(fn, steps: int) -> float:
    fn()  # warm-up
    _sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync()
    return time.perf_counter() - t0


def _lora_model(cls, cfg, device, dtype, task_type: str | None = None):
    import torch
    from peft import LoraConfig, get_peft_model

    from .train.common import enable_checkpointing

    with torch.device(device):
        model = cls._from_config(cfg, dtype=dtype)
    pm = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=list(LORA_TARGETS), task_type=task_type))
    enable_checkpointing(pm)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-4)
    return pm, opt


def _lora_sft(cfg, tok, device, dtype, steps, batch, seq) -> dict[str, Any]:
    import torch
    from transformers import LlamaForCausalLM

    pm, opt = _lora_model(LlamaForCausalLM, cfg, device, dtype)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)

    def step():
        pm(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    secs = _timed_steps(step, steps)
    return {"tokens_per_s": round(steps * batch * seq / secs), "peak_gib": _peak_gib()}


def _generation(cfg, tok, device, dtype, tiny) -> dict[str, Any]:
    """Generation tokens/s of the plain model (KV cache on) at batch 1 and 32, 64-token prompts."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device(device):
        base = LlamaForCausalLM._from_config(cfg, dtype=dtype)
    base.config.use_cache = True
    base.eval()
    out: dict[str, Any] = {}
    new = 8 if tiny else 128
    for b in (1, 32):
        q = torch.randint(0, cfg.vocab_size, (b, 64), device=device)
        with torch.inference_mode():
            base.generate(q, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
            _sync()
            t0 = time.perf_counter()
            base.generate(q, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=tok.pad_token_id)
            _sync()
        out[f"batch_{b}_tokens_per_s"] = round(b * new / (time.perf_counter() - t0), 1)
    out["peak_gib"] = _peak_gib()
    return out


def _lora_reward(cfg, tok, device, dtype, steps, batch, seq) -> dict[str, Any]:
    import torch
    from transformers import LlamaForSequenceClassification

    seq_cfg = cfg.__class__(**{**cfg.to_dict(), "num_labels": 1, "pad_token_id": tok.pad_token_id})
    pm, opt = _lora_model(LlamaForSequenceClassification, seq_cfg, device, dtype, task_type="SEQ_CLS")
    chosen = torch.randint(1, cfg.vocab_size, (batch, seq), device=device)
    rejected = torch.randint(1, cfg.vocab_size, (batch, seq), device=device)

    def step():
        r = pm(input_ids=torch.cat([chosen, rejected])).logits[:, 0]
        (-torch.nn.functional.logsigmoid(r[:batch] - r[batch:]).mean()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    secs = _timed_steps(step, steps)
    return {"tokens_per_s": round(steps * 2 * batch * seq / secs), "peak_gib": _peak_gib()}


def _ppo_update(cfg, tok, device, dtype, batch, query, resp, checkpointing: bool) -> dict[str, Any]:
    import tempfile

    import torch
    from datasets import Dataset
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    with torch.device(device):
        policy = LlamaForCausalLM._from_config(cfg, dtype=dtype)
        seq_cfg = cfg.__class__(**{**cfg.to_dict(), "num_labels": 1, "pad_token_id": tok.pad_token_id})
        reward = LlamaForSequenceClassification._from_config(seq_cfg, dtype=dtype)
        value = LlamaForSequenceClassification._from_config(seq_cfg, dtype=dtype)
    value.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=16, target_modules=list(LORA_TARGETS)), value)
    value.score.requires_grad_(True)
    if checkpointing:  # what llamalab.train.ppo does: TRL's PPOTrainer ignores args.gradient_checkpointing
        from .train.common import enable_checkpointing

        enable_checkpointing(policy)
        enable_checkpointing(value)
    queries = Dataset.from_dict({"input_ids": [[5 + (i % 50)] * query for i in range(batch)]})
    with tempfile.TemporaryDirectory() as tmp:
        args = PPOConfig(output_dir=tmp, per_device_train_batch_size=batch, total_episodes=batch,
                         num_ppo_epochs=1, num_mini_batches=1, response_length=resp, report_to=[],
                         local_rollout_forward_batch_size=batch, num_sample_generations=0, bf16=device == "cuda",
                         use_cpu=device != "cuda", gradient_checkpointing=True, save_strategy="no",
                         disable_tqdm=True, stop_token="eos")
        trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=None, reward_model=reward,
                             value_model=value, train_dataset=queries, eval_dataset=queries,
                             peft_config=LoraConfig(r=16, target_modules=list(LORA_TARGETS)))
        _sync()
        t0 = time.perf_counter()
        trainer.train()
        _sync()
        secs = time.perf_counter() - t0
    return {"episodes": batch, "query_tokens": query, "response_tokens": resp, "seconds": round(secs, 1),
            "episodes_per_s": round(batch / secs, 2), "peak_gib": _peak_gib()}


def _smoke_chain(report: dict[str, Any]) -> None:
    """SFT -> reward -> PPO of the smoke profile on this device, in a temporary runs directory; then
    PPO with a 4-bit critic (``rl.critic_quantization``) when bitsandbytes can be imported."""
    import importlib.util
    import os
    import tempfile

    import torch

    from . import config
    from .train.ppo import train_ppo
    from .train.reward import train_reward
    from .train.sft import train_sft

    def stage(fn, prof, extra_keys=()):
        def run():
            _free()
            t0 = time.perf_counter()
            m = fn(prof, progress=False)
            out: dict[str, Any] = {"seconds": round(time.perf_counter() - t0, 1),
                                   "peak_gib": m.get("peak_cuda_gib", _peak_gib())}
            for key, getter in extra_keys:
                out[key] = getter(m)
            return out
        return run

    first_kl = ("first_update_kl", lambda m: (m.get("first_update") or {}).get("kl"))
    with tempfile.TemporaryDirectory() as tmp:
        old = os.environ.get("LLAMALAB_RUNS")
        os.environ["LLAMALAB_RUNS"] = tmp
        try:
            prof = config.load_profile("smoke")
            _run_stage(report, "smoke_chain", "sft", stage(train_sft, prof, [("eval_loss", lambda m: m.get("eval_loss"))]))
            _run_stage(report, "smoke_chain", "reward", stage(
                train_reward, prof, [("pairwise_accuracy", lambda m: m.get("eval_pairwise_accuracy"))]))
            _run_stage(report, "smoke_chain", "ppo", stage(train_ppo, prof, [first_kl]))
            if torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes"):
                q4 = config.apply_overrides(prof, ["rl.value=lora", "rl.critic_quantization=4bit"])
                _run_stage(report, "smoke_chain", "ppo_4bit_critic", stage(train_ppo, q4, [first_kl]))
            else:
                report["smoke_chain"]["ppo_4bit_critic"] = {"skipped": "needs CUDA and bitsandbytes"}
        finally:
            if old is None:
                os.environ.pop("LLAMALAB_RUNS", None)
            else:
                os.environ["LLAMALAB_RUNS"] = old


def _print(report) -> None:
    print(f"\n# bench gpu on {report['device']} ({report['dtype']}); model: LLaMA-7B shape, "
          f"{report['parameters'] / 1e9:.2f}B parameters, random weights; training batch {report['batch']} x "
          f"{report['seq']} tokens, LoRA r=16 on all linear layers, gradient checkpointing")
    print(f"FLOPs per trained token used for MFU: 4*N + 6*L*s*h = {report['flops_per_token'] / 1e9:.1f} GFLOP "
          f"(peak {report['peak_tflops'] or 'unknown'} TFLOP/s dense bf16)")
    print("peak_gib: measured (torch.cuda.max_memory_allocated); plan_gib: llamalab.memory.stage_plan's estimate")
    for stage, vals in report["stages"].items():
        print(f"{stage:12s} " + "  ".join(f"{k}={v}" for k, v in vals.items()))
    for stage, vals in report.get("smoke_chain", {}).items():
        print(f"smoke chain, default model, {stage:16s} " + "  ".join(f"{k}={v}" for k, v in vals.items()))
    print(f"total {report['total_s']} s")
