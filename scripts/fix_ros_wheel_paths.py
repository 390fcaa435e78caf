"""Rewrite the build-machine prefix baked into the ROS 2 wheels' CMake exports to this venv's paths.

The wheels were built with Python at /opt/python/cp312-cp312; their exported CMake targets name
that Python's include dir and NumPy's include dir, and the ament index names it as a parent
prefix. Idempotent: files already rewritten contain no build prefix and are left alone.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

BUILD_PREFIX = "/opt/python/cp312-cp312"


def replacements(venv: Path) -> list[tuple[str, str]]:
    import numpy

    site = Path(numpy.__file__).resolve().parent.parent
    return [
        (f"{BUILD_PREFIX}/include/python3.12", sysconfig.get_paths()["include"]),
        (f"{BUILD_PREFIX}/lib/python3.12/site-packages", str(site)),
        (BUILD_PREFIX, str(venv.resolve())),
    ]


def main(venv: Path) -> int:
    pairs = replacements(venv)
    changed = 0
    for path in (venv / "share").rglob("*"):
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, PermissionError):
            continue
        if BUILD_PREFIX not in text:
            continue
        for old, new in pairs:
            text = text.replace(old, new)
        path.write_text(text)
        changed += 1
    if changed:
        print(f"[setup] rewrote the wheel build prefix in {changed} files under {venv / 'share'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".venv")))
