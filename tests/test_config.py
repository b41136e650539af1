import pytest

from llamalab import config


@pytest.mark.parametrize("name", ["smoke", "cpu", "a100"])
def test_profiles_load_into_typed_objects(name):
    prof = config.load_profile(name)
    assert prof.name == name
    assert isinstance(prof.model, config.ModelConfig)
    assert isinstance(prof.generation.batch_size, int) and prof.generation.batch_size > 0
    assert set(prof.probes.limit) == {"jokes", "clickbait", "sql"}


def test_profiles_differ_where_they_should():
    smoke, cpu, a100 = (config.load_profile(n) for n in ("smoke", "cpu", "a100"))
    assert smoke.probes.limit["clickbait"] and cpu.probes.limit["clickbait"] is None
    assert smoke.model.spec == cpu.model.spec == "default"
    assert a100.model.spec != "default" and a100.model.dtype == "bfloat16"


def test_unknown_profile_names_available_ones():
    with pytest.raises(config.ConfigError, match=r"unknown profile 'nope'.*smoke"):
        config.load_profile("nope")


def test_unknown_key_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  spec: default\n  dtpye: auto\n")
    with pytest.raises(config.ConfigError) as err:
        config.load_profile(bad)
    assert str(bad) in str(err.value) and "dtpye" in str(err.value)


def test_unknown_section_and_bad_type(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle:\n  spec: default\n")
    with pytest.raises(config.ConfigError, match="modle: unknown section"):
        config.load_profile(bad)
    bad.write_text("generation:\n  batch_size: eight\n")
    with pytest.raises(config.ConfigError, match="generation.batch_size"):
        config.load_profile(bad)
    bad.write_text("model:\n  dtype: float8\n")
    with pytest.raises(config.ConfigError, match="model.dtype"):
        config.load_profile(bad)
    bad.write_text("data:\n  pairs_train: 8\n  execution_pair: 4\n")  # a typo would silently turn it off
    with pytest.raises(config.ConfigError, match=r"bad.yaml: data.execution_pair: unknown key \(known: .*execution_pairs"):
        config.load_profile(bad)
    bad.write_text("data:\n  pairs_train: 8\n  execution_pairs: 4\n")
    assert config.load_profile(bad).extra["data"] == {"pairs_train": 8, "execution_pairs": 4}


def test_env_overrides(monkeypatch):
    monkeypatch.setenv("LLAMALAB_PROFILE", "smoke")
    monkeypatch.setenv("LLAMALAB_MODEL", "/some/llama-7b")
    prof = config.load_profile()
    assert prof.name == "smoke"
    assert prof.model.spec == "/some/llama-7b"
    assert prof.probes.models == ["/some/llama-7b"]


def test_set_overrides_change_a_copy_and_say_what_is_wrong():
    cpu = config.load_profile("cpu")
    prof = config.apply_overrides(cpu, ["rloo.max_steps=60", "rloo.learning_rate=1e-4", "generation.batch_size=4",
                                        "rl.tasks=[sql]"])
    assert prof.extra["rloo"]["max_steps"] == 60 and prof.extra["rloo"]["learning_rate"] == 1e-4
    assert prof.generation.batch_size == 4 and prof.extra["rl"]["tasks"] == ["sql"]
    assert prof.extra["rloo"]["beta"] == cpu.extra["rloo"]["beta"]  # the rest of the section is kept
    assert cpu.extra["rloo"]["max_steps"] == 20 and cpu.generation.batch_size == 16  # the original is untouched
    assert prof.overrides == {"rloo.max_steps": 60, "rloo.learning_rate": 1e-4, "generation.batch_size": 4,
                              "rl.tasks": ["sql"]}
    from llamalab.train.common import run_info

    assert run_info(prof, "rloo", {})["overrides"] == prof.overrides  # the run records what --set changed
    assert run_info(cpu, "rloo", {})["overrides"] == {}
    assert config.apply_overrides(cpu, None) is cpu
    for item, message in [("rloo.max_steps", "expected section.key=value"),
                          ("max_steps=3", "expected section.key=value"),
                          ("rlooo.max_steps=3", "unknown section 'rlooo'"),
                          ("generation.batch_size=eight", "generation.batch_size: 'eight' is not of type"),
                          ("generation.batchsize=8", "generation.batchsize: unknown key"),
                          ("data.pair_train=8", "data.pair_train: unknown key"),
                          ("model.dtype=float8", "model.dtype: 'float8' is not one of"),
                          ("rloo.max_steps=[1", "not valid YAML")]:
        with pytest.raises(config.ConfigError, match=message) as err:
            config.apply_overrides(cpu, [item])
        assert f"--set {item}" in str(err.value) or str(err.value).startswith("--set")


def test_a_misspelled_set_key_is_blamed_on_the_set_not_the_file():
    from llamalab.train.rloo import rloo_config

    prof = config.apply_overrides(config.load_profile("cpu"), ["rloo.max_stepz=3"])
    with pytest.raises(config.ConfigError, match=r"^--set: rloo.max_stepz: unknown key for RLOOConfig"):
        rloo_config(prof, prof.stage_dir("rloo"))
    prof = config.load_profile("cpu")
    prof.extra["rloo"]["max_stepz"] = 3  # the same mistake in the YAML names the file
    with pytest.raises(config.ConfigError, match=r"cpu.yaml: rloo.max_stepz: unknown key"):
        rloo_config(prof, prof.stage_dir("rloo"))


def test_heldout_section_is_checked_and_outside_every_fingerprint(tmp_path):
    from llamalab import paths
    from llamalab.train import common, heldout

    base = config.load_profile("smoke")
    assert heldout.samples_setting(base) == 1 and heldout.samples_setting(config.load_profile("cpu")) == 4
    text = (paths.configs_dir() / "smoke.yaml").read_text()
    for extra, message in (("heldout:\n  samples_per_promt: 4\n", "heldout.samples_per_promt: unknown key"),
                           ("heldout:\n  samples_per_prompt: 0\n", "expected a whole number >= 1, got 0"),
                           ("heldout:\n  samples_per_prompt: true\n", "got True")):
        path = tmp_path / "p.yaml"
        path.write_text(text + extra)
        with pytest.raises(config.ConfigError, match=message):
            heldout.samples_setting(config.load_profile(path))
    path.write_text(text + "heldout:\n  samples_per_prompt: 3\n")
    three = config.load_profile(path)
    assert heldout.samples_setting(three) == 3
    for stage in ("sft", "reward", "ppo", "rloo"):  # changing it retrains nothing
        assert common.fingerprint(three, stage, []) == common.fingerprint(base, stage, [])
