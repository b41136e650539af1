"""Batched, left-padded generation with the KV cache, a progress bar and per-probe stop conditions.

``generate(model, tokenizer, prompts, ...)`` returns one completion per prompt, in order. Prompts
are sorted by length and batched (similar lengths waste less padding); each row stops as soon as
``find_end(text)`` says its answer is complete, and the whole batch stops when every row has, so no
compute is spent past the answers. Completions are cut at that point.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

FindEnd = Callable[[str], "int | None"]


def format_prompt(tokenizer, prompt: str, chat: bool = False, system: str | None = None) -> str:
    """The text the model sees: the plain prompt, or the same content in the model's chat template."""
    if not chat:
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat=True but this tokenizer has no chat template; use the plain-text prompt")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def enable_kv_cache(model) -> None:
    """Gradient checkpointing switches the KV cache off (``use_cache=False``); generation without it
    recomputes the whole prefix at every token. Turn it back on before any generate."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for cfg in (getattr(base, "config", None), getattr(base, "generation_config", None)):
        if cfg is not None and getattr(cfg, "use_cache", True) is False:
            cfg.use_cache = True


MIN_SHARED_PREFIX = 32  # tokens; below this, reusing the prefix's cache is not worth a copy


def shared_prefix_length(ids: Sequence[Sequence[int]], minimum: int = MIN_SHARED_PREFIX) -> int:
    """Length of the token prefix all prompts share, leaving each at least one token of its own."""
    if len(ids) < 2:
        return 0
    n = min(len(x) for x in ids) - 1
    first = ids[0]
    k = 0
    while k < n and all(x[k] == first[k] for x in ids):
        k += 1
    return k if k >= minimum else 0


class _RowStopper:
    """StoppingCriteria: decode each unfinished row's new tokens, ask ``find_end``."""

    def __init__(self, tokenizer, prompt_len: int, find_end: FindEnd):
        self.tokenizer, self.prompt_len, self.find_end = tokenizer, prompt_len, find_end
        self.done: list[bool] | None = None

    def __call__(self, input_ids, scores=None, **kwargs):
        import torch

        n = input_ids.shape[0]
        if self.done is None:
            self.done = [False] * n
        new = input_ids[:, self.prompt_len:]
        for i in range(n):
            if not self.done[i]:
                text = self.tokenizer.decode(new[i], skip_special_tokens=True)
                self.done[i] = self.find_end(text) is not None
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


def cut(text: str, find_end: FindEnd | None) -> str:
    if find_end is None:
        return text
    end = find_end(text)
    return text if end is None else text[:end]


@dataclass
class GenStats:
    prompts: int = 0
    new_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int | None = None,
    find_end: FindEnd | None = None,
    chat: bool = False,
    progress: bool = True,
    desc: str = "generate",
    stats: GenStats | None = None,
    min_new_tokens: int | None = None,
    reuse_prefix: bool = True,
) -> list[str]:
    """Greedy by default (as PaLM did). Returns completions (without the prompt), in input order.

    ``reuse_prefix``: when all prompts share a long token prefix (a few-shot exemplar), its
    keys/values are computed once and reused by every batch instead of recomputed per prompt.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import StoppingCriteriaList

    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    if tokenizer.padding_side != "left":
        raise ValueError("batched decoder-only generation needs tokenizer.padding_side == 'left'")
    enable_kv_cache(model)
    texts = [format_prompt(tokenizer, p, chat) for p in prompts]
    ids = [tokenizer(t, add_special_tokens=not chat)["input_ids"] for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(ids[i]), reverse=True)
    out: list[str] = [""] * len(texts)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    if seed is not None:
        torch.manual_seed(seed)
    prefix_len = shared_prefix_length(ids) if reuse_prefix else 0
    prefix_cache = None
    if prefix_len:
        with torch.inference_mode():
            prefix_cache = model(input_ids=torch.tensor([ids[0][:prefix_len]], device=device),
                                 use_cache=True)["cache"]
    bar = tqdm(total=len(texts), desc=desc, disable=not progress, leave=False)
    t0 = time.perf_counter()
    new_tokens = 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        rows = [ids[i][prefix_len:] for i in idx]
        width = max(len(r) for r in rows)
        # [shared prefix][left padding][rest]: positions come from the attention mask, so the padding
        # in the middle is invisible to the model and the prefix's cached keys/values are reused.
        head = ids[idx[0]][:prefix_len]
        input_ids = torch.tensor([head + [pad] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[1] * prefix_len + [0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        prompt_len = input_ids.shape[1]
        kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=pad, use_cache=True)
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if min_new_tokens:
            kwargs["min_new_tokens"] = min_new_tokens
        if find_end is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_RowStopper(tokenizer, prompt_len, find_end)])
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(idx))
            kwargs["cache"] = cache
        with torch.inference_mode():
            seqs = model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        gen = seqs[:, prompt_len:]
        for row, i in enumerate(idx):
            toks = gen[row]
            new_tokens += int((toks != pad).sum())
            out[i] = cut(tokenizer.decode(toks, skip_special_tokens=True), find_end)
        bar.update(len(idx))
    bar.close()
    if stats is not None:
        stats.prompts += len(texts)
        stats.new_tokens += new_tokens
        stats.seconds += time.perf_counter() - t0
    return out


def throughput(model, tokenizer, prompts: Sequence[str], *, batch_size: int, new_tokens: int) -> GenStats:
    """Tokens/s generating exactly ``new_tokens`` per prompt (EOS suppressed), greedy."""
    stats = GenStats()
    generate(model, tokenizer, prompts, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
             batch_size=batch_size, progress=False, stats=stats)
    stats.new_tokens = len(prompts) * new_tokens
    return stats
