"""Training stages: bad input writes nothing, same seed gives the same metrics, --resume continues."""

import json
from pathlib import Path

import pytest

from llamalab import config
from llamalab.data import DataError

ROOT = Path(__file__).resolve().parents[1]


def _tiny_profile(tmp_path, extra: str = "") -> config.Profile:
    text = (ROOT / "configs" / "smoke.yaml").read_text().replace("spec: default", "spec: tiny")
    text = text.replace("dtype: auto", "dtype: float32")
    p = tmp_path / "tinyprof.yaml"
    p.write_text(text + extra)
    return config.load_profile(p)


@pytest.fixture
def runs(monkeypatch, tmp_path):
    monkeypatch.setenv("LLAMALAB_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_bad_sft_data_fails_before_anything_is_written(tmp_path, runs):
    from llamalab.train.sft import train_sft

    prof = _tiny_profile(tmp_path)
    bad = _write(tmp_path / "sft.jsonl", [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}]},
    ])
    with pytest.raises(DataError, match=r"sft.jsonl:2: field 'messages'"):
        train_sft(prof, data=bad)
    assert not (runs / prof.name / "sft").exists()


def test_bad_preferences_fail_before_anything_is_written(tmp_path, runs):
    from llamalab.train.reward import train_reward

    prof = _tiny_profile(tmp_path)
    merged = runs / prof.name / "sft" / "merged"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    bad = _write(tmp_path / "prefs.jsonl", [
        {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}]},
    ])
    with pytest.raises(DataError, match=r"prefs.jsonl:1: field 'rejected'"):
        train_reward(prof, data=bad)
    assert not (runs / prof.name / "reward").exists()


def test_reward_stage_says_what_to_run_first(tmp_path, runs):
    from llamalab.train.common import StageMissing
    from llamalab.train.reward import train_reward

    prof = _tiny_profile(tmp_path)
    with pytest.raises(StageMissing, match="notebook 05_sft_lora"):
        train_reward(prof)


def test_unknown_trl_key_names_profile_file_and_key(tmp_path, runs):
    from llamalab.train.sft import train_sft

    prof = _tiny_profile(tmp_path)
    prof.extra["sft"]["learning_rat"] = 1e-3
    with pytest.raises(config.ConfigError, match=r"tinyprof.yaml: sft.learning_rat"):
        train_sft(prof)


@pytest.mark.parametrize("stage", ["ppo", "rloo"])
def test_a_bad_rl_setting_fails_before_the_last_run_is_touched(tmp_path, runs, stage):
    """A misspelled --set (or YAML) key must not delete the previous run's metrics first."""
    from llamalab.train.ppo import train_ppo
    from llamalab.train.rloo import train_rloo

    prof = _tiny_profile(tmp_path)
    for dep in ("sft", "reward"):  # the stages RL starts from (never loaded: the config fails first)
        (runs / prof.name / dep / "merged").mkdir(parents=True)
        (runs / prof.name / dep / "merged" / "config.json").write_text("{}")
    out = runs / prof.name / stage
    out.mkdir(parents=True)
    kept = {name: f"{name} of the last run" for name in ("metrics.jsonl", "samples.jsonl")}
    for name, text in kept.items():
        (out / name).write_text(text)
    bad = config.apply_overrides(prof, [f"{stage}.learning_rat=1e-3"])
    with pytest.raises(config.ConfigError, match=rf"^--set: {stage}.learning_rat: unknown key"):
        (train_ppo if stage == "ppo" else train_rloo)(bad, progress=False)
    assert {f.name: f.read_text() for f in out.iterdir()} == kept


def test_rloo_says_which_ppo_only_rl_settings_it_ignores(tmp_path, runs, monkeypatch, capsys):
    """rl.reward_baseline and rl.value_warmup_updates change PPO only. One profile feeds both (notebook 07),
    so RLOO must not refuse them, but it says that it ignores them, naming the file and key, and says
    nothing when they are off."""
    from llamalab.train import rloo

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop  # the prompts are read right after the check: nothing past it is needed here

    monkeypatch.setattr(rloo, "load_prompts", stop)
    prof = _tiny_profile(tmp_path)
    for dep in ("sft", "reward"):
        (runs / prof.name / dep / "merged").mkdir(parents=True)
        (runs / prof.name / dep / "merged" / "config.json").write_text("{}")
    said = {}
    for label, sets in {"off": ["rl.reward_baseline=null", "rl.value_warmup_updates=0"],
                        "on": ["rl.reward_baseline=task", "rl.value_warmup_updates=3"]}.items():
        with pytest.raises(Stop):
            rloo.train_rloo(config.apply_overrides(prof, sets), progress=False)
        said[label] = [line for line in capsys.readouterr().out.splitlines() if "PPO only" in line]
    assert said["off"] == []
    assert len(said["on"]) == 2
    assert said["on"][0].startswith(f"{prof.path}: rl.value_warmup_updates: 3 is read by PPO only; RLOO ignores it")
    assert said["on"][1].startswith(f"{prof.path}: rl.reward_baseline: 'task' is read by PPO only")


def test_rl_tasks_choose_the_training_prompts_and_leave_held_out_whole(tmp_path, runs):
    from llamalab.train.ppo import load_prompts

    prof = _tiny_profile(tmp_path)
    prof.extra["data"] = {"ppo_train": None, "ppo_heldout": None}
    every, held = load_prompts(prof), load_prompts(prof, heldout=True)
    prof.extra["rl"] = {"tasks": ["sql", "joke"]}
    some = load_prompts(prof)
    assert {r["task"] for r in some} == {"sql", "joke"} and {r["task"] for r in every} > {"sql", "joke"}
    assert some == [r for r in every if r["task"] in ("sql", "joke")]
    assert load_prompts(prof, heldout=True) == held
    prof.extra["rl"]["tasks"] = ["sql", "poems"]
    with pytest.raises(config.ConfigError, match=r"tinyprof.yaml: rl.tasks: .*'poems'"):
        load_prompts(prof)


