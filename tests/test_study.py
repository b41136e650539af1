"""The before/after conclusion is computed from the numbers and says when a stage made things worse."""

import json
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


def test_a_change_smaller_than_the_rounding_is_shown_with_the_digits_that_tell_it():
    df = pd.DataFrame({"clickbait_balanced_acc": [0.4021, 0.4026, 0.4026], "sql_exec_acc": [0.1, 0.09999, 0.1]},
                      index=pd.Index(["sft", "sft+rloo", "copy"], name="model"))
    lines = study.conclusions(df)
    assert "improved clickbait balanced accuracy 0.402 -> 0.403" in lines[0]
    assert "made WORSE SQL execution accuracy 0.10000 -> 0.09999" in lines[0]
    assert "left unchanged clickbait balanced accuracy 0.40 -> 0.40" in lines[1]  # equal: two decimals


def test_exact_mcnemar_matches_the_binomial_tail():
    assert study.exact_mcnemar(0, 0) == 1.0
    assert study.exact_mcnemar(0, 5) == pytest.approx(2 / 32)  # all 5 flips one way: 2 * 0.5**5
    assert study.exact_mcnemar(6, 0) == pytest.approx(2 / 64)
    assert study.exact_mcnemar(1, 4) == pytest.approx(2 * (1 + 5) / 32)
    assert study.exact_mcnemar(4, 1) == study.exact_mcnemar(1, 4)
    assert study.exact_mcnemar(3, 3) == 1.0  # the tail sum passes 1: capped


def _probe_results(label, clickbait_right, sql_right, sql_valid):
    """Probe results as ``probes.run_probe`` writes them: per-item flags, and summaries computed from
    them by the probes' own ``summarize``."""
    from llamalab.probes import clickbait, sql

    cb = [{"id": f"cb-{i}", "label": "yes", "answer": "yes" if ok else "no", "format_ok": True, "correct": ok}
          for i, ok in enumerate(clickbait_right)]
    dbs = ["data/probes/sql/events.sql"] * 6 + ["data/probes/sql/library.sql"] * 4
    q = [{"id": f"sql-{i}", "db": db, "difficulty": "easy", "valid_sql": v, "correct": ok,
          "failure": None if ok else "wrong_result"}
         for i, (db, ok, v) in enumerate(zip(dbs, sql_right, sql_valid, strict=True))]
    return [{"probe": "clickbait", "label": label, "model": label, "prompt_format": "chat", "items": cb,
             "summary": clickbait.summarize(cb)},
            {"probe": "sql", "label": label, "model": label, "prompt_format": "chat", "items": q,
             "summary": sql.summarize(q)}]


def _before_after_results():
    f, t = False, True
    return (_probe_results("sft", [f] * 6 + [t] * 4, [t, t, f, f, f, f, f, f, f, f], [t] * 5 + [f] * 5)
            + _probe_results("sft+ppo", [t] * 10, [t, f, f, f, f, f, f, f, f, t], [t] * 5 + [f] * 5))


def test_paired_changes_count_the_items_that_flipped():
    results = _before_after_results()
    flips = study.paired_changes(results, "sft", "sft+ppo")
    assert flips["clickbait_accuracy"] == {"n": 10, "gained": 6, "lost": 0, "p_value": pytest.approx(2 / 64)}
    assert flips["clickbait_format_ok"] == {"n": 10, "gained": 0, "lost": 0, "p_value": 1.0}
    assert flips["sql_exec_acc"] == {"n": 10, "gained": 1, "lost": 1, "p_value": 1.0}
    assert flips["sql_exec_acc_seen(events)"] == {"n": 6, "gained": 0, "lost": 1, "p_value": 1.0}
    assert flips["sql_exec_acc_unseen(library)"] == {"n": 4, "gained": 1, "lost": 0, "p_value": 1.0}
    table = study.table(results)
    for col, c in flips.items():  # the flips add up to the table's change, column by column
        assert (c["gained"] - c["lost"]) / c["n"] == pytest.approx(table.loc["sft+ppo", col] - table.loc["sft", col])
    rows = study.paired_table(results, [("sft", "sft+ppo")])
    assert rows.set_index("metric").loc["clickbait_accuracy", ["gained", "lost"]].tolist() == [6, 0]
    assert len(rows) == len(flips)
    with pytest.raises(ValueError, match="no probe result is labelled 'rlhf'"):
        study.paired_changes(results, "sft", "rlhf")
    results[2]["items"][0]["id"] = "cb-99"  # ppo's clickbait run on another item
    with pytest.raises(ValueError, match=r"clickbait probe ran on different items .*cb-0, cb-99"):
        study.paired_changes(results, "sft", "sft+ppo")


