"""torch.distributed for training with several processes started by torchrun or ``accelerate launch``
(one process per GPU, or gloo processes on a CPU). Never a scheduler of our own: the launcher sets
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR, this module joins that group. In one process every
function here is a no-op, so the single-process code path is the multi-process one.

Conventions: rank 0 writes files and reports; values that decide control flow (an actor update or
not, accept or roll back) are reduced so every process takes the same branch.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_environment(device_type: str = "cpu") -> bool:
    """Join the process group a launcher describes (WORLD_SIZE > 1): nccl for CUDA, gloo on the CPU.
    False in a plain single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        # Rank 0 alone clones behaviour and writes between the phases; the others wait at a barrier,
        # longer than the default 10-30 min a collective may take.
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=timedelta(hours=4))
    return True


def local_device(device: str) -> str:
    """``cuda`` means this process's own GPU (LOCAL_RANK) when several processes share a machine."""
    if device == "cuda" and is_distributed():
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device


def _reduce_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def sum_across(value: float) -> float:
    """``value`` summed over all processes."""
    if not is_distributed():
        return float(value)
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(tensor)
    return float(tensor.item())


def any_across(flag: bool) -> bool:
    """True on every process when it is True on any."""
    return sum_across(1.0 if flag else 0.0) > 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def train_only(module: nn.Module, trainable: list[nn.Parameter]) -> None:
    """``requires_grad`` on exactly ``trainable`` among ``module``'s parameters: DistributedDataParallel then
    allocates gradient buckets and all-reduces for those alone (a frozen 3 B VLM costs it nothing)."""
    keep = {id(p) for p in trainable}
    for param in module.parameters():
        param.requires_grad_(id(param) in keep)


def data_parallel(module: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel when there are several processes (gradients are
    averaged during backward; rank 0's parameters are broadcast now), else ``module`` itself."""
    if not is_distributed():
        return module
    from torch.nn.parallel import DistributedDataParallel

    device = next(module.parameters()).device
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False,
                                   find_unused_parameters=find_unused_parameters)