def test_fixed_reply_pairs_take_the_place_of_the_last_training_pairs(tmp_path, runs):
    from llamalab.train.reward import FIXED_REPLIES, load_pair_splits

    prof = _tiny_profile(tmp_path)
    prof.extra["data"] = {"pairs_train": 40, "pairs_eval": 8}
    plain, evals = load_pair_splits(prof)
    prof.extra["data"]["fixed_reply_pairs"] = 10
    mixed, evals2 = load_pair_splits(prof)
    assert len(mixed) == 40 and evals2 == evals  # same budget; the eval pairs untouched

    def said(turns):
        return turns[-1]["content"]

    added = [r for r in mixed if said(r["rejected"]) in FIXED_REPLIES and r not in plain]
    kept = [r for r in mixed if r not in added]
    assert len(added) == 10 and sorted(map(json.dumps, kept)) == sorted(map(json.dumps, plain[:30]))
    by_prompt = {json.dumps(r["prompt"]): r for r in plain[:30]}
    for r in added:  # a real answer from the kept pairs, never itself a fixed reply, above a fixed one
        source = by_prompt[json.dumps(r["prompt"])]
        assert r["chosen"] == source["chosen"] and said(r["chosen"]) not in FIXED_REPLIES
    assert len({json.dumps(r["prompt"]) for r in added}) == 10  # drawn without replacement
    assert mixed != plain[:30] + added  # shuffled in, not appended where max_steps may never reach
    assert load_pair_splits(prof) == (mixed, evals)  # seeded
    for bad in (40, 0, "ten", True):
        prof.extra["data"]["fixed_reply_pairs"] = bad
        if bad == 0:
            assert load_pair_splits(prof)[0] == plain  # 0 = off, as null
            continue
        with pytest.raises(config.ConfigError, match=r"tinyprof.yaml: data.fixed_reply_pairs: .* between 1 and 39"):
            load_pair_splits(prof)
    prof.extra["data"]["fixed_reply_pairs"] = 39  # one pair kept: too few real answers to pair with
    with pytest.raises(config.ConfigError, match=r"tinyprof.yaml: data.fixed_reply_pairs: 39 fixed-reply pairs asked "
                                                 r"for, but only [01] rows"):
        load_pair_splits(prof)


def test_execution_pairs_take_the_place_of_the_first_training_pairs(tmp_path, runs):
    from llamalab.train.reward import FIXED_REPLIES, load_pair_splits

    prof = _tiny_profile(tmp_path)
    prof.extra["data"] = {"pairs_train": 40, "pairs_eval": 8}
    plain, evals = load_pair_splits(prof)
    own = [{"prompt": [{"role": "user", "content": f"sql question {i}"}],
            "chosen": [{"role": "assistant", "content": f"SELECT {i} FROM events"}],
            "rejected": [{"role": "assistant", "content": f"SELECT wrong_{i} FROM events"}],
            "task": "sql", "schema": "events", "split": "train"} for i in range(30)]
    assert load_pair_splits(prof, own=own) == (plain, evals)  # not asked for: the data set's rows
    prof.extra["data"]["execution_pairs"] = 10
    assert load_pair_splits(prof) == (plain, evals)  # asked for, none sampled yet: the data set's rows
    mixed, evals2 = load_pair_splits(prof, own=own)
    assert evals2 == evals and len(mixed) == 40
    slim = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in own]
    drawn = mixed[:10]
    assert all(r in slim for r in drawn) and len({json.dumps(r) for r in drawn}) == 10
    assert mixed[10:] == plain[:30]  # the data set's first rows follow, the last ones give way
    assert drawn != slim[:10]  # a seeded draw, not the first sampled prompts
    assert load_pair_splits(prof, own=own)[0] == mixed
    few, _ = load_pair_splits(prof, own=own[:3])  # fewer made than asked for: the data set fills the budget
    assert len(few) == 40 and few[3:] == plain[:37]
    assert sorted(map(json.dumps, few[:3])) == sorted(map(json.dumps, slim[:3]))

    prof.extra["data"]["fixed_reply_pairs"] = 5  # the fixed replies take the place of the last rows, as before
    both, _ = load_pair_splits(prof, own=own)
    added = [r for r in both if r["rejected"][-1]["content"] in FIXED_REPLIES and r not in plain]
    assert len(both) == 40 and len(added) == 5
    assert sorted(map(json.dumps, [r for r in both if r not in added])) == sorted(
        map(json.dumps, drawn + plain[:25]))
    prof.extra["data"]["fixed_reply_pairs"] = 30  # 10 + 30 = every training pair
    with pytest.raises(config.ConfigError, match=r"tinyprof.yaml: data.fixed_reply_pairs: 30 .* between 1 and 29 "
                                                 r"\(the training pairs less data.execution_pairs = 10\)"):
        load_pair_splits(prof, own=own)
    prof.extra["data"]["fixed_reply_pairs"] = None
    for bad in (40, -1, "ten", True, 2.5):
        prof.extra["data"]["execution_pairs"] = bad
        with pytest.raises(config.ConfigError, match=r"tinyprof.yaml: data.execution_pairs: .* between 0 and 39"):
            load_pair_splits(prof, own=own)
    prof.extra["data"]["execution_pairs"] = 10
    for bad in (0, "2", True):
        prof.extra["data"]["execution_samples"] = bad
        with pytest.raises(config.ConfigError, match=r"tinyprof.yaml: data.execution_samples: .* at least 1"):
            load_pair_splits(prof, own=own)