def test_conclusions_say_which_changes_are_more_than_chance():
    results = _before_after_results()
    line = study.conclusions(study.table(results), pairs=[("sft", "sft+ppo")], results=results)[0]
    assert "improved clickbait accuracy 0.40 -> 1.00 (items: 6 gained, 0 lost, of 10; p = 0.031)" in line
    assert "made WORSE SQL execution accuracy on the seen schema (events) 0.33 -> 0.17 (items: 0 gained, 1 lost, " \
           "of 6; p = 1.000)" in line
    assert ("left unchanged clickbait format rate 1.00 -> 1.00; SQL execution accuracy 0.20 -> 0.20 (items: 1 gained, "
            "1 lost, of 10; p = 1.000)") in line  # no flip, no test: the format rate has no parenthesis
    assert line.endswith("more than chance for clickbait accuracy; within chance for SQL execution accuracy, "
                         "SQL execution accuracy on the seen schema (events), SQL execution accuracy on the unseen "
                         "schema (library).")
    only_sql = [r for r in results if r["probe"] == "sql"]
    line = study.conclusions(study.table(only_sql), pairs=[("sft", "sft+ppo")], results=only_sql)[0]
    assert line.endswith("no change is more than chance.")


def _clickbait_result(label, answers, labels=("yes",) * 4 + ("no",) * 6):
    from llamalab.probes import clickbait

    items = [{"id": f"cb-{i}", "label": y, "answer": a if a in ("yes", "no") else None,
              "format_ok": a in ("yes", "no"), "correct": a == y}
             for i, (y, a) in enumerate(zip(labels, answers, strict=True))]
    return {"probe": "clickbait", "label": label, "model": label, "prompt_format": "chat", "items": items,
            "summary": clickbait.summarize(items)}


def test_balanced_accuracy_gives_one_fixed_answer_a_half():
    results = [_clickbait_result("sft", ["no", "no", "no", "yes"] + ["yes"] * 4 + ["no"] * 2),  # leans the wrong way
               _clickbait_result("sft+rloo", ["yes"] * 10),
               _clickbait_result("sft+ppo", ["yes"] * 3 + ["no"] + ["no"] * 5 + ["yes"])]
    table = study.table(results)
    assert table.loc["sft", "clickbait_accuracy"] == pytest.approx(0.3)
    assert table.loc["sft", "clickbait_balanced_acc"] == pytest.approx((1 / 4 + 2 / 6) / 2)
    assert table.loc["sft", "clickbait_yes_share"] == pytest.approx(0.5)
    # "yes" to everything: accuracy is the share of clickbait titles (0.4), balanced accuracy exactly 0.5
    assert table.loc["sft+rloo", ["clickbait_accuracy", "clickbait_balanced_acc", "clickbait_yes_share"]].tolist() \
        == pytest.approx([0.4, 0.5, 1.0])
    assert table.loc["sft+ppo", "clickbait_balanced_acc"] == pytest.approx((3 / 4 + 5 / 6) / 2)
    lines = study.conclusions(table, pairs=[("sft", "sft+rloo")], results=results)
    assert "improved clickbait accuracy 0.30 -> 0.40" in lines[0]
    assert "clickbait balanced accuracy 0.29 -> 0.50" in lines[0]
    assert lines[1].startswith("Clickbait balanced accuracy (")
    assert "'sft' 0.29; 'sft+rloo' 0.50 (answers 'yes' to 100% of the titles: its accuracy is the share" in lines[1]
    assert "Above 0.50: 'sft+ppo'." in lines[1]
    assert lines[1].endswith("On these 10 titles, answering 'no' to every one scores an accuracy of 0.60.")
    results.append(_clickbait_result("base", ["no"] * 10))
    assert "'base' 0.50 (answers 'no' to at least 100% of the titles" in study.conclusions(study.table(results))[-1]
    results.append(_clickbait_result("base (chat)", ["I think so"] * 10))  # no answer at all: no fixed answer
    assert "'base (chat)' 0.00." in study.conclusions(study.table(results))[-1]
    worse = study.table(results[:2])
    assert "No model tells clickbait apart better than a fixed answer would." in study.conclusions(worse)[-1]
    assert study.clickbait_balance({"n": 0, "confusion": None}) == {"clickbait_balanced_acc": None,
                                                                     "clickbait_yes_share": None}


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
    # at the bar within its error: the verdict says the interval reaches the other side
    heldout["policies"]["ppo"].update(gain_in_sft_std=0.5001, gain_se_in_sft_std=0.083)
    heldout["samples_per_prompt"] = 4
    line = study.conclusions(_table(), heldout, pairs=[("base", "sft")])[-1]
    assert line.startswith("On 4 held-out prompts (4 samples each), ppo's")
    assert line.endswith("was met by its point estimate only: the 95% interval, 0.34 to 0.66, reaches below 0.5.")
    heldout["policies"]["ppo"].update(gain_in_sft_std=0.40, gain_se_in_sft_std=0.14)
    assert study.conclusions(_table(), heldout)[-1].endswith("was NOT met; its 95% interval, 0.13 to 0.67, reaches 0.5.")


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


