"""Image resizing, in one place: bilinear with antialiasing (area-aware when shrinking), so the policy,
the world model and the dataset reader all see a view at a given resolution the same way.
Non-square inputs are squashed to the target size (the cameras' aspect ratio is a config matter)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize_float(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) float -> (N, C, *size); returned as is when already that size."""
    target = _size(size)
    if tuple(images.shape[-2:]) == target:
        return images
    return F.interpolate(images, size=target, mode="bilinear", antialias=True, align_corners=False)


def resize_uint8(images: np.ndarray | torch.Tensor, size: int | tuple[int, int]) -> np.ndarray | torch.Tensor:
    """(N, H, W, 3) uint8 (numpy, or torch on any device) -> (N, *size, 3) uint8 of the same kind."""
    target = _size(size)
    if tuple(images.shape[1:3]) == target:
        return images
    tensor = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    x = resize_float(tensor.permute(0, 3, 1, 2).float(), target)
    out = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out.contiguous().numpy() if isinstance(images, np.ndarray) else out
