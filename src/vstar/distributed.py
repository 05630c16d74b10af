"""Running stages under `torchrun` / `accelerate launch`: every process does its share, the main process writes.

The process group is accelerate's `PartialState` (gloo on CPU, NCCL on GPUs, DeepSpeed's when launched with it),
created on first use, so the `Trainer` of the training stage later joins the same group instead of making its own.
A single process (no `WORLD_SIZE` > 1 in the environment) never touches torch.distributed.

```bash
torchrun --nproc_per_node 8 -m vstar.cli generate --model Qwen/Qwen2.5-VL-7B-Instruct --dataset data/k700 ...
accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml -m vstar.cli cycle --config ...
```
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a process waits for the others at a barrier. Ranks finish generating at different times and the main
#: process verifies and assembles alone while the others wait, so this is far above torch's 30-minute default.
DEFAULT_TIMEOUT_SECONDS = 4 * 3600


def world_from_env() -> tuple[int, int]:
    """(rank, world_size) as the launcher set them, else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_distributed() -> bool:
    return world_from_env()[1] > 1


def init_distributed(timeout_seconds: int | None = None):
    """The shared `PartialState` of a multi-process launch (initialising the process group once), else `None`.

    Args:
        timeout_seconds: barrier timeout of the process group (only the first call's value counts).
    """
    if not is_distributed():
        return None
    import torch
    from accelerate import PartialState

    state = PartialState(
        cpu=not torch.cuda.is_available(),
        timeout=timedelta(seconds=timeout_seconds or DEFAULT_TIMEOUT_SECONDS),
    )
    if state.num_processes != world_from_env()[1]:
        raise RuntimeError(
            f"WORLD_SIZE is {world_from_env()[1]} but the process group has {state.num_processes} processes; "
            "launch with `torchrun` or `accelerate launch` and do not set WORLD_SIZE by hand."
        )
    return state


def is_main_process() -> bool:
    return world_from_env()[0] == 0


def local_device() -> str:
    """The device this process works on: its own GPU under a launcher, else the first GPU or the CPU."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"


def wait_for_everyone() -> None:
    """A barrier across all processes (nothing in a single process)."""
    state = init_distributed()
    if state is not None:
        state.wait_for_everyone()


def broadcast_from_main(value: T) -> T:
    """The main process's `value`, on every process (pickled; keep it to ids, counts and small results)."""
    if init_distributed() is None:
        return value
    from accelerate.utils import broadcast_object_list

    holder: list[Any] = [value if is_main_process() else None]
    broadcast_object_list(holder, from_process=0)
    return holder[0]
