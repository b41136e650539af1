"""Past one process, for real, with two CPU processes: the documented command
`accelerate launch --cpu --num_processes 2 -m llamalab train sft --profile smoke`.

accelerate 1.15 alone starts one process for it (multi-CPU goes through mpirun only), so
`llamalab train` starts the two through torch's launcher itself (llamalab/launch.py). The unit tests
below pin down when it does that and when it leaves the launch alone; the last test runs the command."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llamalab import launch

ROOT = Path(__file__).resolve().parents[1]

SINGLE_PROCESS_LAYOUT = {"adapter", "merged", "checkpoints", "metrics.json", "run_info.json"}
ACC = ["/venv/bin/python", "/venv/bin/accelerate", "launch"]
CPU_ENV = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


@pytest.mark.parametrize("env, cmdline, expected", [
    (CPU_ENV, ACC + ["--cpu", "--num_processes", "2", "-m", "llamalab", "train", "sft"], 2),
    (CPU_ENV, ["/usr/bin/python3", "-m", "accelerate.commands.launch", "--cpu", "--num_processes=3",
               "-m", "llamalab", "train", "sft"], 3),
    (CPU_ENV, ["python", "-m", "accelerate.commands.accelerate_cli", "launch", "--cpu", "--num_processes", "2",
               "train.py"], 2),
    # one process asked for: nothing to do
    (CPU_ENV, ACC + ["--cpu", "--num_processes", "1", "-m", "llamalab", "train", "sft"], None),
    # mpirun starts the processes itself
    (CPU_ENV, ACC + ["--cpu", "--num_processes", "2", "--mpirun_hostfile", "hosts", "-m", "llamalab", "train",
                     "sft"], None),
    # already one of torchrun's processes (our own relaunch included)
    ({**CPU_ENV, "WORLD_SIZE": "2"}, ACC + ["--cpu", "--num_processes", "2", "-m", "llamalab"], None),
    # not a CPU launch, or not started by accelerate at all
    ({"MASTER_ADDR": "127.0.0.1"}, ACC + ["--num_processes", "2", "-m", "llamalab"], None),
    (CPU_ENV, ["/usr/bin/python3", "-m", "llamalab", "train", "sft"], None),
    (CPU_ENV, ["bash", "-c", "launch --cpu --num_processes 2"], None),
])
def test_accelerate_cpu_processes(env, cmdline, expected):
    assert launch.accelerate_cpu_processes(env, cmdline) == expected


def test_relaunch_command_keeps_argv_and_accelerate_address():
    cmd = launch.relaunch_command(2, ["train", "sft", "--profile", "smoke"],
                                  {"MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "4242"})
    assert cmd[1:] == ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "10.0.0.5",
                       "--master_port", "4242", "-m", "llamalab", "train", "sft", "--profile", "smoke"]


def _layout(d: Path) -> set[str]:
    return {p.name for p in d.iterdir() if not p.name.startswith(".")}


def test_two_process_sft_with_accelerate_launch_cpu(tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    assert accelerate.is_file(), f"accelerate's console script is missing beside {sys.executable}"
    env = {**os.environ, "LLAMALAB_RUNS": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    cmd = [str(accelerate), "launch", "--cpu", "--num_processes", "2", "-m", "llamalab", "train", "sft",
           "--profile", "smoke"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "starting 2 processes through torch.distributed.run" in done.stderr
    out = tmp_path / "runs" / "smoke" / "sft"
    info = json.loads((out / "run_info.json").read_text())
    assert info["world_size"] == 2
    assert _layout(out) == SINGLE_PROCESS_LAYOUT
    assert (out / "merged" / "model.safetensors").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 6


@pytest.mark.parametrize("name, kind, stage", [("ddp", "MULTI_GPU", None), ("zero2", "DEEPSPEED", 2),
                                               ("zero3", "DEEPSPEED", 3)])
def test_accelerate_configs_load_with_accelerates_own_reader(name, kind, stage):
    """The multi-GPU configs are read by accelerate's config class (an unknown or misspelled key is
    a TypeError there); DeepSpeed itself and more than one GPU are not available here."""
    from accelerate.commands.config.config_args import load_config_from_file

    path = ROOT / "configs" / "accelerate" / f"{name}.yaml"
    cfg = load_config_from_file(str(path))
    assert cfg.distributed_type.name == kind and cfg.mixed_precision == "bf16" and not cfg.use_cpu
    assert (cfg.deepspeed_config or {}).get("zero_stage") == stage
    assert f"--config_file configs/accelerate/{name}.yaml" in (ROOT / "README.md").read_text()
