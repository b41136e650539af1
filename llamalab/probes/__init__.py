"""The three probes of the 2023 first look at LLaMA, with scores: jokes, clickbait, sql.

Each probe module (``jokes``, ``clickbait``, ``sql``) provides::

    NAME, DEFAULT_DATA (relative to data/), MAX_NEW_TOKENS
    load_items(path) -> list[dict]          # validated; errors name file:line:field
    build_prompt(item) -> str                # the original plain-text prompt
    find_end(text) -> int | None             # where the answer ends (stop condition)
    score_item(item, completion) -> dict     # parsed answer + score fields
    summarize(scored_items) -> dict          # the metrics

``run_probe`` ties them to a model (or to given completions) and returns the results contract of
design.md section 2: ``{"probe", "model", "adapter", "profile", "summary", "items"}``.
"""

from __future__ import annotations

import importlib
import json
import random
import re
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from .. import paths
from ..data import DataError, Field, read_jsonl

PROBES = ("jokes", "clickbait", "sql")


def get_probe(name: str) -> ModuleType:
    if name not in PROBES:
        raise ValueError(f"unknown probe {name!r} (probes: {', '.join(PROBES)})")
    return importlib.import_module(f"{__name__}.{name}")


def default_data(name: str) -> Path:
    return paths.data_dir() / get_probe(name).DEFAULT_DATA


def select(items: list[dict], limit: int | None, seed: int = 0) -> list[dict]:
    """A deterministic sample of ``limit`` items (seeded shuffle, then original order), or all."""
    if not limit or limit >= len(items):
        return list(items)
    keep = set(random.Random(seed).sample(range(len(items)), limit))
    return [it for i, it in enumerate(items) if i in keep]


def read_predictions(path: str | Path, items: list[dict]) -> dict[str, str]:
    """``{"id", "completion"}`` JSONL -> {id: completion}; ids must exist in the probe data."""
    rows = read_jsonl(path, [Field("id", (str, int)), Field("completion", str, nonempty=False)], unique="id")
    known = {str(it["id"]) for it in items}
    out = {}
    with Path(path).open(encoding="utf-8") as fh:
        lines = [n for n, t in enumerate(fh, start=1) if t.strip()]
    for lineno, row in zip(lines, rows, strict=True):
        key = str(row["id"])
        if key not in known:
            raise DataError(path, lineno, f"id {key!r} is not in the probe data", "id")
        out[key] = row["completion"]
    return out


def _public(item: dict) -> dict:
    return {k: v for k, v in item.items() if not k.startswith("_")}


