#!/usr/bin/env bash
# Re-resolve requirements/base.in + ros-$ROS_DISTRO.in in a scratch venv and pin the result in
# requirements/constraints-$ROS_DISTRO.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROS_DISTRO=${ROS_DISTRO:-jazzy}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
py=$(ls "$(pyenv root 2>/dev/null || echo ~/.pyenv)"/versions/3.12*/bin/python3 2>/dev/null | head -n 1)
"${PYTHON312:-${py:-python3.12}}" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q -r requirements/base.in -r "requirements/ros-$ROS_DISTRO.in"
out="requirements/constraints-$ROS_DISTRO.txt"
{ echo "# Full pinned environment for ROS_DISTRO=$ROS_DISTRO (pip freeze of a venv built from base.in + ros-$ROS_DISTRO.in). Regenerate with \`make lock ROS_DISTRO=$ROS_DISTRO\`."
  "$tmp/venv/bin/pip" freeze; } > "$out"
echo "pinned $(grep -c '==' "$out") packages in $out"
