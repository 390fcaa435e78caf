#!/usr/bin/env bash
# Create/refresh the project venv (.venv, Python 3.12) with the ROS 2 wheels and all Python
# dependencies, pinned by requirements/constraints.txt. Idempotent: a no-op when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

find_python312() {
  for candidate in python3.12 "$(command -v pyenv >/dev/null 2>&1 && echo "$(pyenv root)/versions/3.12"*/bin/python3)" \
                   "$HOME/.pyenv/versions/3.12"*/bin/python3 /usr/bin/python3.12; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then
      command -v "$candidate" 2>/dev/null || echo "$candidate"
      return 0
    fi
  done
  return 1
}

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  PY=$(find_python312) || {
    echo "error: Python 3.12 not found (looked for python3.12 on PATH and in pyenv)." >&2
    echo "       LeRobot 0.6 and ROS 2 Jazzy need 3.12: install it (e.g. 'pyenv install 3.12') and retry." >&2
    exit 1
  }
  echo "[setup] creating $VENV with $PY"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi

# Reinstall only when the requirement files changed since the last successful install.
stamp="$VENV/.requirements.sha256"
want=$(cat requirements/base.in requirements/constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing pinned dependencies (first run: ~3 GB download, a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip==25.3 >/dev/null
  "$VENV/bin/python" -m pip install -q -r requirements/base.in -c requirements/constraints.txt
  echo "$want" > "$stamp"
fi

# The ROS 2 wheels were built in a manylinux container with Python under /opt/python/cp312-cp312:
# their exported CMake targets and ament index carry that prefix. Point them at this venv so that
# `colcon build` of our interfaces finds Python's and NumPy's headers (no root, no symlinks in /opt).
"$VENV/bin/python" scripts/fix_ros_wheel_paths.py "$VENV"
echo "[setup] venv ready: $VENV"