def test_policy_pairs_join_the_execution_pairs_from_a_file(tmp_path, runs):
    """data.policy_pairs = m draws m pairs of data.policy_pairs_from (another policy's mistakes), leaving
    out pairs the SFT draw holds already, and shuffles them in with it at the head of the training rows;
    the budget stays data.pairs_train. Bad settings name the profile file and key."""
    from llamalab.train.reward import FIXED_REPLIES, load_pair_splits

    prof = _tiny_profile(tmp_path)
    prof.extra["data"] = {"pairs_train": 40, "pairs_eval": 8, "execution_pairs": 10}

    def pair(i, who):
        return {"prompt": [{"role": "user", "content": f"sql question {i}"}],
                "chosen": [{"role": "assistant", "content": f"SELECT {i} FROM events"}],
                "rejected": [{"role": "assistant", "content": f"SELECT {who}_{i} FROM events"}],
                "task": "sql", "schema": "events", "split": "train"}

    own = [pair(i, "sft") for i in range(30)]
    plain, _ = load_pair_splits(prof)
    sft_only, evals = load_pair_splits(prof, own=own)
    slim = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in own]
    sft_drawn = sft_only[:10]
    theirs = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in [pair(i, "ppo") for i in range(12)]]
    more = _write(tmp_path / "ppo_mistakes.jsonl", own + [pair(i, "ppo") for i in range(12)])  # the SFT ones too
    prof.extra["data"].update(policy_pairs=15, policy_pairs_from=str(more))
    mixed, evals2 = load_pair_splits(prof, own=own)
    assert evals2 == evals and len(mixed) == 40 and mixed[25:] == plain[:15]
    head = mixed[:25]
    assert len({json.dumps(r) for r in head}) == 25  # no pair twice: the SFT draw's are left out of the file's
    assert sorted(map(json.dumps, [r for r in head if r in sft_drawn])) == sorted(map(json.dumps, sft_drawn))
    from_file = [r for r in head if r not in sft_drawn]
    assert len(from_file) == 15 and all(r in slim or r in theirs for r in from_file)
    assert sum(r in theirs for r in from_file) >= 3  # a draw over the file, not its first rows
    assert head[:10] != sft_drawn  # shuffled together
    assert load_pair_splits(prof, own=own)[0] == mixed  # seeded
    prof.extra["data"]["fixed_reply_pairs"] = 14  # 10 + 15 + 14 = every training pair but one: still fits
    assert sum(r["rejected"][-1]["content"] in FIXED_REPLIES for r in load_pair_splits(prof, own=own)[0]) >= 14
    prof.extra["data"]["fixed_reply_pairs"] = 15
    with pytest.raises(config.ConfigError, match=r"tinyprof.yaml: data.fixed_reply_pairs: 15 .* between 1 and 14 \(the "
                                                 r"training pairs less data.execution_pairs = 10 \+ data.policy_pairs = 15\)"):
        load_pair_splits(prof, own=own)
    prof.extra["data"]["fixed_reply_pairs"] = None

    for key, value, message in (
            ("policy_pairs", 30, r"data.policy_pairs: 30 is not a whole number between 0 and 29"),
            ("policy_pairs", "15", r"data.policy_pairs: '15' is not a whole number"),
            ("policy_pairs", 0, r"data.policy_pairs_from: .*ppo_mistakes.jsonl is set but data.policy_pairs is 0"),
            ("policy_pairs_from", None, r"data.policy_pairs: 15 pairs, but data.policy_pairs_from names no file "
                                        r"\(write one with `python -m llamalab reward pairs --policy DIR --pairs-only"),
            ("policy_pairs_from", str(tmp_path / "nowhere.jsonl"), r"data.policy_pairs_from: .*nowhere.jsonl: no such file")):
        bad = dict(prof.extra["data"], **{key: value})
        prof.extra["data"], kept = bad, prof.extra["data"]
        with pytest.raises(config.ConfigError, match=r"tinyprof.yaml: " + message):
            load_pair_splits(prof, own=own)
        prof.extra["data"] = kept
    broken = _write(tmp_path / "broken.jsonl", [pair(0, "ppo"), {"prompt": "not a list"}])
    prof.extra["data"]["policy_pairs_from"] = str(broken)
    with pytest.raises(DataError, match=r"broken.jsonl:2: field .prompt.: expected list"):
        load_pair_splits(prof, own=own)


def test_reward_stage_samples_the_sft_models_own_sql_mistakes(tmp_path, runs):
    """With data.execution_pairs the reward stage samples the SFT model on the SQL training prompts, runs
    every query, and trains on the wrong ones rejected beside a right one; the file it trained on is kept,
    and a change to how they are sampled (the RL temperature) means the stage is not reused."""
    from llamalab.train.heldout import sql_correct
    from llamalab.train.ppo import load_prompts
    from llamalab.train.reward import OWN_PAIRS_FILE, train_reward
    from llamalab.train.sft import train_sft

    prof = _tiny_profile(tmp_path)
    prof.extra["data"].update(execution_pairs=3, execution_samples=1)
    train_sft(prof, progress=False)
    m = train_reward(prof, progress=False)
    own_file = runs / prof.name / "reward" / OWN_PAIRS_FILE
    own = [json.loads(line) for line in own_file.read_text().splitlines()]
    sql_rows = {json.dumps(r["prompt"]): r for r in load_prompts(prof) if r.get("task") == "sql"}
    assert m["execution_samples"] == len(sql_rows) > 0  # one sample per SQL training prompt
    assert m["execution_pairs_made"] == len(own) > 0 and m["execution_pairs_used"] == min(3, len(own))
    assert m["train_pairs"] == prof.extra["data"]["pairs_train"]
    for r in own:  # a random tiny model writes no right query: each rejected one returns the wrong rows
        item = sql_rows[json.dumps(r["prompt"])]
        assert r["chosen"][-1]["content"] == item["reference"]
        assert sql_correct([item], [r["rejected"][-1]["content"]]) == [False]
        assert sql_correct([item], [r["chosen"][-1]["content"]]) == [True]
    info = json.loads((runs / prof.name / "reward" / "run_info.json").read_text())
    assert info["own_mistakes"] == str(own_file)
    assert train_reward(prof, progress=False, retrain=False).get("reused") is True
    prof.extra["ppo"]["temperature"] = 1.3
    assert train_reward(prof, progress=False, retrain=False).get("reused") is not True


def test_reward_stage_trains_on_policy_pairs_and_follows_their_file(tmp_path, runs):
    """The reward stage with data.policy_pairs records the file it drew from, and a change to that file's
    pairs means the stage is not reused."""
    from llamalab.train.ppo import load_prompts
    from llamalab.train.reward import train_reward
    from llamalab.train.sft import train_sft

    prof = _tiny_profile(tmp_path)
    item = next(r for r in load_prompts(prof) if r.get("task") == "sql")
    rows = [{"prompt": item["prompt"], "chosen": [{"role": "assistant", "content": item["reference"]}],
             "rejected": [{"role": "assistant", "content": f"SELECT COUNT(DISTINCT user_id) FROM events LIMIT {i}"}],
             "task": "sql", "split": "train"} for i in range(4)]
    more = _write(tmp_path / "policy_mistakes.jsonl", rows)
    prof.extra["data"].update(policy_pairs=3, policy_pairs_from=str(more))
    train_sft(prof, progress=False)
    m = train_reward(prof, progress=False)
    assert (m["policy_pairs"], m["policy_pairs_in_file"], m["policy_pairs_from"]) == (3, 4, str(more.resolve()))
    assert m["train_pairs"] == prof.extra["data"]["pairs_train"]
    info = json.loads((runs / prof.name / "reward" / "run_info.json").read_text())
    assert info["policy_pairs_from"] == str(more.resolve())
    assert train_reward(prof, progress=False, retrain=False).get("reused") is True
    _write(more, rows[:3] + [dict(rows[3], rejected=[{"role": "assistant", "content": "SELECT 1"}])])
    assert train_reward(prof, progress=False, retrain=False).get("reused") is not True


