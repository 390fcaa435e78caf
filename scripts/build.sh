#!/usr/bin/env bash
# colcon build of this package against the venv's ROS 2 wheels. Quiet and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
BUILD_BASE=${BUILD_BASE:-build}
INSTALL_BASE=${INSTALL_BASE:-install}
log=log/colcon-build${ROS_DISTRO:+-$ROS_DISTRO}.txt
mkdir -p log
if ! colcon build --paths . --build-base "$BUILD_BASE" --install-base "$INSTALL_BASE" \
     --event-handlers console_direct- > "$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "error: colcon build failed; full log: $log" >&2
  exit 1
fi
echo "[build] $(tail -n 1 "$log")"
