"""Durable writes: data reaches the disk before it is called saved."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a folder. A rename (``os.replace``) is durable only once its folder is synced: a power
    cut must not leave a half-written episode or checkpoint under its final name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
