"""The GPU path as far as it runs on CPU: memory plans, profiles' TRL/PEFT configs, KV cache, LoRA."""

import json

import pytest

from llamalab import anatomy, config, memory
from llamalab.generate import enable_kv_cache, generate


def _shape(name):
    m = anatomy.meta_model(**anatomy.LLAMA1_CONFIGS[name])
    return memory.Shape.from_config(m.config, sum(p.numel() for p in m.parameters()))


def test_lora_parameter_count_matches_peft(tiny):
    from peft import LoraConfig, get_peft_model

    model, _ = tiny
    shape = memory.Shape.from_config(model.config, sum(p.numel() for p in model.parameters()))
    import copy

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=8, target_modules=list(memory.LORA_TARGETS)))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert memory.lora_params(shape, 8) == trainable


def test_memory_plan_for_llama_sizes():
    s7, s65 = _shape("LLaMA-7B"), _shape("LLaMA-65B")
    sft7 = memory.stage_plan(s7, "sft", weights="bfloat16", batch=8, seq=512)
    assert 12 < sft7["weights"] < 13 and sft7["fits A100 40GB"]
    ppo_full = memory.stage_plan(s7, "ppo", weights="bfloat16", value="full")
    ppo_lora = memory.stage_plan(s7, "ppo", weights="bfloat16", value="lora")
    assert ppo_full["total"] > ppo_lora["total"] + 50  # full value training costs ~84 GiB of state
    assert not ppo_full["fits A100 80GB"] and ppo_lora["fits A100 80GB"]
    assert not memory.stage_plan(s65, "sft", weights="bfloat16")["fits A100 80GB"]
    assert memory.stage_plan(s65, "sft", weights="4bit", batch=1, seq=512)["fits A100 80GB"]
    no_ckpt = memory.stage_plan(s7, "sft", batch=8, seq=512, checkpointing=False)
    assert no_ckpt["activations"] > 5 * sft7["activations"]


@pytest.mark.parametrize("name", ["smoke", "cpu", "a100"])
def test_profile_training_sections_build_trl_and_peft_configs(name, tmp_path):
    from peft import LoraConfig
    from trl import RewardConfig, RLOOConfig, SFTConfig
    from trl.experimental.ppo import PPOConfig

    from llamalab.train import common

    prof = config.load_profile(name)
    assert isinstance(common.lora_config(prof), LoraConfig)
    for section, cls in (("sft", SFTConfig), ("reward", RewardConfig), ("ppo", PPOConfig), ("rloo", RLOOConfig)):
        values = {k: v for k, v in common.section(prof, section).items() if k not in ("bf16",)}
        cfg = common.build_dataclass(cls, values, prof, section, output_dir=str(tmp_path), use_cpu=True,
                                     report_to=[])
        assert cfg.seed == 0, (name, section)
        if name != "a100" and section != "rloo":  # TRL's default recomputes activations: only time on a CPU
            assert cfg.gradient_checkpointing is False, (name, section)
    if name != "a100":
        assert not any(row["grad ckpt"] for row in memory.profile_plan(prof, _shape("LLaMA-7B")))


@pytest.mark.parametrize("name", ["smoke", "cpu", "a100"])
def test_profile_reward_pairs_are_what_its_data_section_says(name):
    """Each shipped profile's reward data options fit the data set: the training budget is kept, and
    as many own-mistake and fixed-reply pairs as it asks for take their places."""
    from llamalab import paths
    from llamalab.train.reward import DEFAULT_DATA, FIXED_REPLIES, execution_options, load_pair_splits
    from llamalab.trainsets import load_preferences

    prof = config.load_profile(name)
    lim = prof.extra["data"]
    plain, evals = load_pair_splits(prof)
    n_own, _ = execution_options(prof, len(plain))
    own = [{"prompt": [{"role": "user", "content": f"own question {i}"}],
            "chosen": [{"role": "assistant", "content": f"SELECT {i}"}],
            "rejected": [{"role": "assistant", "content": f"SELECT wrong_{i}"}]} for i in range(n_own + 5)]
    train, evals2 = load_pair_splits(prof, own=own)
    assert evals2 == evals and len(evals) == (lim.get("pairs_eval") or len(evals))
    assert len(train) == len(plain) == (lim.get("pairs_train") or len(plain))
    asked_fixed = lim.get("fixed_reply_pairs") or 0
    data_set = {json.dumps({k: r[k] for k in ("prompt", "chosen", "rejected")})
                for r in load_preferences(paths.data_dir() / DEFAULT_DATA)}

    def fixed_reply(r):  # the data set's clickbait pairs reject "yes" or "no" too
        return r["rejected"][-1]["content"] in FIXED_REPLIES and json.dumps(r) not in data_set

    assert sum(map(fixed_reply, train)) == asked_fixed
    assert sum(r["rejected"][-1]["content"].startswith("SELECT wrong_") for r in train) == n_own
    if name != "smoke":  # the two fixes for the reward model are on wherever a real run trains one
        assert n_own >= 100 and asked_fixed >= 64


