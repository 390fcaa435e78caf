#!/usr/bin/env bash
# Create/refresh the project venv (Python 3.12) with the ROS 2 wheels of $ROS_DISTRO (jazzy, the
# default, or kilted) and all Python dependencies, pinned by requirements/constraints-<distro>.txt.
# Idempotent: a no-op when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROS_DISTRO=${ROS_DISTRO:-jazzy}
VENV=${VENV:-.venv}
case "$ROS_DISTRO" in
  jazzy|kilted) ;;
  *) echo "error: ROS_DISTRO=$ROS_DISTRO is not supported; use jazzy (default) or kilted" >&2; exit 1 ;;
esac

find_python312() {
  for candidate in python3.12 "$(command -v pyenv >/dev/null 2>&1 && echo "$(pyenv root)/versions/3.12"*/bin/python3)" \
                   "$HOME/.pyenv/versions/3.12"*/bin/python3 /usr/bin/python3.12; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c 'import sys, ensurepip; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then
      command -v "$candidate" 2>/dev/null || echo "$candidate"
      return 0
    fi
  done
  return 1
}

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  PY=$(find_python312) || {
    echo "error: Python 3.12 with venv support not found (looked for python3.12 on PATH and in pyenv)." >&2
    echo "       LeRobot 0.6 and ROS 2 Jazzy need 3.12: on Ubuntu 24.04 'sudo apt-get install python3.12-venv'," >&2
    echo "       elsewhere e.g. 'pyenv install 3.12', and retry." >&2
    exit 1
  }
  echo "[setup] creating $VENV with $PY"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi

# Reinstall only when the requirement files (or the distro) changed since the last successful install.
requirements=(requirements/base.in "requirements/ros-$ROS_DISTRO.in")
constraints="requirements/constraints-$ROS_DISTRO.txt"
stamp="$VENV/.requirements.sha256"
want=$( (echo "$ROS_DISTRO"; cat "${requirements[@]}" "$constraints") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  installed=$(cat "$VENV/.ros_distro" 2>/dev/null || true)
  if [ -n "$installed" ] && [ "$installed" != "$ROS_DISTRO" ]; then
    echo "[setup] $VENV holds ROS 2 $installed: recreating it for $ROS_DISTRO"
    rm -rf "$VENV"
    "$(find_python312)" -m venv "$VENV"
  fi
  echo "[setup] installing pinned dependencies with the ROS 2 $ROS_DISTRO wheels (first run: ~3 GB download, a few minutes)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip==25.3 >/dev/null
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check $(printf -- '-r %s ' "${requirements[@]}") -c "$constraints"
  echo "$ROS_DISTRO" > "$VENV/.ros_distro"
  echo "$want" > "$stamp"
fi

# LeRobot plugins of this checkout (plugins/: our arm as a LeRobot robot and teleoperator), editable and
# without dependencies (they use this venv's lerobot and this checkout's package): cheap, so every time,
# which also points them at this checkout when the venv was made by another one.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
  -e plugins/lerobot_robot_vla_mbpo_ros -e plugins/lerobot_teleoperator_vla_mbpo_ros

# The ROS 2 wheels were built in a manylinux container with Python under /opt/python/cp312-cp312:
# their exported CMake targets and ament index carry that prefix. Point them at this venv so that
# `colcon build` of our interfaces finds Python's and NumPy's headers (no root, no symlinks in /opt).
"$VENV/bin/python" scripts/fix_ros_wheel_paths.py "$VENV"
echo "[setup] venv ready: $VENV (ROS 2 $ROS_DISTRO)"
