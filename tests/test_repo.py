"""The set-up contract: two README commands, CI calls the README's test command, pins in one place."""

import re
import tomllib

from llamalab import paths

ROOT = paths.repo_root()


def test_readme_quick_start_is_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start\s+```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make run", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)


def test_exact_pins_live_in_constraints_and_ranges_in_pyproject():
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().split() if "==" in line)
    assert pins["torch"] == "2.13.0" and pins["trl"] == "1.12.0"
    for pkg in ("transformers", "peft", "datasets", "accelerate", "gguf", "jupyterlab", "ipykernel", "ipywidgets",
                "matplotlib", "pandas", "nbmake", "papermill", "duckdb", "sqlglot"):
        assert pkg in pins, pkg
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_dep = next(d for d in deps if d.startswith("torch"))
    assert "==" not in torch_dep  # Colab's preinstalled CUDA torch must satisfy it
    assert "trl==1.12.0" in deps  # the last TRL with PPOTrainer


def test_every_data_folder_has_a_readme():
    for d in [paths.data_dir(), *[p for p in paths.data_dir().rglob("*") if p.is_dir()]]:
        if any(f.suffix in (".jsonl", ".sql") for f in d.iterdir()):
            assert (d / "README.md").is_file() or (d.parent / "README.md").is_file(), d
