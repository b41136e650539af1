"""Stage 1 of the recipe: supervised fine-tuning with LoRA (TRL ``SFTTrainer`` + PEFT).

Data: ``data/train/sft.jsonl`` in TRL's conversational format; each conversation is split into a
conversational prompt/completion pair so the loss is on the assistant's answer only (TRL's
``completion_only_loss``), with the model's chat template. Writes ``runs/<profile>/sft/``:
``adapter/``, ``merged/`` (the adapter merged into fp32 base weights), ``metrics.json``,
``run_info.json``; checkpoints in ``checkpoints/`` for ``--resume``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import models, paths
from ..config import Profile
from . import common

DEFAULT_DATA = "train/sft.jsonl"


def to_prompt_completion(row: dict) -> dict:
    """``{"messages": [...]}`` -> ``{"prompt": [... up to the last user turn], "completion": [last assistant]}``."""
    msgs = row["messages"]
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    return {"prompt": msgs[:last], "completion": [msgs[last]]}


def load_splits(profile: Profile, data: str | Path | None = None) -> tuple[list[dict], list[dict]]:
    from ..trainsets import load_sft

    rows = load_sft(Path(data) if data else paths.data_dir() / DEFAULT_DATA)
    lim = common.section(profile, "data")
    train = [to_prompt_completion(r) for r in rows if r.get("split", "train") == "train"]
    evals = [to_prompt_completion(r) for r in rows if r.get("split") == "eval"]
    n_train, n_eval = lim.get("sft_train"), lim.get("sft_eval")
    return train[:n_train] if n_train else train, evals[:n_eval] if n_eval else evals


def sft_config(profile: Profile, output_dir: Path, **overrides):
    import torch
    from trl import SFTConfig

    values = common.section(profile, "sft")
    values.update(overrides)
    values.update(common.autocast_default(profile, values))  # TRL's bf16=True would autocast on any CPU
    return common.build_dataclass(
        SFTConfig, values, profile, "sft", output_dir=str(output_dir), report_to=[],
        use_cpu=not torch.cuda.is_available(), completion_only_loss=True,
        save_only_model=False, dataloader_num_workers=0,
    )


def _trained_tokens(log_history: list[dict]) -> int | None:
    vals = [h["num_tokens"] for h in log_history if "num_tokens" in h]
    return int(max(vals)) if vals else None


def merge_adapter(base_spec: str, adapter_dir: Path, out_dir: Path, *, seq_cls: bool = False) -> None:
    """Merge a LoRA adapter into fp32 base weights (bf16 would round small LoRA deltas away)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    kind, where = models.resolve_spec(base_spec) if not Path(base_spec).is_dir() else ("local", base_spec)
    cls = AutoModelForSequenceClassification if seq_cls else AutoModelForCausalLM
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if seq_cls:
        kwargs["num_labels"] = 1
    if kind == "tiny" and not seq_cls:  # built in code, deterministically (seed 0), as in training
        base, tok = models.tiny_model()
    else:
        base = cls.from_pretrained(where, **kwargs)
        tok = AutoTokenizer.from_pretrained(where)
    models.prepare_tokenizer(tok, base)
    models.ensure_chat_template(tok)  # the format SFT trained in, for every stage that reads this directory
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)


def make_trainer(profile: Profile, model, tok, args, train_rows: list[dict], eval_rows: list[dict], lora=None,
                 callbacks: list | None = None):
    """The SFTTrainer of this stage (also used by ``bench train``). A tokenizer without a chat template (a
    base model's) gets ``models.PLAIN_CHAT_TEMPLATE``; ``merge_adapter`` saves it with the merged model."""
    from datasets import Dataset
    from trl import SFTTrainer

    models.ensure_chat_template(tok)

    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                      eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                      processing_class=tok, peft_config=lora or common.lora_config(profile), callbacks=callbacks)


def train_sft(profile: Profile, *, resume: bool = False, data: str | Path | None = None,
              callbacks: list | None = None, progress: bool = True, retrain: bool = True) -> dict[str, Any]:
    """Train the SFT adapter for a profile; return the metrics (also written to metrics.json).

    ``retrain=False`` returns the existing stage's metrics when it was made from the same inputs.
    """
    train_rows, eval_rows = load_splits(profile, data)  # bad data fails here, before anything is written
    data_file = Path(data) if data else paths.data_dir() / DEFAULT_DATA
    fp = common.fingerprint(profile, "sft", [data_file])
    if not retrain and not resume and (done := common.reusable(profile, "sft", fp)):
        return done
    out, ck_dir, last = common.stage_checkpoints(profile, "sft", resume)
    dtype, why = common.train_dtype(profile)
    args = sft_config(profile, ck_dir, disable_tqdm=not progress)
    common.seed_everything(args.seed)  # the LoRA adapter is drawn before SFTTrainer seeds
    model, tok = models.load_model(profile.model.spec, dtype=str(dtype).replace("torch.", ""),
                                   quantization=profile.model.quantization,
                                   attn_implementation=profile.model.attn_implementation)
    tok.padding_side = "right"  # training batches; generation code sets left again
    steps = common.step_recorder()
    lora = common.lora_config(profile)
    trainer = make_trainer(profile, model, tok, args, train_rows, eval_rows, lora, [steps, *(callbacks or [])])
    started = common.stage_clock()
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    stats = common.memory_and_time(trainer, started)
    eval_metrics = trainer.evaluate() if eval_rows else {}
    history = trainer.state.log_history
    tokens = _trained_tokens(history)
    metrics = {
        "train_loss": result.training_loss, "eval_loss": eval_metrics.get("eval_loss"),
        "eval_mean_token_accuracy": eval_metrics.get("eval_mean_token_accuracy"),
        "global_step": trainer.state.global_step, "epochs": trainer.state.epoch,
        "train_examples": len(train_rows), "eval_examples": len(eval_rows),
        "trained_tokens": tokens,
        "train_tokens_per_s": round(tokens / stats["train_seconds"], 1) if tokens else None,
        "resumed_from": last.name if last else None, "first_step_this_run": steps.first_step, "base_dtype": why, **stats,
        "log_history": history,
    }
    if common.is_main_process():
        tok.padding_side = "left"
        common.save_adapter_and_merged(trainer.model, profile.model.spec, out, tokenizer=tok)
        common.write_json(out / "metrics.json", metrics)
        common.write_json(out / "run_info.json", common.run_info(
            profile, "sft", {"sft": args, "lora": lora},
            {"base_model": profile.model.spec, "data": str(data_file), "fingerprint": fp}))
    return metrics
