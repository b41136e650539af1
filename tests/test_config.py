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


def test_env_overrides(monkeypatch):
    monkeypatch.setenv("LLAMALAB_PROFILE", "smoke")
    monkeypatch.setenv("LLAMALAB_MODEL", "/some/llama-7b")
    prof = config.load_profile()
    assert prof.name == "smoke"
    assert prof.model.spec == "/some/llama-7b"
    assert prof.probes.models == ["/some/llama-7b"]
