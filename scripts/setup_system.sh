#!/usr/bin/env bash
# Debian/Ubuntu packages the package needs beyond Python wheels, installed by `make setup`:
#   libegl1 libgl1 libgles2 libegl-mesa0  headless EGL (Mesa) for MuJoCo rendering (MUJOCO_GL=egl)
#   libusb-1.0-0                          pyrealsense2 (RealSense cameras)
#   ffmpeg                                FFmpeg libraries for torchcodec, LeRobot's video decoder
#   g++                                   colcon build of the message definitions
#   python3.12-venv                       only where Python 3.12 is the distribution's (Ubuntu 24.04)
# Installs only what is missing: as root, or with sudo; otherwise it names the packages and fails.
set -euo pipefail
packages=(libegl1 libgl1 libgles2 libegl-mesa0 libusb-1.0-0 ffmpeg g++)
if [ -x /usr/bin/python3.12 ] && ! /usr/bin/python3.12 -c 'import ensurepip' >/dev/null 2>&1; then
  packages+=(python3.12-venv)
fi
if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "[setup] not a Debian/Ubuntu system: make sure these (or your distribution's equivalents) are installed: ${packages[*]}" >&2
  exit 0
fi
needed=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || needed+=("$pkg")
done
[ ${#needed[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "error: these Debian packages are missing and this user can't install them (not root, no sudo):" >&2
  echo "         ${needed[*]}" >&2
  echo "       ask an administrator to run: apt-get install -y ${needed[*]}" >&2
  exit 1
fi
echo "[setup] installing Debian packages: ${needed[*]}"
if ! { "${as_root[@]}" apt-get update -qq &&
       DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null; }; then
  echo "error: could not install the Debian packages ${needed[*]}; install them with: sudo apt-get install ${needed[*]}" >&2
  exit 1
fi