def test_what_the_best_score_picks_and_any_of_k_match_every_subset():
    """The expected correctness of the reward model's pick among k samples, and of 'any of k is
    correct', against enumerating every k-subset; the pick is not the best-valued sample."""
    import itertools

    from llamalab.train.heldout import any_of, expected_best_of

    scores = [0.3, -1.2, 2.5, 0.3, 1.1, -0.4]  # a tie at 0.3: the later sample is picked
    values = [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]  # the top-scored sample is wrong
    flags = [v == 1.0 for v in values]
    for k in range(1, len(scores) + 1):
        subsets = list(itertools.combinations(range(len(scores)), k))
        picked = [values[max(s, key=lambda i: (scores[i], i))] for s in subsets]
        assert expected_best_of(scores, k, values) == pytest.approx(statistics.fmean(picked))
        assert any_of(flags, k) == pytest.approx(statistics.fmean(any(flags[i] for i in s) for s in subsets))
    assert expected_best_of(scores, 1, values) == pytest.approx(0.5)
    assert expected_best_of(scores, 6, values) == 0.0  # the top score's sample, wrong
    assert expected_best_of([0.3, 0.3], 2, [1.0, 0.0]) == 0.0  # tie: the later one
    assert any_of(flags, 4) == 1.0 and any_of([False] * 3, 2) == 0.0
    with pytest.raises(ValueError, match="2 values for 6"):
        expected_best_of(scores, 2, [1.0, 0.0])
    with pytest.raises(ValueError, match="any of 7"):
        any_of(flags, 7)


def test_reference_answers_and_sql_execution_calibrate_the_held_out_score(monkeypatch):
    """The held-out report says what the reference answers score and how often the reward model
    ranks a correct query above SFT's wrong one; SQL correctness comes from running the queries."""
    from llamalab.train import heldout, reward

    gold = "SELECT COUNT(*) FROM customers WHERE country = 'Poland';"
    rows = [{"task": "sql", "schema": "shop", "reference": gold},
            {"task": "sql", "schema": "shop", "reference": gold},
            {"task": "sql", "schema": "shop", "reference": gold},
            {"task": "clickbait", "schema": None, "reference": "no"}]
    responses = ["SELECT count(*) FROM customers WHERE country='Poland'",  # same rows, other spelling
                 "SELECT COUNT(*) FROM customers;",  # runs, wrong rows
                 "You could count the customers.",  # no SQL at all
                 "yes"]
    assert heldout.sql_correct(rows, responses) == [True, False, False, None]

    # a stand-in reward model: the score is the response's length, so every figure can be worked out
    monkeypatch.setattr(reward, "score", lambda rm, tok, prompts, resp: [float(len(r[-1]["content"])) for r in resp])
    sft_scores = [10.0, 100.0, 20.0, 1.0]
    report = {"policies": {"sft": {"std_score": 2.0, "sql_correct": [True, False, False, None],
                                   "samples": [{"score": x} for x in sft_scores]}}}
    ctx = {"rows": rows, "prompts": [[{"role": "user", "content": "q"}]] * 4, "rm": None, "rm_tok": None,
           "tasks": [r["task"] for r in rows]}
    ref = heldout.reference_check(ctx, report)
    lengths = [len(gold)] * 3 + [2]
    assert ref["scores"] == lengths
    assert ref["gain_in_sft_std"] == pytest.approx((statistics.fmean(lengths) - statistics.fmean(sft_scores)) / 2.0)
    assert ref["above_sft"] == 3  # all but prompt 1, where SFT scored 100
    assert (ref["sql_sft_wrong"], ref["sql_above_wrong_sft"]) == (2, 1)  # only prompts 1 and 2 count
    assert ref["by_task"] == {"clickbait": 2.0, "sql": float(len(gold))}
    report["policies"]["sft"].update(mean_score=statistics.fmean(sft_scores), mean_kl=0.0)
    lines = heldout.summary_lines({"n_prompts": 4, "temperature": 0.7, "sft_within_task_std": 1.0, **report,
                                   "reference": ref})
    assert "SQL correct 1/3" in lines[1]
    assert "scores the reference query higher on 1 (50%; 50% = chance)" in lines[-1]
    assert heldout.reference_check({**ctx, "rows": [{"task": "joke"}] * 4}, report) is None


def test_execution_pairs_reject_only_queries_that_return_the_wrong_rows(tmp_path):
    from llamalab.train import heldout
    from llamalab.train.reward import pairs_from_samples
    from llamalab.trainsets import load_preferences

    gold = "SELECT COUNT(*) FROM customers WHERE country = 'Poland';"
    rows = [{"prompt": [{"role": "user", "content": f"q{i}"}], "task": "sql", "schema": "shop", "reference": gold}
            for i in range(2)]
    right = "SELECT count(*) FROM customers WHERE country='Poland'"
    wrong = ["SELECT COUNT(*) FROM customers;", "SELECT COUNT(*) FROM orders;", "SELECT 1;"]
    texts = [[right, wrong[0], wrong[0], ""], [wrong[1], wrong[2], wrong[0], right]]
    flags = [heldout.sql_correct([r] * len(t), t) for r, t in zip(rows, texts, strict=True)]
    assert flags[0] == [True, False, False, False]  # the empty response has no SQL: wrong, but never a pair
    pairs = pairs_from_samples(rows, texts, flags, max_per_prompt=2)
    assert [p["rejected"][0]["content"] for p in pairs] == [wrong[0], wrong[1], wrong[2]]  # distinct, at most 2
    assert {p["chosen"][0]["content"] for p in pairs} <= {gold, right}
    assert [p["prompt"] for p in pairs] == [rows[0]["prompt"], rows[1]["prompt"], rows[1]["prompt"]]
    for p in pairs:  # what the rows say is what running them says
        assert heldout.sql_correct([rows[0]] * 2, [p["chosen"][0]["content"], p["rejected"][0]["content"]]) == [True, False]
    assert pairs_from_samples(rows, [[right], [right]], [[True], [True]]) == []  # nothing wrong, nothing to learn
    out = tmp_path / "pairs.jsonl"
    out.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    assert len(load_preferences(out)) == 3  # the reward stage's own reader accepts them


