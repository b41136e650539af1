"""The before/after conclusion is computed from the numbers and says when a stage made things worse."""

import statistics

import pandas as pd
import pytest

from llamalab import study


def _table():
    return pd.DataFrame({"clickbait_accuracy": [0.3, 0.4, 0.2], "sql_exec_acc": [0.0, 0.1, 0.1]},
                        index=pd.Index(["base", "sft", "sft+ppo"], name="model"))


def test_conclusions_follow_the_numbers():
    lines = study.conclusions(_table(), pairs=[("base", "sft"), ("sft", "sft+ppo")])
    assert "improved clickbait accuracy 0.30 -> 0.40; SQL execution accuracy 0.00 -> 0.10" in lines[0]
    assert "made WORSE clickbait accuracy 0.40 -> 0.20" in lines[1]
    assert "left unchanged SQL execution accuracy 0.10 -> 0.10" in lines[1]
    with pytest.raises(ValueError, match="not a row"):
        study.conclusions(_table(), pairs=[("base", "rlhf")])


def test_heldout_sentence_states_the_acceptance():
    heldout = {"n_prompts": 4, "policies": {
        "sft": {"mean_score": 1.0, "std_score": 2.0, "mean_kl": 0.0, "gain_in_sft_std": 0.0},
        "ppo": {"mean_score": 2.5, "std_score": 2.0, "mean_kl": 3.2, "gain_in_sft_std": 0.75}}}
    lines = study.conclusions(_table(), heldout, pairs=[("base", "sft")])
    assert "ppo's mean reward-model score rose over SFT's (1.00 -> 2.50: 0.75 SFT standard deviations" in lines[-1]
    assert lines[-1].endswith("was met.")
    heldout["policies"]["ppo"]["gain_se_in_sft_std"] = 0.125
    assert "(1.00 -> 2.50: 0.75 ± 0.12 SFT standard deviations" in study.conclusions(_table(), heldout)[-1]
    heldout["policies"]["ppo"]["mean_kl"] = 12.0  # past the KL budget: the same gain no longer counts
    assert study.conclusions(_table(), heldout, pairs=[("base", "sft")])[-1].endswith("was NOT met.")
    heldout["policies"]["ppo"].update(mean_kl=3.2, mean_score=1.5, gain_in_sft_std=0.25)
    line = study.conclusions(_table(), heldout, pairs=[("base", "sft")])[-1]
    assert "rose" in line and line.endswith("was NOT met.")


def test_within_task_spread_removes_the_gap_between_tasks():
    from llamalab.train.heldout import by_task, paired_se, within_task_std

    tasks = ["sql", "sql", "joke", "joke"]
    scores = [1.0, 3.0, -4.0, -2.0]  # each task +-1 around its mean; the tasks 5 apart
    assert within_task_std(tasks, scores) == pytest.approx(1.0)
    assert statistics.pstdev(scores) > 2.5
    assert paired_se([s + 0.5 for s in scores], scores) == pytest.approx(0.0)  # same gain on every prompt
    assert paired_se([3.0, 3.0, -4.0, -2.0], scores) == pytest.approx(0.5)  # gains 2, 0, 0, 0
    table = by_task(tasks, scores, [0.0, 2.0, 4.0, 4.0])
    assert table["sql"] == {"n": 2, "mean_score": 2.0, "mean_kl": 1.0} and table["joke"]["mean_score"] == -3.0


def test_expected_best_of_k_matches_every_subset():
    import itertools
    import math

    from llamalab.train.heldout import best_of_n_kl, expected_best_of

    scores = [0.3, -1.2, 2.5, 0.3, 1.1, -0.4]  # a tie included
    for k in range(1, len(scores) + 1):
        subsets = list(itertools.combinations(scores, k))
        assert expected_best_of(scores, k) == pytest.approx(statistics.fmean(max(s) for s in subsets))
    assert expected_best_of(scores, 1) == pytest.approx(statistics.fmean(scores))
    assert expected_best_of(scores, len(scores)) == 2.5
    with pytest.raises(ValueError, match="best of 7"):
        expected_best_of(scores, 7)
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(8) == pytest.approx(math.log(8) - 7 / 8)


def test_degenerate_detection():
    assert study.is_degenerate("")
    assert study.is_degenerate("the cat the cat the cat the cat the cat the cat")
    assert not study.is_degenerate("SELECT COUNT(DISTINCT user_id) FROM events WHERE rpc_method = 'Login';")
    assert study.point_biserial([1.0, 2.0, 3.0, 4.0], [False, False, True, True]) > 0.8
    assert study.point_biserial([1.0, 2.0], [True, False]) is None