def test_a100_profile_is_the_gpu_path():
    prof = config.load_profile("a100")
    assert "llama" in prof.model.spec.lower() and prof.model.dtype == "bfloat16"
    assert prof.model.attn_implementation == "sdpa"
    for stage in ("sft", "reward", "ppo", "rloo"):
        assert prof.extra[stage]["bf16"] is True and prof.extra[stage]["gradient_checkpointing"] is True
    assert prof.extra["rl"]["value"] == "lora"
    plan = memory.profile_plan(prof, _shape("LLaMA-7B"))
    assert all(row["fits A100 80GB"] for row in plan)
    assert [row["fits A100 40GB"] for row in plan] == [True, True, False]  # three bf16 7B models in PPO
    prof.extra["rl"]["critic_quantization"] = "4bit"
    plan40 = memory.profile_plan(prof, _shape("LLaMA-7B"))
    assert all(row["fits A100 40GB"] for row in plan40)
    assert plan40[2]["reward model weights"] < plan[2]["reward model weights"] / 3
    assert "4bit" in plan40[2]["precision"] and plan40[:2] == plan[:2]


def test_rl_options_are_checked(tmp_path):
    import yaml

    from llamalab.config import ConfigError
    from llamalab.models import ModelError, quantization_config
    from llamalab.train.ppo import rl_options

    base = (config.paths.configs_dir() / "smoke.yaml").read_text()
    for rl, msg in [({"critic_quantization": "4bit", "value": "full"}, "needs rl.value: lora"),
                    ({"critic_quantization": "3bit", "value": "lora"}, "rl.critic_quantization: '3bit'"),
                    ({"value": "half"}, "rl.value"), ({"valu": "lora"}, "rl.valu: unknown key"),
                    ({"kl_target": 0}, "rl.kl_target: expected null or a KL in nats > 0, got 0"),
                    ({"kl_target": "6"}, "rl.kl_target: .* got '6'"),
                    ({"kl_target": 6, "kl_horizon": 0.5}, "rl.kl_horizon: expected a whole number .* got 0.5"),
                    ({"kl_horizon": 100}, "rl.kl_horizon: 100 is the adaptive KL controller's"),
                    ({"kl_target": 6, "kl_coef_min": 0}, "rl.kl_coef_min: expected null or a coefficient > 0, got 0"),
                    ({"kl_target": 6, "kl_coef_min": True}, "rl.kl_coef_min: .* got True"),
                    ({"kl_coef_min": 0.1}, "rl.kl_coef_min: 0.1 is a floor .* rl.kl_target switches on"),
                    ({"kl_target": 6, "kl_coef_min": 0.5}, r"rl.kl_coef_min: 0.5 is above .* \(ppo.kl_coef: 0.05\)")]:
        path = tmp_path / "p.yaml"
        path.write_text(base + "\n" + yaml.safe_dump({"rl": rl}))
        with pytest.raises(ConfigError, match=msg) as info:
            rl_options(config.load_profile(path))
        assert str(path) in str(info.value)
    assert rl_options(config.load_profile("a100")) == {"value": "lora", "critic_quantization": None, "tasks": None,
                                                          "value_warmup_updates": 0, "reward_baseline": None,
                                                          "kl_target": None, "kl_horizon": 10000,
                                                          "kl_coef_min": None}
    path.write_text(base + "\n" + yaml.safe_dump({"rl": {"kl_target": 6, "kl_coef_min": 0.05}}))  # the start: allowed
    assert rl_options(config.load_profile(path))["kl_coef_min"] == 0.05
    with pytest.raises(ModelError, match="needs a CUDA GPU"):
        quantization_config("4bit", "cpu")


def test_quantization_needs_cuda():
    from llamalab.models import ModelError, load_model

    with pytest.raises(ModelError, match="needs a CUDA GPU"):
        load_model("default", quantization="4bit", device="cpu", verbose=False)


def test_kv_cache_is_back_on_for_generation_after_gradient_checkpointing(tiny):
    model, tok = tiny
    model.gradient_checkpointing_enable()
    model.config.use_cache = False
    try:
        enable_kv_cache(model)
        assert model.config.use_cache is True
        model.config.use_cache = False
        out = generate(model, tok, ["Clickbait: yes"], max_new_tokens=4, progress=False)
        assert model.config.use_cache is True and isinstance(out[0], str)
    finally:
        model.gradient_checkpointing_disable()
        model.eval()