def test_same_seed_gives_same_metrics(tmp_path, runs):
    from llamalab.train.sft import train_sft

    prof = _tiny_profile(tmp_path)
    prof.extra["data"].update(sft_train=16, sft_eval=8)
    prof.extra["sft"].update(max_steps=3, save_steps=100, max_length=256)
    a = train_sft(prof, progress=False)
    b = train_sft(prof, progress=False)
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
    assert a["eval_loss"] == pytest.approx(b["eval_loss"], rel=1e-6)
    losses = [h["loss"] for h in a["log_history"] if "loss" in h]
    assert len(losses) == 3 and losses[0] != losses[-1]  # it trained
    out = runs / prof.name / "sft"
    info = json.loads((out / "run_info.json").read_text())
    assert info["world_size"] == 1 and info["config"]["sft"]["seed"] == 0
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "merged" / "config.json").is_file()


def test_fingerprint_follows_the_inputs_each_stage_reads(tmp_path, runs):
    from llamalab.train.common import fingerprint

    prof = _tiny_profile(tmp_path)
    data = tmp_path / "d.jsonl"
    data.write_text("a\n")
    before = {s: fingerprint(prof, s, [data]) for s in ("sft", "reward", "ppo", "rloo")}
    prof.extra["rl"] = {"tasks": ["sql"]}  # read by online RL only
    after = {s: fingerprint(prof, s, [data]) for s in before}
    assert [before[s] == after[s] for s in before] == [True, True, False, False]
    prof.extra["lora"]["r"] = 4  # read by every stage
    assert all(fingerprint(prof, s, [data]) != after[s] for s in before)
    changed = fingerprint(prof, "sft", [data])
    data.write_text("b\n")  # the data's contents count, not only its name
    assert fingerprint(prof, "sft", [data]) != changed


def test_tuning_ppo_leaves_the_reward_model_and_rloo_reusable(tmp_path, runs):
    """The reward stage that samples SFT's own SQL reads only the RL prompts, temperature and length; RLOO
    reads no PPO-only rl key. Changing anything else of PPO's must not make them stale (a retrain of
    minutes to hours for nothing)."""
    from llamalab.train import reward, rloo
    from llamalab.train.common import fingerprint

    prof = _tiny_profile(tmp_path)
    data = tmp_path / "d.jsonl"
    data.write_text("a\n")

    def fps():
        return {"reward_own": reward.stage_fingerprint(prof, [data], True),
                "reward": reward.stage_fingerprint(prof, [data], False),
                "rloo": rloo.stage_fingerprint(prof),
                "ppo": fingerprint(prof, "ppo", [data])}

    def changed(before):
        return sorted(k for k, v in fps().items() if v != before[k])

    prof.extra.setdefault("rl", {})
    start = fps()
    prof.extra["ppo"]["kl_coef"] = 0.123  # PPO only
    assert changed(start) == ["ppo"]
    prof.extra["rl"]["reward_baseline"] = "task"  # PPO only, in the rl section RLOO shares
    assert changed(start) == ["ppo"]
    before = fps()
    prof.extra["ppo"]["temperature"] = 1.3  # the own-mistake samples are drawn at it
    assert changed(before) == ["ppo", "reward_own"]
    before = fps()
    prof.extra["rl"]["tasks"] = ["sql"]  # which prompts are sampled, and trained on
    assert changed(before) == ["ppo", "reward_own", "rloo"]


def test_ppo_applies_gradient_checkpointing_that_trl_leaves_off(tmp_path, runs):
    """TRL 1.12's PPOTrainer reads `gradient_checkpointing` but never applies it (81 GiB instead of
    41 GiB for a 7B-shaped update on an H200): llamalab switches it on for the policy and the value."""
    from transformers import TrainerCallback

    from llamalab.train.ppo import train_ppo
    from llamalab.train.reward import train_reward
    from llamalab.train.sft import train_sft

    seen = []

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            seen.append((model.policy.is_gradient_checkpointing, model.critic_backbone.gradient_checkpointing))

    prof = _tiny_profile(tmp_path)
    text = prof.path.read_text()
    head, ppo_section = text.split("\nppo:", 1)
    assert ppo_section.split("\nrloo:")[0].count("  gradient_checkpointing: false") == 1  # smoke turns it off
    prof.path.write_text(head + "\nppo:" + ppo_section.replace("  gradient_checkpointing: false",
                                                               "  gradient_checkpointing: true", 1))
    prof = config.load_profile(prof.path)
    assert prof.extra["ppo"]["gradient_checkpointing"] is True
    train_sft(prof, progress=False)
    train_reward(prof, progress=False)
    summary = train_ppo(prof, progress=False, callbacks=[Record()])
    assert seen and all(p and v for p, v in seen)
    assert summary["first_update"]["kl"] < 0.01  # checkpointing changes memory, not the numbers


def _weights(stage_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(stage_dir / "merged" / "model.safetensors"))