def run_probe(
    name: str,
    model=None,
    tokenizer=None,
    *,
    data: str | Path | None = None,
    limit: int | None = None,
    chat: bool = False,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    predictions: str | Path | None = None,
    model_spec: str | None = None,
    adapter: str | None = None,
    profile: str | None = None,
    progress: bool = True,
    reuse_prefix: bool = True,
    reuse_dir: str | Path | None = None,
    weights_digest: str | None = None,
) -> dict[str, Any]:
    """Run one probe: generate (or read ``predictions``), parse, score, summarize.

    A generated result records ``key`` (``result_key``: everything its completions depend on). With
    ``reuse_dir``, a result of this probe saved there under the same key is returned instead of
    generating again (``reused_from`` names its file; ``model``/``adapter``/``profile`` are this call's).
    ``weights_digest``: ``model_digest(model)`` where the caller already computed it (one per loaded
    model, not one per probe); None computes it here."""
    from ..generate import GenStats, format_prompt, generate

    mod = get_probe(name)
    data_path = Path(data) if data else default_data(name)
    items = mod.load_items(data_path)
    key = None
    if not predictions and model is not None and tokenizer is not None:
        try:
            key = result_key(name, model, tokenizer, data_path=data_path, limit=limit, chat=chat,
                             batch_size=batch_size, max_new_tokens=max_new_tokens or mod.MAX_NEW_TOKENS,
                             reuse_prefix=reuse_prefix, weights_digest=weights_digest)
        except Exception as exc:  # weights it cannot read back (offloaded to "meta", a quantized layout)
            if progress:
                print(f"probe {name}: no result key, so no reuse ({type(exc).__name__}: {exc})")
        if key and reuse_dir is not None and (found := find_result(reuse_dir, name, key)) is not None:
            res = load_result(found)
            res.pop("path", None)
            res.update({"model": model_spec or getattr(model, "llamalab_info", {}).get("spec"),
                        "adapter": str(adapter) if adapter else getattr(model, "llamalab_info", {}).get("adapter"),
                        "profile": profile, "reused_from": str(found)})
            if progress:
                print(f"probe {name}: reusing {found} (same model weights, tokenizer, data, settings and code)")
            return res
    if predictions:
        preds = read_predictions(predictions, items)
        items = [it for it in items if str(it["id"]) in preds]
        items = select(items, limit)
        prompts = [mod.build_prompt(it) for it in items]
        completions = [preds[str(it["id"])] for it in items]
        gen_info: dict[str, Any] = {"source": f"predictions file {predictions}"}
    else:
        if model is None or tokenizer is None:
            raise ValueError("run_probe needs a model and tokenizer, or predictions=")
        items = select(items, limit)
        raw = [mod.build_prompt(it) for it in items]
        prompts = [format_prompt(tokenizer, p, chat) for p in raw]
        stats = GenStats()
        completions = generate(model, tokenizer, raw, chat=chat, batch_size=batch_size,
                               max_new_tokens=max_new_tokens or mod.MAX_NEW_TOKENS, find_end=mod.find_end,
                               progress=progress, desc=f"probe {name}", stats=stats,
                               reuse_prefix=reuse_prefix)
        gen_info = {"decoding": "greedy", "batch_size": batch_size, "reuse_prefix": reuse_prefix,
                    "max_new_tokens": max_new_tokens or mod.MAX_NEW_TOKENS,
                    "seconds": round(stats.seconds, 2), "new_tokens": stats.new_tokens,
                    "items_per_s": round(len(items) / stats.seconds, 3) if stats.seconds else None,
                    "dtype": getattr(model, "llamalab_info", {}).get("dtype")}
    t0 = time.perf_counter()
    scored = [
        {**_public(it), "prompt": p, **({"prompt_content": mod.build_prompt(it)} if chat else {}),
         "completion": c, **mod.score_item(it, c)}
        for it, p, c in zip(items, prompts, completions, strict=True)
    ]
    summary = mod.summarize(scored)
    return {
        "probe": name,
        "model": model_spec or getattr(model, "llamalab_info", {}).get("spec"),
        "adapter": str(adapter) if adapter else getattr(model, "llamalab_info", {}).get("adapter"),
        "profile": profile,
        "prompt_format": "chat" if chat else "plain",
        "data": str(data_path),
        "key": key,
        "generation": gen_info,
        "scoring_seconds": round(time.perf_counter() - t0, 3),
        "summary": summary,
        "items": scored,
    }


def model_digest(model) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes): equal digests, equal weights."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for pname, t in sorted(model.state_dict().items()):
        if not isinstance(t, torch.Tensor):
            h.update(f"{pname}={t!r}".encode())
            continue
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{pname}|{t.dtype}|{t.numel()}|".encode())
        h.update(memoryview(t.view(torch.uint8).numpy()))
    return h.hexdigest()


def safe_model_digest(model) -> str | None:
    """``model_digest``, or None where the weights cannot be read back (offloaded to "meta", a
    quantized layout): run_probe then tries again itself and, failing, keeps no key."""
    try:
        return model_digest(model)
    except Exception:  # noqa: BLE001 - any failure only means "no reuse"
        return None


def config_text(model) -> str:
    """The model's configuration and generation configuration (where generation reads its stop
    tokens), without path-like and version fields, and its attention implementation."""
    parts = []
    for cfg in (getattr(model, "config", None), getattr(model, "generation_config", None)):
        d = cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else {}
        parts.append({k: v for k, v in d.items()
                      if not k.startswith("_") and k not in ("transformers_version", "name_or_path")})
    parts.append(str(getattr(getattr(model, "config", None), "_attn_implementation", None)))
    return json.dumps(parts, sort_keys=True, default=str)


