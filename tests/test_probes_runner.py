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