def test_a_stage_is_decided_by_its_seed_not_by_the_process_generator(tmp_path, runs):
    """Two runs of each stage with one profile give the same weights, whatever state the process's torch
    generator is in when the stage starts (a new process starts it from a random seed); another seed gives
    other weights. TRL 1.12 draws the LoRA adapter (SFT, PPO, RLOO) before its trainer seeds, and a reward
    model's score head is drawn when the model loads: both must come from the stage's seed. The model is
    loaded from a directory, as the default model is (the "tiny" spec would seed the generator itself)."""
    import torch

    from llamalab import models
    from llamalab.train.ppo import train_ppo
    from llamalab.train.reward import train_reward
    from llamalab.train.rloo import train_rloo
    from llamalab.train.sft import train_sft

    model_dir = tmp_path / "tiny-model"
    model, tok = models.tiny_model()
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    prof = _tiny_profile(tmp_path)
    prof.path.write_text(prof.path.read_text().replace("spec: tiny", f"spec: {model_dir}"))
    prof = config.load_profile(prof.path)
    assert prof.model.spec == str(model_dir)
    prof.extra["data"].update(sft_train=16, sft_eval=8, execution_pairs=0)
    prof.extra["sft"].update(max_steps=2, save_steps=100, max_length=256)
    stages = {"sft": train_sft, "reward": train_reward, "ppo": train_ppo, "rloo": train_rloo}
    for name, train in stages.items():
        got = []
        for generator_seed, stage_seed in ((1, 1), (2, 0), (3, 0)):  # the last run, seed 0, feeds the next stage
            torch.manual_seed(generator_seed)  # what the process did before the stage: it must not matter
            prof.extra[name]["seed"] = stage_seed
            train(prof, progress=False)
            got.append(_weights(runs / prof.name / name))
        other, first, second = got
        assert first.keys() == second.keys() == other.keys(), name
        differ = sorted(k for k in first if not torch.equal(first[k], second[k]))
        assert not differ, f"{name}: {len(differ)} tensors differ between two runs with seed 0, e.g. {differ[:2]}"
        assert any(not torch.equal(other[k], first[k]) for k in first), f"{name}: seed 1 gave the seed-0 weights"


def test_bf16_autocast_follows_the_measured_dtype_not_trls_default(tmp_path, monkeypatch):
    """TRL's SFT, reward and RLOO configs default to bf16=True, which autocasts on any CPU (on an AVX2-only
    CPU, 100x slower matmuls): llamalab turns it on only where the stage's dtype resolves to bf16, and a
    profile's own bf16/fp16 setting wins."""
    import torch

    from llamalab.train import common, reward, rloo, sft

    builders = {"sft": sft.sft_config, "reward": reward.reward_config, "rloo": rloo.rloo_config}
    prof = _tiny_profile(tmp_path)  # model.dtype: float32
    assert [b(prof, tmp_path / n).bf16 for n, b in builders.items()] == [False, False, False]
    monkeypatch.setattr(common, "train_dtype", lambda p: (torch.bfloat16, "bfloat16 (measured)"))
    assert [b(prof, tmp_path / n).bf16 for n, b in builders.items()] == [True, True, True]
    monkeypatch.setattr(common, "train_dtype", lambda p: (torch.float32, "float32 (measured)"))
    prof.extra["reward"]["bf16"] = True  # asked for in the profile: kept
    assert [b(prof, tmp_path / n).bf16 for n, b in builders.items()] == [False, True, False]
    assert common.autocast_default(prof, {"fp16": True}) == {}


def test_first_update_kl_limit_follows_the_dtype_ppo_trained_in(monkeypatch):
    """Notebook 07's check that policy and reference agree before PPO's first update: about 0 in fp32,
    0.074 in bf16 on a GPU (measured), about 31 with right-padded queries in either."""
    import torch

    from llamalab.train import ppo
    from llamalab.train.ppo import check_first_update_kl

    def summary(kl, dtype):
        return {"first_update": {"kl": kl}, "dtype": dtype}

    assert check_first_update_kl(summary(4.2e-6, "float32")) == 0.01
    assert check_first_update_kl(summary(0.074, "bfloat16")) == 1.0
    for bad in (summary(0.074, "float32"), summary(31.0, "bfloat16"), summary(-0.5, "float32")):
        with pytest.raises(AssertionError, match="first-update KL .* is not below"):
            check_first_update_kl(bad)
    with pytest.raises(ValueError, match="no first update"):
        check_first_update_kl({"first_update": None, "dtype": "float32"})
    with pytest.raises(ValueError, match="no first-update KL limit for dtype 'int8'"):
        check_first_update_kl(summary(0.0, "int8"))
    older = {"first_update": {"kl": 0.005}}  # a summary saved before the dtype was recorded: this machine's
    monkeypatch.setattr(ppo, "rl_dtype", lambda: torch.float32)
    assert check_first_update_kl(older) == 0.01
    monkeypatch.setattr(ppo, "rl_dtype", lambda: torch.bfloat16)
    assert check_first_update_kl(older) == 1.0


def test_ppo_in_bf16_as_on_a_gpu(tmp_path, runs, monkeypatch):
    """A GPU's dtype path, on a CPU: policy, reference, reward and value model in bf16 (``rl_dtype``),
    the value model's LoRA and head trained in fp32; the summary says bf16, and the first-update
    check applies bf16's limit."""
    import torch
    from transformers import TrainerCallback

    from llamalab.train import ppo
    from llamalab.train.reward import train_reward
    from llamalab.train.sft import train_sft

    prof = _tiny_profile(tmp_path, "rl:\n  value: lora\n")
    train_sft(prof, progress=False)
    train_reward(prof, progress=False)
    monkeypatch.setattr(ppo, "rl_dtype", lambda: torch.bfloat16)
    seen = []

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            value = model.value_model
            seen.append(({p.dtype for p in value.parameters() if p.requires_grad},
                         {p.dtype for p in value.parameters() if not p.requires_grad},
                         value.score.weight.detach().clone()))

    summary = ppo.train_ppo(prof, progress=False, callbacks=[Record()])
    assert summary["dtype"] == "bfloat16" and ppo.check_first_update_kl(summary) == 1.0
    assert len(seen) == summary["updates"] >= 2
    assert all(t == {torch.float32} and f == {torch.bfloat16} for t, f, _ in seen)
    assert not torch.equal(seen[0][2], seen[-1][2])  # the head learns