def test_value_model_with_lora_freezes_the_base(tiny):
    import copy

    import torch
    from transformers import LlamaForSequenceClassification

    from llamalab.train.ppo import value_with_lora

    model, _ = tiny
    cfg = copy.deepcopy(model.config)
    cfg.num_labels = 1
    value = LlamaForSequenceClassification(cfg)
    prof = config.load_profile("a100")
    value_with_lora(prof, value)
    trainable = {n for n, p in value.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and "score.weight" in trainable
    assert not any(n.endswith("q_proj.base_layer.weight") or n.endswith("embed_tokens.weight") for n in trainable)
    out = value(input_ids=torch.tensor([[1, 2, 3]]))
    assert out.logits.shape == (1, 1)


def test_value_model_keeps_its_trained_weights_in_fp32_when_the_base_is_bf16(tiny):
    """On a GPU the critic loads in bf16; PEFT's injection would give its LoRA bf16 too, where AdamW's
    steps at the a100 profile's learning rate round away. The trained weights stay fp32, the base bf16."""
    import copy

    import torch
    from transformers import LlamaForSequenceClassification
    from trl.experimental.utils import get_reward

    from llamalab.train.ppo import value_with_lora

    model, _ = tiny
    cfg = copy.deepcopy(model.config)
    cfg.num_labels = 1
    value = LlamaForSequenceClassification(cfg).to(torch.bfloat16)
    prof = config.load_profile("a100")
    value_with_lora(prof, value)
    trainable = {n: p for n, p in value.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any(n.startswith("score.") for n in trainable)
    assert {p.dtype for p in trainable.values()} == {torch.float32}
    assert {p.dtype for p in value.parameters() if not p.requires_grad} == {torch.bfloat16}
    with torch.no_grad():
        value.score.weight.fill_(0.5)  # bf16 spacing at 0.5 is 2**-8: a 5e-5 step would round back to 0.5
    opt = torch.optim.AdamW(list(trainable.values()), lr=prof.extra["ppo"]["learning_rate"], weight_decay=0.0)
    value(input_ids=torch.tensor([[1, 2, 3]])).logits.float().sum().backward()
    opt.step()
    assert (value.score.weight != 0.5).all()
    ids = torch.tensor([[1, 2, 3, 4]])  # TRL's PPO reads the critic this way: backbone, then .score
    _, scores, _ = get_reward(value, ids, cfg.pad_token_id if cfg.pad_token_id is not None else 0, 2)
    assert scores.shape == (1,) and torch.isfinite(scores).all()


def test_gpu_bench_code_path_runs_on_a_tiny_config(capsys, tmp_path):
    """`bench gpu` needs CUDA for its figures; --tiny runs every stage of it on CPU."""
    from llamalab.gpubench import bench_gpu

    out = tmp_path / "bench.json"
    report = bench_gpu(tiny=True, smoke_chain=False, json_path=out)
    stages = report["stages"]
    assert {k: v["error"] for k, v in stages.items() if "error" in v} == {}
    assert stages["lora_sft"]["tokens_per_s"] > 0 and stages["lora_reward"]["tokens_per_s"] > 0
    assert stages["generation"]["batch_32_tokens_per_s"] > 0
    assert stages["ppo_update"]["episodes"] == 2 and stages["ppo_update_trl_as_is"]["episodes"] == 2
    assert all(isinstance(stages[s]["plan_gib"], float) for s in ("lora_sft", "lora_reward", "ppo_update"))
    assert json.loads(out.read_text())["stages"]["ppo_update"]["episodes"] == 2
    printed = capsys.readouterr().out
    assert "FLOPs per trained token used for MFU: 4*N + 6*L*s*h" in printed


def test_gpu_bench_reports_a_failing_stage_and_goes_on(capsys):
    """One run on a borrowed GPU must bring back every figure it can: a stage's error is recorded."""
    from llamalab.gpubench import _run_stage

    def broken():
        raise RuntimeError("CUDA out of memory (simulated)")

    report = {"stages": {}}
    _run_stage(report, "stages", "broken", broken)
    _run_stage(report, "stages", "fine", lambda: {"tokens_per_s": 1})
    assert report["stages"]["broken"]["error"] == "RuntimeError: CUDA out of memory (simulated)"
    assert report["stages"]["fine"]["tokens_per_s"] == 1
    assert "simulated" in capsys.readouterr().err


def test_gpu_bench_refuses_without_cuda_unless_tiny():
    import torch

    from llamalab.gpubench import bench_gpu

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        bench_gpu(tiny=False)


def test_bench_train_rate_leaves_the_first_step_out():
    """`bench train`'s tokens/s is steps 2..N: TRL's cumulative num_tokens minus step 1's, over the
    later steps' seconds; the first step (first allocations in the process) does not count."""
    from llamalab.bench import _steady_tokens_per_s

    history = [{"loss": 1.0, "num_tokens": 100.0}, {"loss": 0.9, "num_tokens": 300.0},
               {"loss": 0.8, "num_tokens": 600.0}, {"train_runtime": 9.0}]
    rate, tokens, wall = _steady_tokens_per_s(history, [50.0, 2.0, 3.0])
    assert (tokens, wall) == (500, 5.0)
    assert rate == pytest.approx(100.0)
    with pytest.raises(ValueError, match="at least 2 logged steps"):
        _steady_tokens_per_s(history[:1], [50.0])
