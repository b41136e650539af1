import json

import pytest

from llamalab import probes
from llamalab.__main__ import main
from llamalab.data import DataError

CONTRACT_KEYS = {"probe", "model", "adapter", "profile", "summary", "items"}


def test_run_probe_with_a_model_follows_the_results_contract(tiny):
    model, tok = tiny
    res = probes.run_probe("clickbait", model, tok, limit=5, batch_size=4, model_spec="tiny", progress=False)
    assert CONTRACT_KEYS <= set(res)
    assert res["summary"]["n"] == len(res["items"]) == 5
    for it in res["items"]:
        assert it["prompt"].endswith(f"5) {it['title']}\nClickbait:")
        assert {"id", "completion", "answer", "format_ok", "correct"} <= set(it)
        assert "\n" not in it["completion"].strip()  # cut at the end of the answer line


def test_limit_is_a_deterministic_sample():
    items = [{"id": i} for i in range(50)]
    a, b = probes.select(items, 10), probes.select(items, 10)
    assert a == b and len(a) == 10 and a != items[:10]
    assert probes.select(items, None) == items


def test_chat_prompts_use_the_template_and_are_recorded(tiny):
    model, tok = tiny
    res = probes.run_probe("clickbait", model, tok, limit=2, chat=True, progress=False)
    assert res["prompt_format"] == "chat"
    assert all(it["prompt"].startswith("<|im_start|>user\n") for it in res["items"])


def _predictions(tmp_path, rows):
    p = tmp_path / "preds.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_predictions_are_scored_without_a_model(tmp_path):
    items = probes.get_probe("clickbait").load_items(probes.default_data("clickbait"))
    rows = [{"id": it["id"], "completion": " " + it["label"]} for it in items[:6]]
    rows[0]["completion"] = " " + ("no" if items[0]["label"] == "yes" else "yes")
    res = probes.run_probe("clickbait", predictions=_predictions(tmp_path, rows))
    assert res["summary"]["n"] == 6
    assert res["summary"]["accuracy"] == pytest.approx(5 / 6)
    assert res["summary"]["format_ok_rate"] == 1.0


def test_prediction_with_unknown_id_names_file_and_line(tmp_path):
    p = _predictions(tmp_path, [{"id": "cb-001", "completion": "yes"}, {"id": "nope", "completion": "no"}])
    with pytest.raises(DataError, match=r"preds.jsonl:2: field 'id'"):
        probes.run_probe("clickbait", predictions=p)


