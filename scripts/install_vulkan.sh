#!/usr/bin/env bash
# Installs a Vulkan driver for the wgpu backend's tests: Mesa's software rasteriser lavapipe
# (mesa-vulkan-drivers) and the Vulkan loader (libvulkan1), through apt, when they are missing.
# Idempotent; a machine with a real GPU driver keeps it (the loader lists every driver).
set -euo pipefail
have_icd() { ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; }
have_loader() { ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1'; }
if have_icd && have_loader; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no apt-get: install Mesa's Vulkan drivers (lavapipe) and the Vulkan loader by hand" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "installing mesa-vulkan-drivers libvulkan1 needs root (or sudo)" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q >&2 || true
$sudo apt-get install -y -q --no-install-recommends mesa-vulkan-drivers libvulkan1 >&2
