#!/usr/bin/env bash
# Install the Debian packages the project needs, only those missing (safe to run twice).
#   clang lld wasi-libc libclang-rt-14-dev-wasm32  build the example Wasm jobs (C -> wasm32-wasi)
#   docker.io                                      the Docker engine for the Docker executor
#   busybox-static                                 the rootfs of the locally built test image
set -euo pipefail
packages=(clang lld wasi-libc libclang-rt-14-dev-wasm32 docker.io busybox-static)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "apt: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
