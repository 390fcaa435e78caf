"""Mixed precision with fp32 master weights: what a bf16 setup means for a model being trained.

Trainable parameters are held in float32 (AdamW's update of 1e-6 relative size would round away in
bf16, whose ulp is 2^-8 relative), the matmuls run in bf16 under ``torch.autocast``; frozen parameters
are stored in bf16 (half the memory, and they are never updated). Buffers keep their dtype.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def cast_for_training(module: nn.Module, trainable: Iterable[nn.Parameter], frozen_dtype: torch.dtype) -> None:
    """Trainable parameters to float32 (masters), every other floating parameter to ``frozen_dtype``;
    ``requires_grad`` follows membership in ``trainable``."""
    keep = {id(p) for p in trainable}
    for param in module.parameters():
        is_trainable = id(param) in keep
        param.requires_grad_(is_trainable)
        if param.is_floating_point():
            param.data = param.data.to(torch.float32 if is_trainable else frozen_dtype)


def dtype_summary(module: nn.Module) -> dict[str, int]:
    """Parameter counts by (trainable|frozen, dtype), e.g. {"trainable float32": 3e8, "frozen bfloat16": 3e9}."""
    summary: dict[str, int] = {}
    for param in module.parameters():
        key = f"{'trainable' if param.requires_grad else 'frozen'} {str(param.dtype).removeprefix('torch.')}"
        summary[key] = summary.get(key, 0) + param.numel()
    return summary