def test_reference_sentences_say_whether_the_reward_model_tracks_correctness():
    heldout = {"n_prompts": 64, "policies": {
        "sft": {"mean_score": 2.8, "std_score": 2.3, "mean_kl": 0.0, "gain_in_sft_std": 0.0},
        "ppo": {"mean_score": 2.7, "std_score": 2.3, "mean_kl": 2.0, "gain_in_sft_std": -0.04}},
        "reference": {"mean_score": 2.8, "sft_mean_score": 2.83, "gain_in_sft_std": -0.01,
                      "sql_sft_wrong": 31, "sql_above_wrong_sft": 15}}
    lines = study.conclusions(_table(), heldout, pairs=[("base", "sft")])
    assert "(-0.01 SFT standard deviations): a policy that gave every reference answer would NOT meet" in lines[-2]
    assert "higher on 15 (48%; 50% is chance), so its score does NOT reliably tell" in lines[-1]
    heldout["reference"].update(gain_in_sft_std=0.8, sql_above_wrong_sft=28)
    lines = study.conclusions(_table(), heldout, pairs=[("base", "sft")])
    assert "would meet the target" in lines[-2] and lines[-1].endswith(
        "ranks a correct query above SFT's wrong ones on new prompts (that alone does not show it tells a policy's right "
        "queries from its wrong ones).")
    assert lines[-1].startswith("On the 31 held-out SQL prompts where SFT's query is wrong (wrong rows")
    heldout["samples_per_prompt"] = 4  # then "wrong" means none of SFT's four queries is right
    line = study.conclusions(_table(), heldout, pairs=[("base", "sft")])[-1]
    assert line.startswith("On the 31 held-out SQL prompts where none of SFT's 4 queries is right (wrong rows")


def test_fixed_replies_show_whether_the_score_can_be_raised_without_answering(monkeypatch):
    """Each fixed reply is scored on every prompt; the per-task pick takes each task's best reply."""
    from llamalab.train import heldout, reward

    # a stand-in reward model: the reply's length, plus 10 on the clickbait prompt (the prompt's last word)
    def fake(rm, tok, prompts, resp):
        return [len(r[-1]["content"]) + (10.0 if p[-1]["content"] == "clickbait" else 0.0)
                for p, r in zip(prompts, resp, strict=True)]

    monkeypatch.setattr(reward, "score", fake)
    tasks = ["sql", "sql", "clickbait", "joke"]
    sft_scores = [4.0, 1.0, 11.0, 30.0]
    report = {"policies": {"sft": {"mean_score": statistics.fmean(sft_scores), "std_score": 2.0, "mean_kl": 0.0,
                                   "samples": [{"score": x} for x in sft_scores]}}}
    ctx = {"prompts": [[{"role": "user", "content": t}] for t in tasks], "tasks": tasks, "rm": None, "rm_tok": None}
    const = heldout.constant_answers(ctx, report, answers=("no", "yes!"))
    no, yes = const["answers"]["no"], const["answers"]["yes!"]
    assert no["scores"] == [2.0, 2.0, 12.0, 2.0] and yes["scores"] == [4.0, 4.0, 14.0, 4.0]
    assert no["gain_in_sft_std"] == pytest.approx((4.5 - 11.5) / 2.0)
    assert (no["above_sft"], yes["above_sft"]) == (2, 2)  # prompts 1 and 2; a tie (4.0 vs 4.0) is not above
    assert yes["by_task"] == {"clickbait": 14.0, "joke": 4.0, "sql": 4.0}
    assert const["best_by_task"] == {"clickbait": "yes!", "joke": "yes!", "sql": "yes!"}
    assert const["best_by_task_gain_in_sft_std"] == pytest.approx((6.5 - 11.5) / 2.0)
    line = heldout.summary_lines({"n_prompts": 4, "temperature": 0.7, "sft_within_task_std": 1.0, **report,
                                  "constant_answers": const})[-1]
    assert line.startswith("one fixed answer to every prompt, gain in SFT SD: 'no' -3.50 (above SFT on 2/4)")
    assert line.endswith("picked on these prompts) -2.50")

    summary = {"n_prompts": 4, "policies": report["policies"], "constant_answers": const}
    assert study.conclusions(_table(), summary, pairs=[("base", "sft")])[-1].endswith(
        "(-2.50 SFT standard deviations; one fixed reply per task -2.50): no fixed reply outscores SFT's answers.")
    sft_scores[3] = 3.0  # now the joke answer is worse than "yes!", and the fixed replies win
    report["policies"]["sft"].update(mean_score=statistics.fmean(sft_scores), samples=[{"score": x} for x in sft_scores])
    const = heldout.constant_answers(ctx, report, answers=("no", "yes!"))
    assert const["best_by_task_gain_in_sft_std"] == pytest.approx((6.5 - 4.75) / 2.0)
    line = study.conclusions(_table(), {**summary, "constant_answers": const}, pairs=[("base", "sft")])[-1]
    assert "scores up to 6.50 ('yes!') against SFT's 4.75 (+0.88 SFT standard deviations" in line
    assert line.endswith("not by itself evidence of a better model, and such a policy alone would meet the target.")


