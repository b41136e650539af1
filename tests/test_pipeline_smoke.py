"""The recipe end to end in the smoke profile, on the real default model, in a temporary runs dir:
SFT killed after its first checkpoint and resumed, then the reward model, then PPO."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from llamalab import config


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("LLAMALAB_RUNS", str(runs))
    env = {**os.environ, "LLAMALAB_RUNS": str(runs), "PYTHONUNBUFFERED": "1"}
    out = runs / "smoke" / "sft"
    cmd = [sys.executable, "-m", "llamalab", "train", "sft", "--profile", "smoke"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    first = out / "checkpoints" / "checkpoint-3" / "trainer_state.json"
    deadline = time.time() + 600
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # let the checkpoint's last files land
    killed_state = {"checkpoint": first.exists(), "metrics_before_resume": (out / "metrics.json").exists(),
                    "merged_before_resume": (out / "merged").exists()}
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    profile = config.load_profile("smoke")
    from llamalab.train.ppo import train_ppo
    from llamalab.train.reward import train_reward

    reward_metrics = train_reward(profile, progress=False)
    ppo_summary = train_ppo(profile, progress=False)
    yield {"runs": runs, "profile": profile, "killed": killed_state, "sft_out": out,
           "reward": reward_metrics, "ppo": ppo_summary}
    mp.undo()


def test_sft_resumes_from_its_first_checkpoint(chain):
    assert chain["killed"] == {"checkpoint": True, "metrics_before_resume": False, "merged_before_resume": False}
    metrics = json.loads((chain["sft_out"] / "metrics.json").read_text())
    assert metrics["resumed_from"] == "checkpoint-3"
    assert metrics["first_step_this_run"] == 4  # the resumed run did not redo the first three steps
    assert metrics["global_step"] == 6
    assert (chain["sft_out"] / "merged" / "model.safetensors").is_file()
    info = json.loads((chain["sft_out"] / "run_info.json").read_text())
    assert info["world_size"] == 1 and info["versions"]["trl"] == "1.12.0" and info["git_sha"]


def test_reward_model_artifacts_and_held_out_metrics(chain):
    m = chain["reward"]
    assert 0 <= m["eval_pairwise_accuracy"] <= 1 and m["eval_n"] == 16
    merged = chain["runs"] / "smoke" / "reward" / "merged"
    cfg = json.loads((merged / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForSequenceClassification"] and len(cfg["id2label"]) == 1


def test_reward_is_read_at_the_last_real_token(chain):
    """TRL's get_reward on a left-padded query + right-padded response gives the same score as the
    reward model on the unpadded sequence, whose last token is the EOS."""
    from trl.experimental.utils import get_reward

    from llamalab.train.common import chat_ids
    from llamalab.train.reward import load_reward_model, score

    rm, tok = load_reward_model(chain["runs"] / "smoke" / "reward" / "merged")
    prompt = [{"role": "user", "content": "Is this title clickbait? 'Markets close higher'"}]
    response = [{"role": "assistant", "content": "no"}]
    q = chat_ids(tok, prompt, add_generation_prompt=True)
    full = chat_ids(tok, prompt + response)
    assert full[: len(q)] == q and full[-1] == tok.eos_token_id
    pad = tok.pad_token_id
    padded = torch.tensor([[pad] * 5 + full + [pad] * 7])
    _, scores, seq_len = get_reward(rm, padded, pad, 5 + len(q))
    assert int(seq_len[0]) == 5 + len(full) - 1  # index of the EOS
    expected = score(rm, tok, [prompt], [response])[0]
    assert float(scores[0]) == pytest.approx(expected, abs=1e-4)


def test_reward_model_loads_in_the_rl_dtype_on_this_processs_device_unless_told(chain, monkeypatch):
    """Notebook 06, the reward stage's evaluation and `llamalab reward` load it with no dtype or device:
    on a GPU that is bf16 on the GPU, not fp32 on the CPU."""
    from llamalab.train import common, ppo, reward

    rm_dir = chain["runs"] / "smoke" / "reward" / "merged"
    monkeypatch.setattr(ppo, "rl_dtype", lambda: torch.bfloat16)  # what a GPU with bf16 picks
    monkeypatch.setattr(common, "device", lambda: "meta")  # stands for this process's GPU
    rm, _ = reward.load_reward_model(rm_dir)
    assert rm.dtype == torch.bfloat16 and rm.device.type == "meta"
    rm, _ = reward.load_reward_model(rm_dir, dtype="float32", device="cpu")
    assert rm.dtype == torch.float32 and rm.device.type == "cpu"


def test_ppo_first_update_kl_is_near_zero_and_metrics_are_saved(chain):
    from llamalab.train import ppo as ppo_module

    rows = [json.loads(line) for line in (chain["runs"] / "smoke" / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == chain["ppo"]["updates"] == 2
    assert abs(rows[0]["kl"]) < 0.01
    assert chain["ppo"]["dtype"] == "float32"  # on a CPU; the notebook's check applies fp32's limit to it
    assert ppo_module.check_first_update_kl(chain["ppo"]) == 0.01
    for key in ("score", "kl", "entropy", "policy_loss", "value_loss", "clip_fraction", "response_length"):
        assert all(r[key] is not None for r in rows), key
    assert all(0 < r["response_length"] <= 48 for r in rows)
    out = chain["runs"] / "smoke" / "ppo"
    assert (out / "merged" / "config.json").is_file() and (out / "adapter" / "adapter_config.json").is_file()
    info = json.loads((out / "run_info.json").read_text())
    assert info["reference"] == "policy with its LoRA adapter disabled"
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["update"] for s in samples] == [1, 2] or [s["update"] for s in samples] == [1, 1, 2][:len(samples)]


def test_right_padded_queries_break_the_first_update_kl(chain, tmp_path, monkeypatch):
    """The silent bug the left padding avoids: same run with right-padded queries."""
    from llamalab.train.ppo import train_ppo

    runs = tmp_path / "runs"
    monkeypatch.setenv("LLAMALAB_RUNS", str(runs))
    for stage in ("sft", "reward"):  # reuse the chain's earlier stages
        (runs / "smoke").mkdir(parents=True, exist_ok=True)
        os.symlink(chain["runs"] / "smoke" / stage, runs / "smoke" / stage)
    profile = config.load_profile("smoke")
    profile.extra["ppo"]["total_episodes"] = 4
    summary = train_ppo(profile, progress=False, query_padding_side="right")
    assert abs(summary["first_update"]["kl"]) > 1.0
    assert Path(runs / "smoke" / "ppo" / "metrics.jsonl").is_file()


def test_heldout_command_and_where_the_reward_model_runs(chain, tmp_path, monkeypatch, capsys):
    """`python -m llamalab heldout` scores SFT and PPO on held-out prompts; the reward model is loaded in
    the RL dtype on this process's device (on a GPU it would otherwise score on the CPU in fp32), and
    RLOO loads it the same way."""
    from llamalab import __main__ as cli
    from llamalab.train import common, heldout, reward
    from llamalab.train.ppo import load_prompts, rl_dtype
    from llamalab.train.rloo import train_rloo

    calls = []
    original = reward.load_reward_model

    def spy(path, *args, **kwargs):
        calls.append(kwargs)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(reward, "load_reward_model", spy)
    out = tmp_path / "heldout.json"
    rc = cli.main(["heldout", "--profile", "smoke", "--policies", "ppo", "--limit", "3", "--json", str(out),
                   "--best-of", "3"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["n_prompts"] == 3 and set(report["policies"]) == {"sft", "ppo"}
    assert report["policies"]["sft"]["mean_kl"] == 0.0 and len(report["policies"]["ppo"]["samples"]) == 3
    printed = capsys.readouterr().out
    assert "ppo" in printed and f"{report['policies']['ppo']['mean_score']:6.2f}" in printed
    assert calls == [{"dtype": rl_dtype(), "device": common.device()}]  # once: best-of-n reuses it
    ref = report["reference"]  # the first three held-out prompts: two SQL, one clickbait, all with references
    assert ref["n"] == 3 and len(ref["scores"]) == 3 and ref["by_task"].keys() == {"sql", "clickbait"}
    flags = report["policies"]["sft"]["sql_correct"]
    assert [f is None for f in flags] == [False, False, True]
    assert ref["sql_sft_wrong"] == flags.count(False)
    valid = report["policies"]["sft"]["sql_valid"]  # from running the same queries: a correct one runs
    assert [v is None for v in valid] == [False, False, True] and all(v or not c for v, c in zip(valid, flags, strict=True))
    assert f"SQL valid {sum(valid[:2])}/2, correct {sum(flags[:2])}/2" in printed
    assert f"reference answers: mean score {ref['mean_score']:6.2f} on 3 prompts" in printed
    const = report["constant_answers"]  # each fixed reply scored on every prompt, against SFT's samples
    sft = report["policies"]["sft"]
    assert set(const["answers"]) == {"yes", "no", "I don't know."}
    for c in const["answers"].values():
        assert len(c["scores"]) == 3 and len(set(c["scores"])) > 1  # a different prompt, a different score
        assert c["gain_in_sft_std"] == pytest.approx((c["mean_score"] - sft["mean_score"]) / sft["std_score"])
    assert "one fixed answer to every prompt, gain in SFT SD: 'yes'" in printed
    bon = report["best_of_n"]
    scores = bon["scores"]
    assert len(scores) == 3 and all(len(row) == 3 for row in scores)
    assert len({x for row in scores for x in row}) > 3  # separate samples, not one response scored thrice
    assert [c["k"] for c in bon["curve"]] == [1, 2, 3]
    first, *_, last = bon["curve"]
    assert first["mean_score"] == pytest.approx(bon["sft_mean_score"])
    assert first["gain_in_sft_std"] == pytest.approx(0.0, abs=1e-9)
    assert last["mean_score"] == pytest.approx(sum(max(row) for row in scores) / 3)
    assert first["mean_score"] <= bon["curve"][1]["mean_score"] <= last["mean_score"]
    assert f"best-of-3   mean score {last['mean_score']:6.2f}" in printed
    # the two SQL prompts' samples were run: k=1 is a random sample's correctness, k=3 the top score's
    assert bon["n_sql"] == 2 and [len(r) for r in bon["texts"]] == [3, 3, 3]
    ok = bon["sql_correct"]
    assert [row.count(None) for row in ok] == [0, 0, 3]
    assert all(isinstance(f, bool) for f in ok[0] + ok[1])
    assert first["sql_picked_correct"] == pytest.approx(sum(row.count(True) / 3 for row in ok[:2]))
    top = [ok[i][max(range(3), key=lambda j: (scores[i][j], j))] for i in range(2)]
    assert last["sql_picked_correct"] == pytest.approx(sum(top))
    assert last["sql_any_correct"] == sum(any(row) for row in ok[:2])
    rows = load_prompts(chain["profile"], heldout=True)[:2]  # the kept texts are what was judged
    assert heldout.sql_correct(rows, [bon["texts"][i][-1] for i in range(2)]) == [ok[0][-1], ok[1][-1]]
    assert f"SQL correct: the reward model's pick {last['sql_picked_correct']:.1f}/2, any of 3" in printed
    assert cli.main(["heldout", "--profile", "smoke", "--best-of", "1"]) == 2
    assert "--best-of 1: needs at least 2" in capsys.readouterr().err

    class Stop(Exception):
        pass

    def stop(path, *args, **kwargs):
        calls.append(kwargs)
        raise Stop

    monkeypatch.setattr(reward, "load_reward_model", stop)
    with pytest.raises(Stop):
        train_rloo(chain["profile"], progress=False)
    assert calls[-1] == {"dtype": rl_dtype(), "device": common.device()}
    assert cli.main(["heldout", "--profile", "smoke", "--policies", "rloo", "--json", str(out)]) == 2
    assert "no merged rloo policy" in capsys.readouterr().err


def test_heldout_several_samples_per_prompt_and_a_policy_by_directory(chain, tmp_path, capsys, monkeypatch):
    """`heldout --samples N` draws N responses per prompt from each policy; round 0 is the one-sample
    report, each prompt's entry holds the mean of its N, gains are on those means in the SD of single SFT
    samples; `--policies LABEL=DIR` evaluates any merged policy beside the profile's stages, one policy in
    memory at a time (beside SFT and the reward model: on a GPU, 7B models do not fit otherwise)."""
    import statistics
    import weakref

    from llamalab import __main__ as cli
    from llamalab.train import heldout

    sft_dir, policies_loaded = chain["runs"] / "smoke" / "sft" / "merged", []
    original = heldout._load_causal

    def one_at_a_time(path, *args, **kwargs):
        assert all(ref() is None for ref in policies_loaded), "a policy still held when the next one loads"
        model, tok = original(path, *args, **kwargs)
        if Path(path) != sft_dir:
            policies_loaded.append(weakref.ref(model))
        return model, tok

    monkeypatch.setattr(heldout, "_load_causal", one_at_a_time)
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    merged = chain["runs"] / "smoke" / "ppo" / "merged"
    assert cli.main(["heldout", "--profile", "smoke", "--policies", "ppo", "--limit", "3", "--json", str(one)]) == 0
    assert cli.main(["heldout", "--profile", "smoke", "--policies", "ppo", f"again={merged}", "--limit", "3",
                     "--samples", "2", "--json", str(two)]) == 0
    printed = capsys.readouterr().out
    r1, r2 = json.loads(one.read_text()), json.loads(two.read_text())
    assert r2["samples_per_prompt"] == 2 and set(r2["policies"]) == {"sft", "ppo", "again"}
    assert "3 held-out prompts, 2 samples each" in printed
    for label in ("sft", "ppo"):
        single, double = r1["policies"][label], r2["policies"][label]
        for s1, s2 in zip(single["samples"], double["samples"], strict=True):
            assert s2["responses"][0] == s1["response"] == s2["response"]  # round 0 = the one-sample draw
            assert s2["scores"][0] == pytest.approx(s1["score"], abs=1e-5)
            assert s2["score"] == pytest.approx(statistics.fmean(s2["scores"]))
            assert s2["kl"] == pytest.approx(statistics.fmean(s2["kls"]))
        every = [x for s in double["samples"] for x in s["scores"]]
        assert len(every) == 6 and double["std_score"] == pytest.approx(statistics.pstdev(every))
        assert double["mean_score"] == pytest.approx(statistics.fmean(every))
    sft, ppo = r2["policies"]["sft"], r2["policies"]["ppo"]
    assert any(s["responses"][0] != s["responses"][1] for s in sft["samples"])  # two draws, not one twice
    means = [s["score"] for s in ppo["samples"]], [s["score"] for s in sft["samples"]]
    assert ppo["gain_in_sft_std"] == pytest.approx((statistics.fmean(means[0]) - statistics.fmean(means[1]))
                                                   / sft["std_score"])
    diffs = [a - b for a, b in zip(*means, strict=True)]
    assert ppo["gain_se_in_sft_std"] == pytest.approx(statistics.stdev(diffs) / 3 ** 0.5 / sft["std_score"])
    assert r2["policies"]["again"]["samples"] == ppo["samples"]  # the same weights by directory, same seeds
    assert len(policies_loaded) == 3  # ppo; then ppo and again: each freed before the next loaded
    flags = sft["sql_correct"]  # two SQL prompts, one clickbait: a share of the two queries, or None
    assert flags[2] is None and all(f in (0.0, 0.5, 1.0) for f in flags[:2])
    assert cli.main(["heldout", "--profile", "smoke", "--policies", "dpo", "--limit", "3"]) == 2
    assert "--policies dpo: expected ppo, rloo or LABEL=DIR" in capsys.readouterr().err
    assert cli.main(["heldout", "--profile", "smoke", "--policies", f"x={tmp_path}", "--limit", "3"]) == 2
    assert f"{tmp_path}: no merged x policy" in capsys.readouterr().err
    assert cli.main(["heldout", "--profile", "smoke", "--samples", "0"]) == 2
    assert "--samples 0: needs at least 1" in capsys.readouterr().err


def test_heldout_rescore_judges_saved_responses_with_another_reward_model(chain, tmp_path, capsys):
    """`heldout --rescore REPORT --reward DIR` scores a saved report's responses again, samples nothing, and
    works the gains out in the new scores; with the model that made the report it gives the report back."""
    import statistics

    from llamalab import __main__ as cli
    from llamalab.config import load_profile
    from llamalab.train import common
    from llamalab.train.ppo import load_prompts, rl_dtype
    from llamalab.train.reward import load_reward_model, score

    saved, again = tmp_path / "saved.json", tmp_path / "again.json"
    rm_dir = chain["runs"] / "smoke" / "reward" / "merged"
    assert cli.main(["heldout", "--profile", "smoke", "--policies", "ppo", "--limit", "3", "--samples", "2",
                     "--json", str(saved)]) == 0
    r0 = json.loads(saved.read_text())
    r0["policies"]["ppo"]["samples"][1]["responses"][1] = "SELECT COUNT(DISTINCT user_id) FROM events"
    sft_valid = r0["policies"]["sft"].pop("sql_valid")  # as a report saved before validity was counted
    assert any(v is not None for v in sft_valid)
    saved.write_text(json.dumps(r0))  # one response changed after scoring: only its score may move
    assert cli.main(["heldout", "--profile", "smoke", "--rescore", str(saved), "--reward", str(rm_dir),
                     "--json", str(again)]) == 0
    assert f"{saved} scored by {rm_dir}" in capsys.readouterr().out
    r1 = json.loads(again.read_text())
    assert r1["reward_model"] == str(rm_dir) and set(r1["policies"]) == {"sft", "ppo"}
    rows = load_prompts(load_profile("smoke"), heldout=True)
    rm, tok = load_reward_model(rm_dir, dtype=rl_dtype(), device=common.device())
    for label in ("sft", "ppo"):
        for i, (a, b) in enumerate(zip(r0["policies"][label]["samples"], r1["policies"][label]["samples"], strict=True)):
            assert b["responses"] == a["responses"] and b["kl"] == a["kl"]
            for j, text in enumerate(a["responses"]):
                if (label, i, j) == ("ppo", 1, 1):
                    want = score(rm, tok, [rows[1]["prompt"]], [[{"role": "assistant", "content": text}]])[0]
                    assert b["scores"][j] == pytest.approx(want, abs=1e-4)
                    assert abs(b["scores"][j] - a["scores"][j]) > 1e-3
                else:
                    assert b["scores"][j] == pytest.approx(a["scores"][j], abs=1e-4)
            assert b["score"] == pytest.approx(statistics.fmean(b["scores"]))
        every = [x for s in r1["policies"][label]["samples"] for x in s["scores"]]
        assert r1["policies"][label]["mean_score"] == pytest.approx(statistics.fmean(every))
    sft, ppo = r1["policies"]["sft"], r1["policies"]["ppo"]
    assert ppo["gain_in_sft_std"] == pytest.approx((ppo["mean_score"] - sft["mean_score"]) / sft["std_score"])
    assert ppo["gain_in_sft_std"] != pytest.approx(r0["policies"]["ppo"]["gain_in_sft_std"], abs=1e-6)
    assert r1["reference"]["scores"] == pytest.approx(r0["reference"]["scores"], abs=1e-4)
    # SFT's validity, missing from the saved report, is counted again from its responses; PPO's is kept
    assert r1["policies"]["sft"]["sql_valid"] == sft_valid
    assert r1["policies"]["sft"]["sql_correct"] == r0["policies"]["sft"]["sql_correct"]
    assert r1["policies"]["ppo"]["sql_valid"] == r0["policies"]["ppo"]["sql_valid"]

    r0["policies"]["sft"]["samples"][1]["prompt"] = "another question"
    saved.write_text(json.dumps(r0))
    assert cli.main(["heldout", "--profile", "smoke", "--rescore", str(saved), "--reward", str(rm_dir)]) == 2
    assert "held-out prompt 2 is not the smoke profile's" in capsys.readouterr().err
    assert cli.main(["heldout", "--profile", "smoke", "--rescore", str(saved)]) == 2
    assert "--rescore REPORT and --reward DIR go together" in capsys.readouterr().err
    assert cli.main(["heldout", "--profile", "smoke", "--rescore", str(saved), "--reward", str(rm_dir),
                     "--policies", "ppo"]) == 2
    assert "--rescore samples nothing" in capsys.readouterr().err
    assert cli.main(["heldout", "--profile", "smoke", "--rescore", str(saved), "--reward", str(tmp_path)]) == 2
    assert "no merged reward model here" in capsys.readouterr().err


def test_reward_pairs_come_from_sft_queries_that_run_wrong(chain, tmp_path, capsys):
    """`python -m llamalab reward pairs` samples the SFT model (or, with --policy, another merged model) on
    the SQL training prompts, runs each query, and appends (correct, wrong) pairs to the data set's own for
    `train reward --data`, or with --pairs-only writes them alone."""
    from llamalab import __main__ as cli
    from llamalab import paths
    from llamalab.train import heldout
    from llamalab.train.ppo import load_prompts
    from llamalab.trainsets import load_preferences

    out = tmp_path / "plus.jsonl"
    assert cli.main(["reward", "pairs", "--profile", "smoke", "--samples", "2", "--out", str(out)]) == 0
    rows = load_preferences(out)
    synthetic = load_preferences(paths.data_dir() / "train" / "preferences.jsonl")
    assert rows[:len(synthetic)] == synthetic
    new = rows[len(synthetic):]
    assert new and f"{len(new)} pairs" in capsys.readouterr().out
    by_prompt = {json.dumps(r["prompt"]): r for r in load_prompts(chain["profile"]) if r.get("task") == "sql"}
    for p in new:
        r = by_prompt[json.dumps(p["prompt"])]  # a training prompt, never a held-out one
        assert heldout.sql_correct([r, r], [p["chosen"][0]["content"], p["rejected"][0]["content"]]) == [True, False]
    # --policy samples another merged model (here the SFT model itself: the same pairs, the same seeds);
    # --pairs-only writes just those, the file data.policy_pairs_from reads
    only = tmp_path / "only.jsonl"
    sft_dir = chain["profile"].stage_dir("sft") / "merged"
    assert cli.main(["reward", "pairs", "--profile", "smoke", "--samples", "2", "--policy", str(sft_dir),
                     "--pairs-only", "--out", str(only)]) == 0
    assert load_preferences(only) == new and f"samples of {sft_dir}" in capsys.readouterr().out
    assert cli.main(["reward", "pairs", "--profile", "smoke", "--policy", str(tmp_path), "--out", str(only)]) == 2
    assert "no merged model here" in capsys.readouterr().err and load_preferences(only) == new
    assert cli.main(["reward", "pairs", "--profile", "smoke", "--samples", "0"]) == 2
    assert cli.main(["train", "sft", "--profile", "smoke", "--data", str(out)]) == 2
    assert "only the reward stage reads a preference file" in capsys.readouterr().err
