from pathlib import Path

from llamalab import paths


def test_home_and_runs_follow_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LLAMALAB_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("LLAMALAB_RUNS", str(tmp_path / "out"))
    assert paths.home() == tmp_path / "cache"
    assert paths.models_cache() == tmp_path / "cache" / "models"
    assert paths.stage_dir("cpu", "sft") == tmp_path / "out" / "cpu" / "sft"


def test_defaults_do_not_depend_on_cwd(monkeypatch, tmp_path):
    monkeypatch.delenv("LLAMALAB_HOME", raising=False)
    monkeypatch.delenv("LLAMALAB_RUNS", raising=False)
    before = (paths.home(), paths.runs_dir(), paths.configs_dir(), paths.data_dir())
    monkeypatch.chdir(tmp_path)
    assert (paths.home(), paths.runs_dir(), paths.configs_dir(), paths.data_dir()) == before
    assert paths.home() == Path.home() / ".cache" / "llamalab"


def test_repository_layout_is_found():
    root = paths.repo_root()
    assert root is not None and (root / "pyproject.toml").is_file()
    assert (paths.configs_dir() / "cpu.yaml").is_file()
    assert paths.runs_dir() == root / "runs" or paths.runs_dir().is_absolute()
    assert paths.notebooks_dir() == root / "notebooks"
