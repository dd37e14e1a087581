#!/bin/sh
# Usage: aarch64_run.sh SOURCE_DIR BINARY_DIR KERNEL_SOURCES TEST_SOURCES [DEFINITION...]
# KERNEL_SOURCES, TEST_SOURCES: the kernels library's and kernels_test's sources, relative to
# SOURCE_DIR, separated by spaces (tests/CMakeLists.txt takes them from the targets).
# Builds the kernels library and kernels_test for aarch64 with the cross compiler and runs
# the test under qemu-user, whose CPU has NEON: the tests compare the neon and portable paths
# bit for bit, and the golden-bits tests compare them with fingerprints committed from x86, so
# the NEON code's bits are checked, not only its compilation (aarch64_compile.sh). Needs Debian's
# g++-aarch64-linux-gnu, qemu-user and the arm64 builds of Highway, abseil and GoogleTest
# (scripts/setup.sh --arm, which adds the arm64 architecture to dpkg); without them exit 77
# (skipped). The objects go to BINARY_DIR/aarch64.
set -eu
src=$1
bin=$2
kernel_sources=$3
test_sources=$4
shift 4
defs=""  # the kernels library's compile definitions (kernels/CMakeLists.txt), as -D flags
for d in "$@"; do defs="$defs -D$d"; done
cxx="aarch64-linux-gnu-g++"
qemu="qemu-aarch64"
sysroot=/usr/aarch64-linux-gnu
pc_dir=/usr/lib/aarch64-linux-gnu/pkgconfig
skip() { echo "$1: skipped"; exit 77; }
command -v "$cxx" >/dev/null 2>&1 || skip "no $cxx (apt-get install g++-aarch64-linux-gnu)"
command -v "$qemu" >/dev/null 2>&1 || skip "no $qemu (apt-get install qemu-user)"
libs=$(PKG_CONFIG_LIBDIR=$pc_dir pkg-config --libs absl_status absl_statusor absl_strings absl_str_format \
       libhwy gtest_main 2>/dev/null) || skip "no arm64 Highway, abseil or GoogleTest (see scripts/setup.sh --arm)"

out="$bin/aarch64"
mkdir -p "$out"
# The project's flags that decide bits: -ffp-contract=off (cmake/SwitchyardOptions.cmake;
# GCC fuses a * b + c into one FMA by default, on aarch64 even across NEON intrinsics).
# SOURCE [FLAG...]: SOURCE's object under $out, rebuilt when the source, a file under kernels/
# or common/ (headers, kernels/CMakeLists.txt's definitions) or this script is newer.
compile() {
  f=$1
  shift
  o="$out/$(echo "$f" | tr / _).o"
  if [ -f "$o" ] && [ -z "$(find "$src/$f" "$src/kernels" "$src/common" "$0" -newer "$o" -type f | head -1)" ]; then
    echo "$o"
    return
  fi
  # shellcheck disable=SC2086  # $defs: one word per definition, none holds a space
  "$cxx" -std=c++20 -O2 -ffp-contract=off -fopenmp $defs -I"$src" -I"$bin/generated" "$@" -c "$src/$f" -o "$o" >&2
  echo "$o"
}
objects=""
# The two files the kernels and their tests use from switchyard_common (the rest of it needs
# libraries with no arm64 package installed here).
# shellcheck disable=SC2086  # word lists
for f in $kernel_sources $test_sources common/env.cc common/json_reader.cc; do
  case $f in
    kernels/cpu/*) objects="$objects $(compile "$f" -O3 -Wno-maybe-uninitialized)" ;;  # as kernels/CMakeLists.txt
    *) objects="$objects $(compile "$f")" ;;
  esac
done
# shellcheck disable=SC2086  # word lists
"$cxx" -fopenmp $objects $libs -o "$out/kernels_test"

# The cross toolchain's C library first: the loader would otherwise mix it with the arm64
# multiarch one that abseil's packages bring, and OpenMP's threads then hang under qemu.
export QEMU_LD_PREFIX=$sysroot
export LD_LIBRARY_PATH="$sysroot/lib:/usr/lib/aarch64-linux-gnu"
# One run: the bit-identity tests loop over every path the (emulated) CPU has, portable and
# neon; the default path is neon. About 3.5 minutes, most of it the filter's bound checked
# over every float on both paths.
echo "== kernels_test on aarch64 (qemu-user)"
"$qemu" "$out/kernels_test" --gtest_brief=1 || { echo "FAILED: kernels_test on aarch64"; exit 1; }
