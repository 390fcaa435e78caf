# Source this (bash/sh) to run the package from the dev/CI venv + colcon install space:
#   . scripts/env.sh
# It plays the role of /opt/ros/<distro>/setup.bash + install/setup.bash on a ROS workstation.
# VENV and INSTALL_BASE (relative to the repository) select another distro's folders (see Makefile).
_repo=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
_venv="$_repo/${VENV:-.venv}"
_install="$_repo/${INSTALL_BASE:-install}/vla_mbpo_ros"
export VIRTUAL_ENV="$_venv"
export PATH="$_venv/bin:$PATH"
export AMENT_PREFIX_PATH="$_install:$_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$_venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
# Generated interface libraries of this package (typesupport) are loaded by rclpy at import time.
export LD_LIBRARY_PATH="$_install/lib:$_venv/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Generated msg/srv modules live in the install space; the source tree stays importable first, and
# vla_mbpo_ros/__init__.py extends the package path to pick the generated modules up from there.
export PYTHONPATH="$_repo:$_install/lib/python3.12/site-packages${PYTHONPATH:+:$PYTHONPATH}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# Sim profile defaults: discovery stays on this machine; the package's Fast DDS profile (shared
# memory sized for camera images) unless transports are already chosen (README, "Transport and isolation").
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
if [ -z "${FASTRTPS_DEFAULT_PROFILES_FILE:-}${FASTDDS_DEFAULT_PROFILES_FILE:-}${FASTDDS_BUILTIN_TRANSPORTS:-}" ]; then
  # Fast DDS 2.x (Jazzy) reads the first name, 3.x (Kilted) the second and warns about the first.
  if [ "${ROS_DISTRO:-jazzy}" = kilted ]; then
    export FASTDDS_DEFAULT_PROFILES_FILE="$_repo/config/dds/fastdds_local.xml"
  else
    export FASTRTPS_DEFAULT_PROFILES_FILE="$_repo/config/dds/fastdds_local.xml"
  fi
fi
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
unset _repo _venv _install