def test_several_samples_per_prompt_keep_the_unit_of_single_samples():
    """With n responses per prompt, the SD that gains are measured in is that of single SFT responses
    (not of per-prompt means, which is smaller and would inflate every gain), on the tasks RL trains on
    and within tasks alike."""
    from llamalab.train import heldout

    tasks = ["sql", "sql", "joke", "clickbait"]
    sft = [{"score": 2.0, "kl": 0.0, "scores": [1.0, 3.0]}, {"score": 2.0, "kl": 0.0, "scores": [0.0, 4.0]},
           {"score": 5.0, "kl": 0.0, "scores": [5.0, 5.0]}, {"score": 9.0, "kl": 0.0, "scores": [9.0, 9.0]}]
    ppo = [{"score": 3.0, "kl": 1.0, "scores": [3.0, 3.0]}, {"score": 4.0, "kl": 1.0, "scores": [4.0, 4.0]},
           {"score": 5.0, "kl": 2.0, "scores": [5.0, 5.0]}, {"score": 9.0, "kl": 0.0, "scores": [9.0, 9.0]}]
    sub = heldout.trained_tasks_gain({"policies": {"sft": {"samples": sft}, "ppo": {"samples": ppo}}}, tasks,
                                     ["sql", "joke"])
    single = statistics.pstdev([1.0, 3.0, 0.0, 4.0, 5.0, 5.0])  # 1.86; the three means' SD would be 1.41
    assert sub["sft_std_score"] == pytest.approx(single)
    assert sub["policies"]["ppo"]["gain_in_sft_std"] == pytest.approx((4.0 - 3.0) / single)
    flat_tasks, flat = heldout._flat(tasks, sft)
    assert flat_tasks == ["sql"] * 4 + ["joke"] * 2 + ["clickbait"] * 2 and flat[:4] == [1.0, 3.0, 0.0, 4.0]
    assert heldout.within_task_std(flat_tasks, flat) == pytest.approx((10 / 8) ** 0.5)  # sql +-1, +-2 round 2
    assert heldout._flat(tasks, [{"score": x} for x in (1.0, 2.0, 3.0, 4.0)]) == (tasks, [1.0, 2.0, 3.0, 4.0])


def test_degenerate_detection():
    assert study.is_degenerate("")
    assert study.is_degenerate("the cat the cat the cat the cat the cat the cat")
    assert not study.is_degenerate("SELECT COUNT(DISTINCT user_id) FROM events WHERE rpc_method = 'Login';")
    assert study.point_biserial([1.0, 2.0, 3.0, 4.0], [False, False, True, True]) > 0.8
    assert study.point_biserial([1.0, 2.0], [True, False]) is None


def test_gain_on_the_tasks_rl_trains_on_leaves_the_other_prompts_out():
    from llamalab.train import heldout

    tasks = ["sql", "sql", "joke", "clickbait"]
    report = {"policies": {
        "sft": {"samples": [{"score": s, "kl": 0.0} for s in (1.0, 3.0, 5.0, 100.0)]},
        "ppo": {"samples": [{"score": s, "kl": k} for s, k in ((3.0, 1.0), (5.0, 1.0), (5.0, 2.0), (0.0, 9.0))]}}}
    sub = heldout.trained_tasks_gain(report, tasks, ["sql", "joke"])
    std = statistics.pstdev([1.0, 3.0, 5.0])
    assert (sub["n"], sub["tasks"], sub["left_out"]) == (3, ["joke", "sql"], ["clickbait"])
    assert sub["sft_std_score"] == pytest.approx(std)
    ppo = sub["policies"]["ppo"]
    assert ppo["gain_in_sft_std"] == pytest.approx((13 / 3 - 3.0) / std)  # the clickbait prompt's -100 is not in it
    assert ppo["gain_se_in_sft_std"] == pytest.approx(statistics.stdev([2.0, 2.0, 0.0]) / 3 ** 0.5 / std)
    assert ppo["mean_kl"] == pytest.approx(4 / 3)
    assert heldout.trained_tasks_gain(report, tasks, None) is None  # RL trains on every task
    assert heldout.trained_tasks_gain(report, tasks, ["sql", "joke", "clickbait"]) is None
    line = next(x for x in heldout.summary_lines({
        "n_prompts": 4, "temperature": 0.7, "sft_within_task_std": 1.0, "trained_tasks": sub,
        "policies": {"sft": {"mean_score": 27.25, "std_score": 1.0, "mean_kl": 0.0}}}) if "tasks RL trains on" in x)
    assert line == (f"on the 3 prompts of the tasks RL trains on (joke, sql; not clickbait), SFT score SD {std:.2f}: "
                    f"gain ppo {(13 / 3 - 3.0) / std:+.2f} ± {ppo['gain_se_in_sft_std']:.2f} at 1.33 nats (in that SD)")


