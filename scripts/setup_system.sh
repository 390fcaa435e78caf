#!/usr/bin/env bash
# Debian packages the dev/CI machine needs beyond Python wheels: headless EGL (Mesa) for MuJoCo
# rendering, libusb for pyrealsense2. Installs only what is missing; needs root (or sudo) only when something is missing.
set -euo pipefail
needed=()
for pkg in libegl1 libgl1 libgles2 libegl-mesa0 libusb-1.0-0; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || needed+=("$pkg")
done
if [ ${#needed[@]} -eq 0 ]; then
  exit 0
fi
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
echo "[setup] installing Debian packages: ${needed[*]}"
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
