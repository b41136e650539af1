"""Past one process, for real, with two CPU processes: DDP over gloo through torch's launcher (the one
`accelerate launch --multi_gpu` uses). `accelerate launch --cpu --num_processes 2` starts a single
process unless MPI is installed (accelerate 1.15's simple launcher), so it cannot show world size 2
here; the test checks that it is torchrun's two processes that train, record world size 2, and write
the same artifact layout as a single-process run."""

import json
import os
import subprocess
import sys
from pathlib import Path

SINGLE_PROCESS_LAYOUT = {"adapter", "merged", "checkpoints", "metrics.json", "run_info.json"}


def _layout(d: Path) -> set[str]:
    return {p.name for p in d.iterdir() if not p.name.startswith(".")}


def test_two_process_sft_with_torch_launcher(tmp_path):
    env = {**os.environ, "LLAMALAB_RUNS": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "llamalab", "train",
           "sft", "--profile", "smoke"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    out = tmp_path / "runs" / "smoke" / "sft"
    info = json.loads((out / "run_info.json").read_text())
    assert info["world_size"] == 2
    assert _layout(out) == SINGLE_PROCESS_LAYOUT
    assert (out / "merged" / "model.safetensors").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 6