def test_sql_shapes_count_aggregate_answers_and_their_scores():
    """Only SQL prompts with a reference count; each response is read (several per prompt or one),
    the shapes are matched case- and space-insensitively, and a shape's name in a word does not count;
    the within-prompt comparison uses only prompts with answers of both kinds."""
    from llamalab.train import heldout

    rows = [{"task": "sql", "reference": "SELECT COUNT (DISTINCT user_id) FROM events"},
            {"task": "sql", "reference": "SELECT rpc_method FROM events GROUP  BY 1 HAVING COUNT(*) > 2"},
            {"task": "sql", "reference": "SELECT * FROM events"},
            {"task": "sql", "reference": None},  # no reference: left out
            {"task": "joke", "reference": "a joke that says GROUP BY"}]
    multi = {"samples": [
        {"responses": ["select count(  distinct x) from t", "select x from t"], "scores": [5.0, 1.0]},
        {"responses": ["select a from t group by a", "select a from t group by a having count(*) > 1"],
         "scores": [4.0, 6.0]},
        {"responses": ["select countdistinct from t", "select * from t"], "scores": [2.0, 3.0]},
        {"responses": ["select count(distinct x) from t"] * 2, "scores": [100.0, 100.0]},
        {"responses": ["group by"] * 2, "scores": [100.0, 100.0]}]}
    single = {"samples": [{"response": r, "score": s} for r, s in
                          (("select 1", 1.0), ("select 2", 2.0), ("select 3", 3.0), ("group by", 9.0), ("x", 9.0))]}
    out = heldout.sql_shapes(rows, {"policies": {"sft": multi, "ppo": single}})
    assert out["n_prompts"] == 3
    assert out["reference"] == {"any": 2, "COUNT(DISTINCT": 1, "GROUP BY": 1, "HAVING": 1}
    assert out["policies"]["sft"] == {"n": 6, "any": 3, "COUNT(DISTINCT": 1, "GROUP BY": 2, "HAVING": 1,
                                      "both_prompts": 1, "both_mean_diff": 4.0, "both_higher": 1}
    assert out["policies"]["ppo"] == {"n": 3, "any": 0, "COUNT(DISTINCT": 0, "GROUP BY": 0, "HAVING": 0,
                                      "both_prompts": 0, "both_mean_diff": None, "both_higher": 0}
    assert heldout.sql_shape_line(out) == (
        "SQL answers with COUNT(DISTINCT, GROUP BY or HAVING: reference queries 2/3 (COUNT(DISTINCT 1, GROUP BY 1, "
        "HAVING 1); sft 3/6 (COUNT(DISTINCT 1, GROUP BY 2, HAVING 1; on the 1 prompts with both kinds, +4.00 with "
        "one, higher on 1); ppo 0/3 (COUNT(DISTINCT 0, GROUP BY 0, HAVING 0)")
    assert heldout.sql_shapes(rows[3:], {"policies": {"sft": multi}}) is None


def test_conclusions_flag_a_policy_that_overuses_aggregate_sql_the_reward_model_pays_for():
    def policy(n, any_, diff=None, both=0, higher=0):
        return {"n": n, "any": any_, "both_prompts": both, "both_mean_diff": diff, "both_higher": higher}

    shapes = {"n_prompts": 4, "reference": {"any": 2}, "policies": {
        "sft": policy(8, 2, 0.5, 3, 2), "ppo": policy(8, 7), "grpo": policy(8, 3)}}  # grpo: no more than references
    heldout = {"n_prompts": 8, "policies": {}, "sql_shapes": shapes}
    lines = [x for x in study.conclusions(_table(), heldout) if "COUNT(DISTINCT" in x]
    assert lines == [
        "On the 3 held-out SQL prompts where SFT wrote queries with COUNT(DISTINCT, GROUP BY or HAVING and queries "
        "without, the reward model scores those with one +0.50 against those without, on average over the prompts "
        "(higher on 2 of them): it pays for the shape.",
        "7 of ppo's 8 answers to the 4 SQL prompts (88%) use COUNT(DISTINCT, GROUP BY or HAVING (SFT's: 25%; the "
        "reference queries: 50%): it writes aggregate queries more often than the questions call for, and the reward "
        "model pays for them, a sign of reward hacking.",
        "3 of grpo's 8 answers to the 4 SQL prompts (38%) use COUNT(DISTINCT, GROUP BY or HAVING (SFT's: 25%; the "
        "reference queries: 50%)."]
    shapes["policies"]["sft"] = policy(8, 2, 0.5, 3, 1)  # higher on only 1 of 3: not paid for
    lines = [x for x in study.conclusions(_table(), heldout) if "COUNT(DISTINCT" in x]
    assert lines[0].endswith("(higher on 1 of them): it does NOT pay for the shape.")
    assert lines[1].endswith("(SFT's: 25%; the reference queries: 50%).")
    assert not [x for x in study.conclusions(_table(), {**heldout, "sql_shapes": None}) if "COUNT(DISTINCT" in x]