def test_a_base_model_without_a_chat_template_trains_in_the_plain_one(tmp_path, runs, monkeypatch):
    """huggyllama/llama-7b (the a100 profile's model) ships no chat template, and SFT's data, the reward
    pairs and the RL prompts are conversations: SFT gives the tokenizer llamalab's plain one and saves it
    with the merged model, where the reward stage and PPO read it."""
    from llamalab import models
    from llamalab.train import common
    from llamalab.train.reward import train_reward
    from llamalab.train.sft import train_sft

    chatml = models.CHATML_TEMPLATE
    monkeypatch.setattr(models, "CHATML_TEMPLATE", None)  # the tiny model's tokenizer now has no template
    assert models.tiny_tokenizer().chat_template is None
    prof = _tiny_profile(tmp_path)
    train_sft(prof, progress=False)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(common.require_stage(prof, "sft"))
    assert tok.chat_template == models.PLAIN_CHAT_TEMPLATE
    conversation = [{"role": "user", "content": "SELECT?"}, {"role": "assistant", "content": "SELECT 1;"}]
    query, full = common.chat_ids(tok, conversation[:1], add_generation_prompt=True), common.chat_ids(tok, conversation)
    assert full[: len(query)] == query and full[-1] == tok.eos_token_id
    assert tok.decode(full[len(query):]) == "SELECT 1;" + tok.eos_token
    metrics = train_reward(prof, progress=False)
    assert metrics["global_step"] > 0
    tiny = models.ensure_chat_template(models.tiny_tokenizer())
    assert tiny.chat_template == models.PLAIN_CHAT_TEMPLATE
    tiny.chat_template = chatml
    assert models.ensure_chat_template(tiny).chat_template == chatml  # a template of its own is kept


def test_bench_train_runs_a_base_model_without_a_chat_template(tmp_path, runs, monkeypatch):
    """`bench train --profile a100` loads LLaMA-7B, which has no chat template, as SFT does."""
    from llamalab import models
    from llamalab.bench import bench_train

    monkeypatch.setattr(models, "CHATML_TEMPLATE", None)
    prof = _tiny_profile(tmp_path)
    report = bench_train(str(prof.path), steps=2, batch_size=2)
    assert len(report["tokens_per_s"]) == 4 and all(rate > 0 for rate in report["tokens_per_s"].values())
    assert report["padding_free_loss_diff"] < 1e-2


def test_each_stage_counts_its_own_gpu_peak(monkeypatch):
    """A stage's peak_cuda_gib starts from its own clock: notebook 07 trains RLOO after PPO in one process."""
    import torch

    from llamalab.train import common

    allocator = {"peak": 30 * 1024**3}  # what the stage before left as the process's peak
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: allocator.update(peak=2 * 1024**3))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: allocator["peak"])
    started = common.stage_clock()
    assert common.memory_and_time(None, started)["peak_cuda_gib"] == 2.0


