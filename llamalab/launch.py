"""``accelerate launch --cpu --num_processes N`` really starting N processes.

accelerate 1.15 starts multi-CPU jobs only through ``mpirun``: given ``--cpu --num_processes N`` and
no ``--mpirun_hostfile``, its simple launcher starts *one* process (it only sets ``MASTER_ADDR`` and
``MASTER_PORT``), which then trains alone with world size 1. ``llamalab train`` notices that case, reads
the launcher's own command line with accelerate's own argument parser, and starts the N processes
itself through torch's launcher (DDP over gloo): the launcher ``accelerate launch --multi_gpu`` uses.
Every other way of starting (plain ``python -m llamalab``, torchrun, mpirun, a GPU launch) is left alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

# Set by torchrun (WORLD_SIZE, also in our own relaunched processes) or by an MPI launcher: the job is
# already distributed.
DISTRIBUTED_ENV = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def _accelerate_launch_args(cmdline: Sequence[str]) -> list[str] | None:
    """The arguments after ``accelerate launch`` in a process's command line, or None if it is not one."""
    for i, token in enumerate(cmdline):
        name = Path(token).name
        if name in ("accelerate", "accelerate.commands.accelerate_cli") and list(cmdline[i + 1:i + 2]) == ["launch"]:
            return list(cmdline[i + 2:])
        if name == "accelerate-launch" or token == "accelerate.commands.launch":
            return list(cmdline[i + 1:])
    return None


def _parent_cmdline() -> list[str]:
    try:
        import psutil

        parent = psutil.Process().parent()
        return parent.cmdline() if parent is not None else []
    except Exception:  # no psutil, or the parent is gone or not readable: treat as not accelerate
        return []


def accelerate_cpu_processes(env: Mapping[str, str] | None = None,
                             parent_cmdline: Sequence[str] | None = None) -> int | None:
    """N when this process is the lone child of ``accelerate launch --cpu --num_processes N`` (N > 1)
    without mpirun; None otherwise."""
    env = os.environ if env is None else env
    if str(env.get("ACCELERATE_USE_CPU", "")).lower() not in ("true", "1", "yes"):
        return None
    if any(key in env for key in DISTRIBUTED_ENV):
        return None
    rest = _accelerate_launch_args(_parent_cmdline() if parent_cmdline is None else parent_cmdline)
    if rest is None:
        return None
    from accelerate.commands.launch import launch_command_parser

    try:
        args = launch_command_parser().parse_args(rest)
    except SystemExit:  # not a launch command line accelerate itself would accept
        return None
    if not args.cpu or args.mpirun_hostfile or not args.num_processes or args.num_processes < 2:
        return None
    return int(args.num_processes)


def relaunch_command(n: int, argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """torch's launcher running ``python -m llamalab <argv>`` in n processes, on accelerate's address."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n),
            "--master_addr", env.get("MASTER_ADDR", "127.0.0.1"), "--master_port", env.get("MASTER_PORT", "29500"),
            "-m", "llamalab", *argv]


def relaunch(n: int, argv: Sequence[str]) -> int:
    cmd = relaunch_command(n, argv, os.environ)
    print(f"llamalab: `accelerate launch --cpu --num_processes {n}` starts one process without mpirun; "
          f"starting {n} processes through torch.distributed.run (DDP over gloo)", file=sys.stderr, flush=True)
    return subprocess.run(cmd).returncode