def tokenizer_digest(tokenizer) -> str:
    """sha256 of what turns text into ids here: the tokenizer's full definition, chat template,
    special tokens and padding side."""
    import hashlib

    backend = getattr(tokenizer, "backend_tokenizer", None)
    parts = [backend.to_str() if backend is not None else repr(tokenizer),
             str(getattr(tokenizer, "chat_template", None)), repr(getattr(tokenizer, "special_tokens_map", None)),
             str(getattr(tokenizer, "pad_token_id", None)), str(getattr(tokenizer, "padding_side", None))]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def code_digest(name: str) -> str:
    """sha256 of the source that builds, generates and scores this probe (the probe module, this
    package's runner, generate.py, sqlbox.py)."""
    import hashlib

    from .. import generate as _generate
    from .. import sqlbox as _sqlbox

    h = hashlib.sha256()
    for mod in (get_probe(name), importlib.import_module(__name__), _generate, _sqlbox):
        h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()


def result_key(name: str, model, tokenizer, *, data_path: str | Path, limit: int | None, chat: bool,
               batch_size: int, max_new_tokens: int, reuse_prefix: bool, weights_digest: str | None = None) -> str:
    """A digest of everything a probe's greedy completions and scores depend on: the weights, the
    model's configuration, the tokenizer, the data file's bytes, the settings, the code and the
    library versions. Equal keys = the same result (up to the device's arithmetic), so it can be
    reused instead of generated again. ``weights_digest``: ``model_digest(model)``, if already known."""
    import hashlib

    import torch
    import transformers

    parts = {"probe": name, "weights": weights_digest or model_digest(model), "config": config_text(model),
             "tokenizer": tokenizer_digest(tokenizer),
             "data": hashlib.sha256(Path(data_path).read_bytes()).hexdigest(), "limit": limit, "chat": bool(chat),
             "batch_size": batch_size, "max_new_tokens": max_new_tokens, "reuse_prefix": bool(reuse_prefix),
             "device": str(getattr(model, "device", "")), "code": code_digest(name),
             "versions": [torch.__version__, transformers.__version__]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def find_result(directory: str | Path, name: str, key: str) -> Path | None:
    """A saved result of probe ``name`` in ``directory`` with this ``key`` (unreadable files are skipped)."""
    if not key:
        return None
    for path in sorted(Path(directory).glob(f"{name}__*.json")):
        try:
            res = load_result(path)
        except (OSError, ValueError):
            continue
        if isinstance(res, dict) and res.get("probe") == name and res.get("key") == key and res.get("items"):
            return path
    return None


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "model"


def result_path(profile: str, name: str, model_spec: str, adapter: str | None = None) -> Path:
    tag = slug(model_spec) + (f"+{slug(Path(adapter).name)}" if adapter else "")
    return paths.stage_dir(profile, "probes") / f"{name}__{tag}.json"


def save_result(result: dict, path: str | Path) -> Path:
    """Write a results JSON atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)
    return path


def load_result(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def run_for_profile(name: str, profile, models_list: list[str] | None = None, *, progress: bool = True,
                    save: bool = True, reuse: bool = True) -> list[dict]:
    """Run one probe on each of the profile's models (``probes.models``); save each results JSON.

    Models are loaded one at a time and released, so a 7B model and the default fit one GPU in turn.
    ``reuse``: a result saved under runs/<profile>/probes/ with the same ``result_key`` is returned
    instead of generating again.
    """
    import gc

    from .. import models as _models

    results = []
    for spec in models_list or profile.probes.models:
        dtype = profile.probe_dtype(spec)
        quant = profile.model.quantization if spec == profile.model.spec else None
        model, tok = _models.load_model(spec, dtype=dtype, quantization=quant)
        res = run_probe(name, model, tok, limit=profile.probes.limit.get(name), chat=profile.probes.chat,
                        batch_size=profile.generation.batch_size, model_spec=spec, profile=profile.name,
                        progress=progress, reuse_dir=paths.stage_dir(profile.name, "probes") if reuse else None)
        if save:
            res["path"] = str(save_result(res, result_path(profile.name, name, spec)))
        results.append(res)
        del model, tok
        gc.collect()
    return results


def summary_table(results: list[dict], keys: list[str] | None = None):
    """A pandas DataFrame: one row per result (model), the summary's scalar metrics as columns."""
    import pandas as pd

    rows = []
    for r in results:
        s = {k: v for k, v in r["summary"].items() if isinstance(v, (int, float, str)) or v is None}
        if keys:
            s = {k: s.get(k) for k in keys}
        label = r["model"] + (f" + {Path(r['adapter']).name}" if r.get("adapter") else "")
        rows.append({"model": label, **s})
    return pd.DataFrame(rows).set_index("model")