def test_adaptive_kl_controller_steers_the_coefficient_each_update(tmp_path, runs):
    """rl.kl_target: after every update the KL coefficient moves by Ziegler et al.'s rule, and TRL's
    next rollout uses the new value: each update's non-score reward is -kl_coef x its KL. run_info
    keeps the profile's starting coefficient; the summary has the last one."""
    from llamalab.train.ppo import KL_CONTROL_CLIP, train_ppo
    from llamalab.train.reward import train_reward
    from llamalab.train.sft import train_sft

    prof = _tiny_profile(tmp_path, "rl:\n  kl_target: 0.05\n  kl_horizon: 16\n")
    prof = config.apply_overrides(prof, ["ppo.total_episodes=16", "ppo.kl_coef=0.3"])
    train_sft(prof, progress=False)
    train_reward(prof, progress=False)
    summary = train_ppo(prof, progress=False)
    rows = [json.loads(x) for x in (runs / prof.name / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[0]["kl_coef"] == pytest.approx(0.3)
    coefs = [r["kl_coef"] for r in rows] + [summary["final_kl_coef"]]
    for row, now, after in zip(rows, coefs[:-1], coefs[1:], strict=True):
        error = min(max(row["kl"] / 0.05 - 1, -KL_CONTROL_CLIP), KL_CONTROL_CLIP)
        assert after == pytest.approx(now * (1 + error * 4 / 16), rel=1e-9)
        assert row["non_score_reward"] == pytest.approx(-now * row["kl"], rel=1e-4, abs=1e-6)
    assert len(set(coefs)) == len(coefs)  # it moved at every update
    assert coefs[1] == pytest.approx(0.3 * (1 - KL_CONTROL_CLIP * 4 / 16))  # first rollouts = reference: KL 0
    info = json.loads((runs / prof.name / "ppo" / "run_info.json").read_text())
    assert info["config"]["ppo"]["kl_coef"] == 0.3 and (info["kl_target"], info["kl_horizon"]) == (0.05, 16)

    floored = config.apply_overrides(prof, ["rl.kl_coef_min=0.3"])  # rl.kl_coef_min at the start: never lowered
    summary = train_ppo(floored, progress=False)
    rows = [json.loads(x) for x in (runs / prof.name / "ppo" / "metrics.jsonl").read_text().splitlines()]
    coefs = [r["kl_coef"] for r in rows] + [summary["final_kl_coef"]]
    for row, now, after in zip(rows, coefs[:-1], coefs[1:], strict=True):
        error = min(max(row["kl"] / 0.05 - 1, -KL_CONTROL_CLIP), KL_CONTROL_CLIP)
        assert after == pytest.approx(max(now * (1 + error * 4 / 16), 0.3), rel=1e-9)
    assert coefs[1] == 0.3 and min(coefs) == 0.3  # the first update's KL ~0 would have cut it to 0.285
    info = json.loads((runs / prof.name / "ppo" / "run_info.json").read_text())
    assert info["kl_coef_min"] == 0.3

    plain = config.apply_overrides(prof, ["rl.kl_target=null", "rl.kl_horizon=10000"])  # fixed coefficient
    summary = train_ppo(plain, progress=False)
    rows = [json.loads(x) for x in (runs / prof.name / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert {r["kl_coef"] for r in rows} == {0.3} and summary["final_kl_coef"] == 0.3


def test_value_warmup_trains_only_the_value_model_first(tmp_path, runs):
    """rl.value_warmup_updates: N extra PPO updates in which the policy's LoRA stays as it started
    (so the rollouts of update N+1 still match the reference: KL 0) while the value model learns; then
    the policy learns for the profile's own updates."""
    import torch
    from transformers import TrainerCallback

    from llamalab.train.ppo import rl_options, train_ppo
    from llamalab.train.reward import train_reward
    from llamalab.train.sft import train_sft

    snaps = []

    def trainable(module):
        return torch.cat([p.detach().flatten().clone() for n, p in module.named_parameters()
                          if "lora_" in n or n.endswith("score.weight")])

    class Snap(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            snaps.append((trainable(model.policy), trainable(model.value_model)))

        def on_step_end(self, args, state, control, model=None, **kwargs):
            snaps.append((trainable(model.policy), trainable(model.value_model)))

    prof = _tiny_profile(tmp_path, "rl:\n  value_warmup_updates: 2\n")
    assert rl_options(prof)["value_warmup_updates"] == 2
    train_sft(prof, progress=False)
    train_reward(prof, progress=False)
    summary = train_ppo(prof, progress=False, callbacks=[Snap()])
    rows = [json.loads(x) for x in (runs / prof.name / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert summary["updates"] == len(rows) == 4  # smoke's 2 updates of 4 episodes, after 2 warmup updates
    assert [r["phase"] for r in rows] == ["value warmup", "value warmup", "policy", "policy"]
    assert len(snaps) == 5
    start_policy, start_value = snaps[0]
    assert torch.equal(snaps[1][0], start_policy) and torch.equal(snaps[2][0], start_policy)
    assert not torch.equal(snaps[3][0], start_policy)  # the first policy update moves the LoRA
    assert not torch.equal(snaps[1][1], start_value)  # the value model learns from the first update
    assert all(abs(r["kl"]) < 1e-4 for r in rows[:3]) and rows[3]["kl"] > 1e-4
    info = json.loads((runs / prof.name / "ppo" / "run_info.json").read_text())
    assert info["value_warmup_updates"] == 2 and info["config"]["ppo"]["total_episodes"] == 8 + 2 * 4

    decayed = config.apply_overrides(prof, ["ppo.weight_decay=0.01"])
    kept = (runs / prof.name / "ppo" / "metrics.jsonl").read_text()
    with pytest.raises(config.ConfigError, match=r"tinyprof.yaml: rl.value_warmup_updates needs ppo.weight_decay: 0"):
        train_ppo(decayed, progress=False)
    assert (runs / prof.name / "ppo" / "metrics.jsonl").read_text() == kept  # refused before anything changed

    prof.extra["rl"] = {"value_warmup_updates": -1}
    with pytest.raises(config.ConfigError, match=r"tinyprof.yaml: rl.value_warmup_updates: .* got -1"):
        rl_options(prof)


def test_task_baseline_subtracts_each_tasks_running_mean_from_left_padded_queries():
    """rl.reward_baseline: task. Each score less the mean of every score so far for its task (this batch's
    included), the task found from the query's ids with the left padding removed; a query that is not a
    training prompt keeps its raw score."""
    import torch

    from llamalab.train.ppo import _TaskBaseline

    pad = 0
    b = _TaskBaseline(object(), {(5, 6): "sql", (7, 8, 9): "joke"}, pad)
    q = torch.tensor([[0, 5, 6], [7, 8, 9], [0, 5, 6], [0, 4, 4]])
    out = b.centre(q, torch.tensor([1.0, 3.0, 3.0, 10.0]))
    assert out.tolist() == pytest.approx([-1.0, 0.0, 1.0, 10.0])  # sql mean 2, joke mean 3, unknown as is
    assert b.take_mean() == pytest.approx((2 + 3 + 2) / 3) and b.take_mean() == 0.0
    out = b.centre(q[:2], torch.tensor([5.0, -1.0]))
    assert out.tolist() == pytest.approx([5.0 - 3.0, -1.0 - 1.0])  # sql (1+3+5)/3, joke (3-1)/2


def test_ppo_with_a_task_baseline_centres_the_reward_models_scores(tmp_path, runs, monkeypatch):
    """With rl.reward_baseline: task, every PPO update's reward-model scores reach TRL centred per task, and
    metrics.jsonl keeps the uncentred mean as "score"; without it nothing is centred."""
    from llamalab.train import ppo
    from llamalab.train.reward import train_reward
    from llamalab.train.sft import train_sft

    calls = []
    original = ppo._TaskBaseline.centre

    def spy(self, query_ids, scores):
        out = original(self, query_ids, scores)
        calls.append(([self.task_of(q) for q in query_ids], scores.tolist(), out.tolist()))
        return out

    prof = _tiny_profile(tmp_path, "rl:\n  reward_baseline: task\n")
    train_sft(prof, progress=False)
    train_reward(prof, progress=False)
    monkeypatch.setattr(ppo._TaskBaseline, "centre", spy)
    summary = ppo.train_ppo(prof, progress=False)
    rows = [json.loads(x) for x in (runs / prof.name / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert len(calls) == summary["updates"] == len(rows) == 2
    tasks, raw, centred = calls[0]
    assert None not in tasks  # every query of an update is a training prompt
    for task in set(tasks):  # first update: each task's scores average 0
        assert sum(c for t, c in zip(tasks, centred, strict=True) if t == task) == pytest.approx(0.0, abs=1e-4)
    assert any(abs(r - c) > 1e-3 for r, c in zip(raw, centred, strict=True))
    for row, (_, raw, centred) in zip(rows, calls, strict=True):
        base = sum(r - c for r, c in zip(raw, centred, strict=True)) / len(raw)
        assert row["baseline"] == pytest.approx(base, abs=1e-4)
        assert row["score"] - row["score_centred"] == pytest.approx(base, abs=1e-4)
        assert row["rlhf_reward"] == pytest.approx(row["score"] + row["non_score_reward"], abs=1e-4)
    info = json.loads((runs / prof.name / "ppo" / "run_info.json").read_text())
    assert info["reward_baseline"] == "task"

    prof.extra["rl"] = {}
    ppo.train_ppo(prof, progress=False)
    assert len(calls) == 2  # TRL's way: nothing centred
    assert "baseline" not in json.loads((runs / prof.name / "ppo" / "metrics.jsonl").read_text().splitlines()[0])
    prof.extra["rl"] = {"reward_baseline": "prompt"}
    with pytest.raises(config.ConfigError, match=r"tinyprof.yaml: rl.reward_baseline: 'prompt' is not one of"):
        ppo.rl_options(prof)


def test_task_baseline_centres_the_reward_model_the_trainer_ends_up_calling(tmp_path, runs, monkeypatch):
    """Under DeepSpeed, PPOTrainer replaces its reward model with an engine that wraps it; the per-task
    baseline must still recognise the reward model's calls (a wrapper stands for the engine here)."""
    import torch
    from trl.experimental.ppo import PPOTrainer

    from llamalab.train import ppo
    from llamalab.train.reward import train_reward
    from llamalab.train.sft import train_sft

    class Engine(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self.module, name)

    original_init = PPOTrainer.__init__

    def wrap_reward_model(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.reward_model = Engine(self.reward_model)

    calls = []
    original_centre = ppo._TaskBaseline.centre
    prof = _tiny_profile(tmp_path, "rl:\n  reward_baseline: task\n")
    train_sft(prof, progress=False)
    train_reward(prof, progress=False)
    monkeypatch.setattr(PPOTrainer, "__init__", wrap_reward_model)
    monkeypatch.setattr(ppo._TaskBaseline, "centre", lambda self, q, s: calls.append(1) or original_centre(self, q, s))
    summary = ppo.train_ppo(prof, progress=False)
    assert len(calls) == summary["updates"] == 2


def test_baseline_stats_tell_a_useful_baseline_from_a_useless_one():
    """A per-prompt baseline equal to each prompt's mean score removes the gap between prompts; one that
    runs against it (as the reward model's reading of a bare prompt did on the cpu profile) adds to it."""
    from llamalab.train.heldout import baseline_stats

    scores = [[2.0, 4.0], [-2.0, 0.0], [5.0, 7.0], [-4.0, -2.0]]  # prompt means 3, -1, 6, -3
    tasks = ["sql", "joke", "sql", "joke"]
    good = baseline_stats([3.0, -1.0, 6.0, -3.0], scores, tasks)
    bad = baseline_stats([-3.0, 1.0, -6.0, 3.0], scores, tasks)
    assert good["corr_v0_prompt_mean"] == pytest.approx(1.0) and bad["corr_v0_prompt_mean"] == pytest.approx(-1.0)
    assert good["sd_minus_v0"] == pytest.approx(1.0)  # only the spread within a prompt is left
    assert bad["sd_minus_v0"] > good["sd_none"] > good["sd_minus_task_mean"] > good["sd_minus_v0"]
    assert good["sd_minus_loo_mean"] == pytest.approx(2.0)  # two responses: x - the other one
    assert good["by_task"] == {"joke": {"v0": -2.0, "score": -2.0}, "sql": {"v0": 4.5, "score": 4.5}}
    with pytest.raises(ValueError, match="at least two scores per prompt"):
        baseline_stats([1.0], [[1.0]], ["sql"])


def test_heldout_kl_of_a_left_padded_sample_equals_the_unpadded_sequence():
    """`heldout.kl_per_sequence` reads samples as `heldout.sample` writes them, each query left-padded to its
    sampling batch's longest; each KL must be what the unpadded sequence gives (the pads masked, the
    sum over the response's tokens only), and 0 for an empty response."""
    import copy

    import torch

    from llamalab.models import tiny_model
    from llamalab.train import heldout

    reference, tok = tiny_model()
    reference.eval()
    policy = copy.deepcopy(reference)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    pad = tok.pad_token_id
    assert pad not in (None, tok.eos_token_id)
    g = torch.Generator().manual_seed(1)

    def ids(n):
        return [int(t) for t in torch.randint(3, policy.config.vocab_size, (n,), generator=g)]

    samples = []
    for width, real, resp in ((9, 9, 7), (9, 5, 2), (9, 7, 0), (9, 3, 11), (6, 6, 4), (6, 2, 9)):
        samples.append({"query_ids": [pad] * (width - real) + ids(real), "response_ids": ids(resp)})

    def alone(s):
        q = [t for t in s["query_ids"] if t != pad]
        seq = torch.tensor([q + s["response_ids"]])
        with torch.inference_mode():
            lp = torch.log_softmax(policy(input_ids=seq).logits[0, len(q) - 1:-1].float() / 0.7, -1)
            lr = torch.log_softmax(reference(input_ids=seq).logits[0, len(q) - 1:-1].float() / 0.7, -1)
        target = seq[0, len(q):]
        return float((lp.gather(-1, target[:, None]) - lr.gather(-1, target[:, None])).sum())

    want = [alone(s) if s["response_ids"] else 0.0 for s in samples]
    got = heldout.kl_per_sequence(policy, reference, samples, pad, 0.7)
    assert got[2] == 0.0 and all(abs(w) > 1e-3 for i, w in enumerate(want) if i != 2)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("stage", ["ppo", "rloo"])
def test_a_diverged_update_stops_online_rl_there_and_keeps_its_metrics(tmp_path, runs, monkeypatch, stage):
    """A reward that turns non-finite makes PPO's score (RLOO's reward) NaN or infinite. The run stops at
    that update with an error that names the stage, the update and the metric; metrics.jsonl keeps the
    row, and no policy or summary is written. Without the check TRL trains on and saves the NaN policy."""
    import math

    import torch

    from llamalab.train import ppo, rloo
    from llamalab.train.reward import train_reward
    from llamalab.train.sft import train_sft

    prof = _tiny_profile(tmp_path)
    train_sft(prof, progress=False)
    train_reward(prof, progress=False)
    if stage == "ppo":
        from trl.experimental.ppo import ppo_trainer

        original = ppo_trainer.get_reward

        def nan_scores(*args, **kwargs):
            logits, scores, lengths = original(*args, **kwargs)
            return logits, torch.full_like(scores, math.nan), lengths

        monkeypatch.setattr(ppo_trainer, "get_reward", nan_scores)
        train, bad = ppo.train_ppo, "score is nan"
    else:
        monkeypatch.setattr(rloo, "reward_function", lambda rm, tok: lambda prompts, completions, **kw: [math.inf] * len(prompts))
        train, bad = rloo.train_rloo, "reward is inf"
    with pytest.raises(FloatingPointError, match=rf"^{stage}: update 1: .*{bad}.*training diverged"):
        train(prof, progress=False)
    out = runs / prof.name / stage
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [1]
    assert not (out / "merged").exists() and not (out / "train_summary.json").exists()