def test_rescore_refuses_what_is_not_a_heldout_report_before_loading_a_model(tmp_path):
    from llamalab.config import load_profile
    from llamalab.train import heldout

    prof = load_profile("smoke")
    for bad, what in (({"policies": {}}, "n_prompts"), ({"n_prompts": 2, "policies": {"ppo": {}}}, "sft"),
                      ({"n_prompts": 1, "policies": {"sft": {"samples": [{"prompt": "q"}]}}}, "samples")):
        with pytest.raises(ValueError, match=f"not a held-out report with SFT's responses .*: no '{what}'"):
            heldout.rescore(prof, bad, tmp_path / "no-model-here")
    report = {"n_prompts": 1, "policies": {"sft": {"samples": [{"prompt": "another question", "response": "x"}]}}}
    with pytest.raises(ValueError, match="held-out prompt 1 is not the smoke profile's"):
        heldout.rescore(prof, report, tmp_path / "no-model-here")


def test_reward_vs_correctness_reports_the_score_of_correct_and_of_valid_sql(monkeypatch):
    """Per model and over all models: the reward model's mean score for correct and wrong queries, for
    valid and invalid ones, and the score's correlation with each; only the SQL probe counts."""
    from llamalab.train import common, reward

    # a stand-in reward model: the score is the completion's length, so every figure can be worked out
    monkeypatch.setattr(common, "require_stage", lambda profile, stage, what="merged": "rm-dir")
    monkeypatch.setattr(reward, "load_reward_model", lambda path, dtype=None, device=None: (None, None))
    monkeypatch.setattr(reward, "score", lambda rm, tok, prompts, completions: [float(len(c)) for c in completions])

    def item(completion, correct, valid):
        return {"prompt": "p", "completion": completion, "correct": correct, "valid_sql": valid}

    a = [item("x" * 2, True, True), item("x" * 4, False, True), item("x" * 9, False, False)]
    b = [item("x" * 20, False, False), item("x" * 6, True, True), item("x" * 8, False, True)]
    results = [{"probe": "sql", "label": "sft", "items": a}, {"probe": "sql", "label": "ppo", "items": b},
               {"probe": "clickbait", "label": "sft", "items": [item("x" * 99, True, True)]}]
    df = study.reward_vs_correctness(object(), results)
    assert list(df.index) == ["sft", "ppo", "all models"]
    assert df.loc["sft", "n"] == 3 and df.loc["sft", "correct"] == 1 and df.loc["sft", "valid"] == 2
    assert df.loc["sft", "mean_reward_correct"] == 2.0 and df.loc["sft", "mean_reward_wrong"] == 6.5
    assert df.loc["sft", "mean_reward_valid"] == 3.0 and df.loc["sft", "mean_reward_invalid"] == 9.0
    assert df.loc["ppo", "mean_reward_invalid"] == 20.0 and df.loc["ppo", "mean_reward_valid"] == 7.0
    scores = [2.0, 4.0, 9.0, 20.0, 6.0, 8.0]
    assert df.loc["all models", "correlation"] == pytest.approx(statistics.correlation(scores, [1, 0, 0, 0, 1, 0]))
    assert df.loc["all models", "correlation_valid"] == pytest.approx(
        statistics.correlation(scores, [1, 1, 0, 0, 1, 1]))
    assert df.loc["all models", "correlation_valid"] < 0  # here the invalid queries score higher
    assert df.loc["all models", "mean_reward_invalid"] == 14.5 and df.loc["all models", "valid"] == 4


def test_heldout_counts_sql_that_runs_apart_from_sql_that_is_right():
    """A policy can raise the reward model's score with SQL that does not run: the held-out report counts
    valid queries beside correct ones, per round and as a share over rounds, and says so in its lines."""
    from llamalab.train import heldout

    gold = "SELECT COUNT(*) FROM customers WHERE country = 'Poland';"
    rows = [{"task": "sql", "schema": "shop", "reference": gold}] * 3 + [{"task": "joke", "reference": "a pun"}]
    right, runs_wrong = "SELECT count(*) FROM customers WHERE country='Poland'", "SELECT COUNT(*) FROM customers;"
    broken = "SELECT country FROM customers GROUP BY country DESC;"  # the probe's parser rejects it: invalid
    one = [right, runs_wrong, broken, "SELECT 1;"]
    assert heldout.sql_check(rows, one) == [{"valid": True, "correct": True}, {"valid": True, "correct": False},
                                            {"valid": False, "correct": False}, None]
    assert heldout._sql_rounds(rows, [one]) == ([True, False, False, None], [True, True, False, None])
    two = [broken, "No SQL here.", runs_wrong, "x"]
    assert heldout._sql_rounds(rows, [one, two]) == ([0.5, 0.0, 0.0, None], [0.5, 0.5, 0.5, None])
    # a saved report's entries (one response per prompt, or several) back into rounds
    assert heldout._texts([{"response": "a"}, {"response": "b"}]) == [["a", "b"]]
    assert heldout._texts([{"response": "a", "responses": ["a", "c"]}, {"response": "b", "responses": ["b", "d"]}]) \
        == [["a", "b"], ["c", "d"]]

    def report(n, correct, valid):
        pol = {"mean_score": 1.0, "std_score": 1.0, "mean_kl": 0.0, "sql_correct": correct, "sql_valid": valid}
        return {"n_prompts": 4, "temperature": 0.7, "sft_within_task_std": 1.0, "samples_per_prompt": n,
                "policies": {"sft": pol}}

    assert "SQL valid 2/3, correct 1/3" in heldout.summary_lines(report(1, *heldout._sql_rounds(rows, [one])))[1]
    lines = heldout.summary_lines(report(2, *heldout._sql_rounds(rows, [one, two])))
    assert "SQL valid 1.50/3, correct 0.50/3 (mean over 2 samples)" in lines[1]


