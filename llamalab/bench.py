"""Benchmarks: each prints measured figures beside the baseline they beat, in one run.

- ``bench_generate``: load time; tokens/s at batch 1 and batch 8 in fp32 and bf16; 8 prompts one at
  a time (fp32, the naive baseline) vs the default batched path; the ratio (target >= 5x).
- ``bench_probes``: the clickbait and SQL probes batched vs one prompt at a time (target >= 3x).
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

BENCH_PROMPTS = [
    "The three primary colours are",
    "Here is a short story about a robot who learns to paint:",
    "-- We have a table `events` with columns `event_id`, `timestamp`, `user_id`, `rpc_method`.\n"
    "-- We want to count how many users issued request \"Login\" over the last week.\n-- SQL query for this is:\n",
    "I will explain these jokes:\n(1) Always borrow money from a pessimist. They'll never expect it back.\nExplanation:",
    "Q: What is the boiling point of water at sea level?\nA:",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "The main causes of the French Revolution were",
    "A recipe for pancakes needs the following ingredients:",
]


def _table(rows: list[dict[str, Any]]) -> str:
    cols = list(rows[0])
    widths = [max(len(str(c)), *(len(str(r[c])) for r in rows)) for c in cols]
    line = "  ".join(str(c).ljust(w) for c, w in zip(cols, widths, strict=True))
    body = ["  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths, strict=True)) for r in rows]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def _cold_load_seconds(spec: str) -> float:
    """Load time from the cache in a fresh process (what a notebook pays)."""
    code = ("import time, torch, transformers, safetensors; from llamalab import models; t=time.perf_counter(); "
            f"models.load_model({spec!r}, dtype='float32', verbose=False); print(time.perf_counter()-t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def bench_generate(spec: str = "default", new_tokens: int = 64, n_prompts: int = 8) -> dict[str, Any]:
    from . import models
    from .generate import throughput

    prompts = (BENCH_PROMPTS * ((n_prompts + 7) // 8))[:n_prompts]
    models.load_model(spec, verbose=False)  # make sure the cache exists before timing the load
    load_s = _cold_load_seconds(spec)
    default_dtype, why = models.resolve_dtype("auto", models.pick_device())
    default_name = str(default_dtype).replace("torch.", "")
    rows, figures = [], {}
    for dtype in ("float32", "bfloat16"):
        model, tok = models.load_model(spec, dtype=dtype, verbose=False)
        throughput(model, tok, prompts[:2], batch_size=2, new_tokens=4)  # warm-up
        one = throughput(model, tok, prompts, batch_size=1, new_tokens=new_tokens)
        batched = throughput(model, tok, prompts, batch_size=n_prompts, new_tokens=new_tokens)
        figures[dtype] = {"batch1": one, "batched": batched}
        for label, st, bs in (("one at a time", one, 1), (f"batched x{n_prompts}", batched, n_prompts)):
            rows.append({"dtype": dtype, "mode": label, "batch": bs, "prompts": len(prompts),
                         "new_tokens": st.new_tokens, "wall_s": f"{st.seconds:.2f}",
                         "tokens/s": f"{st.tokens_per_s:.1f}"})
        del model
    base = figures["float32"]["batch1"]
    best = figures[default_name]["batched"]
    ratio = best.tokens_per_s / base.tokens_per_s
    print(f"# bench generate: {spec}, greedy, {new_tokens} new tokens per prompt (EOS suppressed), "
          f"{n_prompts} prompts")
    print(f"load from cache (fresh process after importing torch/transformers; fp32; includes the SHA-256 "
          f"integrity check): {load_s:.2f} s")
    print(f"default dtype on this machine: {why}")
    print(_table(rows))
    print(f"\n{n_prompts} prompts one at a time in fp32 (baseline): {base.seconds:.2f} s, "
          f"{base.tokens_per_s:.1f} tok/s")
    print(f"{n_prompts} prompts batched, default path ({default_name}, batch {n_prompts}): {best.seconds:.2f} s, "
          f"{best.tokens_per_s:.1f} tok/s")
    print(f"speed-up of the default batched path over one-at-a-time fp32: {ratio:.1f}x (target >= 5x: "
          f"{'met' if ratio >= 5 else 'NOT met'})")
    return {"load_s": load_s, "default_dtype": default_name, "ratio": ratio,
            "tokens_per_s": {d: {k: v.tokens_per_s for k, v in f.items()} for d, f in figures.items()}}


def _headline(summary: dict) -> str:
    if "format_ok_rate" in summary:
        return f"acc {summary['accuracy']:.2f} fmt {summary['format_ok_rate']:.2f}"
    return f"valid {summary['valid_sql_rate']:.2f} exec {summary['execution_accuracy']:.2f}"


def bench_probes(spec: str = "default", clickbait_n: int = 32, sql_n: int = 16, batch_size: int = 16) -> dict:
    from . import models
    from .probes import run_probe

    model, tok = models.load_model(spec, verbose=False)
    info = models.model_info(model)
    rows, out = [], {}
    modes = [("one at a time (naive)", 1, False), (f"batched x{batch_size}", batch_size, False),
             (f"batched x{batch_size} + shared-prefix cache (default)", batch_size, True)]
    for name, n in (("clickbait", clickbait_n), ("sql", sql_n)):
        res = []
        for label, bs, reuse in modes:
            t0 = time.perf_counter()
            r = run_probe(name, model, tok, limit=n, batch_size=bs, model_spec=spec, progress=False,
                          reuse_prefix=reuse)
            wall = time.perf_counter() - t0
            res.append((wall, r))
            rows.append({"probe": name, "mode": label, "items": len(r["items"]), "wall_s": f"{wall:.2f}",
                         "items/s": f"{len(r['items']) / wall:.2f}",
                         "speed-up": f"{res[0][0] / wall:.1f}x",
                         "metric": _headline(r["summary"])})
        comps = [[it["completion"] for it in r["items"]] for _, r in res]
        ratio = res[0][0] / res[-1][0]
        out[name] = {"ratio": ratio, "identical_completions": all(c == comps[0] for c in comps)}
    print(f"# bench probes: {spec} ({info.get('dtype')}), greedy, per-probe stop conditions")
    print(_table(rows))
    for name, o in out.items():
        print(f"{name}: the default batched path is {o['ratio']:.1f}x faster than one at a time (target >= 3x: "
              f"{'met' if o['ratio'] >= 3 else 'NOT met'}); identical completions in all modes: "
              f"{o['identical_completions']} (bf16 results can differ with batch composition; fp32 match)")
    return out


def speed_table(model, tokenizer, batch_sizes=(1, 8), new_tokens: int = 32) -> list[dict[str, Any]]:
    """Measured tokens/s of the loaded model at each batch size (greedy, exactly ``new_tokens``)."""
    from .generate import throughput
    from .models import model_info

    throughput(model, tokenizer, BENCH_PROMPTS[:2], batch_size=2, new_tokens=4)  # warm-up
    rows = []
    for bs in batch_sizes:
        prompts = (BENCH_PROMPTS * ((bs + 7) // 8))[:bs]
        st = throughput(model, tokenizer, prompts, batch_size=bs, new_tokens=new_tokens)
        rows.append({"batch": bs, "dtype": model_info(model).get("dtype", str(model.dtype)),
                     "new_tokens": st.new_tokens, "seconds": round(st.seconds, 2),
                     "tokens_per_s": round(st.tokens_per_s, 1),
                     "ms_per_step": round(1000 * st.seconds / new_tokens, 1)})
    return rows