def test_cli_probe_writes_results_json(tmp_path, capsys):
    items = probes.get_probe("clickbait").load_items(probes.default_data("clickbait"))
    preds = _predictions(tmp_path, [{"id": it["id"], "completion": "yes"} for it in items[:4]])
    out = tmp_path / "r.json"
    assert main(["probe", "clickbait", "--predictions", str(preds), "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert CONTRACT_KEYS <= set(saved) and saved["summary"]["n"] == 4
    expected = sum(it["label"] == "yes" for it in items[:4]) / 4
    assert saved["summary"]["accuracy"] == pytest.approx(expected)


def test_cli_unknown_model_spec_lists_specs(capsys):
    assert main(["probe", "clickbait", "--model", "llama please", "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown model spec" in err and "'default'" in err


def test_cli_bad_data_file_names_file_line_field(tmp_path, capsys):
    bad = tmp_path / "cb.jsonl"
    bad.write_text('{"title": "A title", "label": "yes"}\n{"title": "B", "label": "perhaps"}\n')
    preds = _predictions(tmp_path, [{"id": "line-1", "completion": "yes"}])
    assert main(["probe", "clickbait", "--data", str(bad), "--predictions", str(preds)]) == 2
    assert f"{bad}:2: field 'label'" in capsys.readouterr().err


def test_a_saved_result_is_reused_only_under_the_same_weights_data_settings_and_code(tmp_path, monkeypatch):
    from llamalab.models import load_model

    model, tok = load_model("tiny")
    first = probes.run_probe("clickbait", model, tok, limit=4, batch_size=2, progress=False, reuse_dir=tmp_path)
    assert first["key"] and "reused_from" not in first
    saved = probes.save_result(first, tmp_path / "clickbait__first.json")

    again, again_tok = load_model("tiny")  # another copy of the same (seeded) weights
    second = probes.run_probe("clickbait", again, again_tok, limit=4, batch_size=2, progress=False,
                              model_spec="copy", reuse_dir=tmp_path)
    assert second["reused_from"] == str(saved) and second["model"] == "copy"
    assert [i["completion"] for i in second["items"]] == [i["completion"] for i in first["items"]]
    assert second["key"] == first["key"]

    def fresh(**kw):
        args = {"limit": 4, "batch_size": 2, "progress": False, "reuse_dir": tmp_path, **kw}
        res = probes.run_probe("clickbait", args.pop("model", again), tok, **args)
        assert "reused_from" not in res and res["key"] != first["key"], kw
        return res

    fresh(limit=3)
    fresh(chat=True)
    fresh(batch_size=4)
    data = tmp_path / "clickbait.jsonl"
    lines = probes.default_data("clickbait").read_text(encoding="utf-8").splitlines(keepends=True)
    data.write_text(lines[1] + lines[0] + "".join(lines[2:]), encoding="utf-8")  # same items, another order
    fresh(data=data)
    import torch

    changed, _ = load_model("tiny")
    with torch.no_grad():
        next(changed.parameters())[0, 0] += 1e-3
    fresh(model=changed)
    stops_elsewhere, _ = load_model("tiny")  # the same weights, another stop token for generation
    stops_elsewhere.generation_config.eos_token_id = 7
    fresh(model=stops_elsewhere)
    monkeypatch.setattr(probes, "code_digest", lambda name: "edited scoring code")
    fresh()


def test_study_reuses_a_result_saved_under_another_label(tmp_path, monkeypatch, tiny):
    from llamalab import config, study

    monkeypatch.setenv("LLAMALAB_RUNS", str(tmp_path))
    profile = config.load_profile("smoke")
    entries = [study.Entry("base", "tiny"), study.Entry("again", "tiny")]
    first, second = study.evaluate(profile, entries, names=("clickbait",), limits={"clickbait": 3}, progress=False)
    assert "reused_from" not in first and second["reused_from"] == first["path"]
    assert second["label"] == "again" and second["items"] == first["items"]
    third, = study.evaluate(profile, entries[1:], names=("clickbait",), limits={"clickbait": 3}, progress=False,
                            reuse=False)
    assert "reused_from" not in third and third["items"] == first["items"]


def test_a_model_whose_weights_cannot_be_read_back_generates_and_reuses_nothing(tmp_path, monkeypatch, tiny):
    model, tok = tiny
    old = probes.run_probe("clickbait", model, tok, limit=2, progress=False)
    old.pop("key")  # a result saved before results had keys
    probes.save_result(old, tmp_path / "clickbait__old.json")

    def unreadable(m):
        raise NotImplementedError("Cannot copy out of meta tensor")

    monkeypatch.setattr(probes, "model_digest", unreadable)
    res = probes.run_probe("clickbait", model, tok, limit=2, progress=False, reuse_dir=tmp_path)
    assert res["key"] is None and "reused_from" not in res and res["summary"]["n"] == 2
    assert probes.find_result(tmp_path, "clickbait", None) is None


def test_study_hashes_each_models_weights_once_for_all_its_probes(tmp_path, monkeypatch, tiny):
    from llamalab import config, study

    monkeypatch.setenv("LLAMALAB_RUNS", str(tmp_path))
    calls = []
    real = probes.model_digest
    monkeypatch.setattr(probes, "model_digest", lambda m: calls.append(1) or real(m))
    profile = config.load_profile("smoke")
    entries = [study.Entry("base", "tiny"), study.Entry("again", "tiny")]
    res = study.evaluate(profile, entries, names=("clickbait", "sql"), limits={"clickbait": 2, "sql": 1},
                         progress=False)
    assert len(calls) == 2  # one per loaded model, not one per (model, probe)
    model, tok = tiny
    direct = probes.run_probe("clickbait", model, tok, limit=2, batch_size=profile.generation.batch_size,
                              progress=False)
    assert [r["key"] for r in res if r["probe"] == "clickbait"] == [direct["key"]] * 2
    assert res[3]["reused_from"] == res[1]["path"]  # the second model's sql result is the first's


def test_study_prompts_a_base_model_without_a_chat_template_in_the_format_sft_trains_it_in(tmp_path, monkeypatch):
    """Notebooks 05 and 08 probe the base model with the chat template beside SFT; LLaMA-7B has none."""
    from llamalab import config, models, study

    monkeypatch.setenv("LLAMALAB_RUNS", str(tmp_path))
    monkeypatch.setattr(models, "CHATML_TEMPLATE", None)  # the tiny model's tokenizer now has no template
    profile = config.load_profile("smoke")
    with pytest.raises(ValueError, match="no chat template"):  # a probe on its own still refuses
        model, tok = models.load_model("tiny")
        probes.run_probe("clickbait", model, tok, limit=1, chat=True, progress=False)
    plain, chat = study.evaluate(profile, [study.Entry("base", "tiny"), study.Entry("base (chat)", "tiny", chat=True)],
                                 names=("clickbait",), limits={"clickbait": 2}, progress=False)
    assert all("### User:" not in it["prompt"] for it in plain["items"])
    for it in chat["items"]:
        assert "### User:\n" + it["prompt_content"] + "\n\n### Assistant:\n" in it["prompt"]


def test_probes_and_the_study_load_models_in_the_profiles_probe_dtype(tmp_path, monkeypatch, capsys):
    """probes.dtype (fp32 in the cpu profile) wins over model.dtype wherever a probe loads a model:
    the study (notebooks 05, 08), run_for_profile (notebooks 02-04) and `llamalab probe --profile`."""
    from llamalab import config, models, study

    asked = []
    real = models.load_model
    monkeypatch.setattr(models, "load_model", lambda spec, dtype="auto", **kw: asked.append(dtype) or real(spec, **kw))
    monkeypatch.setenv("LLAMALAB_RUNS", str(tmp_path / "runs"))
    yaml_path = tmp_path / "p.yaml"
    yaml_path.write_text("model:\n  spec: tiny\n  dtype: float32\nprobes:\n  models: [tiny]\n  dtype: bfloat16\n"
                         "  limit:\n    clickbait: 2\n")
    profile = config.load_profile(yaml_path)
    assert profile.probe_dtype() == "bfloat16" and profile.probe_dtype("some/other-model") == "bfloat16"
    study.evaluate(profile, [study.Entry("base", "tiny"), study.Entry("sft", "tiny")], names=("clickbait",),
                   progress=False)
    probes.run_for_profile("clickbait", profile, progress=False, save=False, reuse=False)
    out = tmp_path / "cli.json"
    assert main(["probe", "clickbait", "--profile", str(yaml_path), "--out", str(out)]) == 0
    assert main(["probe", "clickbait", "--profile", str(yaml_path), "--dtype", "float32", "--out", str(out)]) == 0
    assert asked == ["bfloat16"] * 4 + ["float32"]  # --dtype on the command line still wins
    asked.clear()
    unset = config.apply_overrides(profile, ["probes.dtype=null"])  # null: the model's dtype, as before
    assert unset.probe_dtype() == "float32" and unset.probe_dtype("some/other-model") == "auto"
    study.evaluate(unset, [study.Entry("base", "tiny")], names=("clickbait",), progress=False)
    assert asked == ["float32"]
    with pytest.raises(config.ConfigError, match=r"--set: probes.dtype: 'fp8' is not null or one of"):
        config.apply_overrides(profile, ["probes.dtype=fp8"])
    yaml_path.write_text("probes:\n  dtype: half\n")
    with pytest.raises(config.ConfigError, match=r"p.yaml: probes.dtype: 'half' is not null or one of"):
        config.load_profile(yaml_path)
    assert config.load_profile("cpu").probe_dtype() == "float32"  # the cpu profile's probes run in fp32