def test_conclusions_count_heldout_sql_that_runs_and_that_is_right_beside_sft():
    heldout = {"n_prompts": 4, "policies": {
        "sft": {"mean_score": 1.0, "std_score": 2.0, "mean_kl": 0.0, "gain_in_sft_std": 0.0,
                "sql_correct": [True, False, False, None], "sql_valid": [True, True, False, None]},
        "ppo": {"mean_score": 2.5, "std_score": 2.0, "mean_kl": 3.2, "gain_in_sft_std": 0.75,
                "sql_correct": [False, False, False, None], "sql_valid": [True, True, True, None]}}}
    lines = study.conclusions(_table(), heldout, pairs=[("base", "sft")])
    assert lines[-1] == ("On the 3 held-out SQL prompts with a reference query, ppo's queries run on 3 (more than "
                         "SFT's 2) and return the reference query's rows on 0 (FEWER than SFT's 1): counted by running "
                         "them, not by the reward model.")
    assert lines[-2].endswith("was met.")
    heldout["samples_per_prompt"] = 4
    heldout["policies"]["ppo"].update(sql_correct=[0.25, 0.75, 0.0, None], sql_valid=[0.5, 0.5, 1.0, None])
    assert lines[-1] != (line := study.conclusions(_table(), heldout)[-1])
    assert line.startswith("On the 3 held-out SQL prompts with a reference query (counting the mean over 4 samples "
                           "per prompt), ppo's queries run on 2.00 (as many as SFT's 2.00) and return the reference "
                           "query's rows on 1.00 (as many as SFT's 1.00):")
    del heldout["policies"]["sft"]["sql_valid"]  # a report saved before validity was counted: correctness only
    assert "ppo's queries return the reference query's rows on 1.00" in study.conclusions(_table(), heldout)[-1]
    del heldout["policies"]["ppo"]["sql_correct"]
    assert "held-out SQL prompts with a reference" not in study.conclusions(_table(), heldout)[-1]


def test_heldout_policy_table_keeps_each_policys_single_figures():
    from llamalab.train import heldout

    report = {"policies": {
        "sft": {"mean_score": 1.0, "mean_kl": 0.0, "samples": [{"score": 1.0}], "by_task": {"sql": {"n": 1}},
                "sql_correct": [True, None], "sql_valid": [True, None]},
        "ppo": {"mean_score": 2.0, "mean_kl": 3.5, "gain_in_sft_std": 0.5, "samples": [{"score": 2.0}],
                "by_task": {"sql": {"n": 1}}, "sql_correct": [False, None], "sql_valid": [True, None]}}}
    df = heldout.policy_table(report)
    assert list(df.index) == ["sft", "ppo"]
    assert sorted(df.columns) == ["gain_in_sft_std", "mean_kl", "mean_score"]
    assert df.loc["ppo", "mean_kl"] == 3.5 and df.loc["sft", "gain_in_sft_std"] != df.loc["sft", "gain_in_sft_std"]


def test_value_baseline_scores_the_sequence_the_reward_model_scores_with_a_sentencepiece_tokenizer():
    """heldout.response_ids: the answer inside the chat template, not tokenized on its own. With LLaMA's
    SentencePiece-style tokenizer a text tokenized alone starts with a word boundary ("▁SELECT") that the
    same text after the template's newline does not have ("SELECT")."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast

    from llamalab import models
    from llamalab.train import common, heldout

    raw = Tokenizer(tok_models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    raw.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    raw.train_from_iterator(["SELECT user_id FROM events", "### User:", "### Assistant:", "Which users?"] * 4,
                            trainer=trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                                        show_progress=False))
    tok = models.ensure_chat_template(PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>",
                                                              bos_token="<s>", eos_token="</s>"))
    prompt, text = [{"role": "user", "content": "Which users?"}], "SELECT user_id FROM events"
    ids = heldout.response_ids(tok, prompt, text)
    assert ids == common.chat_ids(tok, [*prompt, {"role": "assistant", "content": text}])
    query = common.chat_ids(tok, prompt, add_generation_prompt=True)
    assert ids[: len(query)] == query and ids[-1] == tok.eos_token_id
    alone = query + tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert alone != ids  # what value_baseline scored before
