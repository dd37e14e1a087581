#!/usr/bin/env bash
# Installs the dependencies, builds, and runs every test (ctest). Extra arguments go to
# ctest, e.g. scripts/test.sh -L unit.
#
# Tests labelled arm (the CPU kernels built for aarch64 and run under qemu-user: minutes, and
# only where scripts/setup.sh --arm installed their tools) run on request only:
# SWITCHYARD_ARM_TESTS=1 scripts/test.sh, or ctest -L arm in the build directory.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cd "${BUILD_DIR:-build}"
skip_arm=(-LE arm)
if [[ ${SWITCHYARD_ARM_TESTS:-0} == 1 ]]; then skip_arm=(); fi
ctest --output-on-failure -j "$(nproc)" --timeout 600 "${skip_arm[@]}" "$@"
