#!/usr/bin/env bash
# Installs Switchyard's build and test dependencies from Debian packages.
# Idempotent and non-interactive: packages already present are skipped, so a second run is a
# few seconds. Needs root (or sudo) for apt-get; starts no daemon.
#
# --arm also installs what the test kernels_aarch64_run needs to build the CPU kernels for
# aarch64 and run their tests under qemu-user (the NEON path's bits, on an x86 machine): the
# cross compiler, qemu-user, and Highway, abseil and GoogleTest for arm64 (this adds arm64 to
# dpkg's architectures). Not part of the README's commands: without them the test skips.
set -euo pipefail

arm=0
for arg in "$@"; do
  case $arg in
    --arm) arm=1 ;;
    *) echo "setup: unknown argument '$arg' (use --arm, or nothing)" >&2; exit 2 ;;
  esac
done

packages=(
  build-essential cmake ninja-build pkg-config git
  libabsl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libcivetweb-dev
  libopenblas-dev libhwy-dev
  libopenmpi-dev openmpi-bin
  libucx-dev
  libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  openssl
  slurm-wlm munge
  python3-dev python3-venv pybind11-dev python3-numpy python3-torch python3-pytest
  chromium prometheus
)

if ((arm)); then
  packages+=(g++-aarch64-linux-gnu qemu-user libhwy-dev:arm64 libabsl-dev:arm64 libgtest-dev:arm64)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Packages with services (munge, slurmctld, slurmd) must not start them: the tests start
# their own in private directories (scripts/slurm_local.sh). policy-rc.d says so to
# invoke-rc.d, as in container builds; removed again unless it was there before.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  trap '$sudo rm -f "$policy"' EXIT
fi
if ((arm)) && ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $sudo dpkg --add-architecture arm64
fi
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
