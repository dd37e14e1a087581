#!/bin/sh
# Usage: aarch64_compile.sh CLANGXX SOURCE_DIR BINARY_DIR SOURCES [DEFINITION...]
# Compiles the kernels library's SOURCES (relative to SOURCE_DIR, separated by spaces:
# tests/CMakeLists.txt takes them from the target) for aarch64 (front end only: parse and
# instantiate every Highway target, NEON and the portable one included), so that a change
# that breaks the Arm build fails here on an x86 machine. There is no aarch64 sysroot: the
# host's C and C++ headers stand in, with the two glibc headers that pick the word size
# shadowed by 64-bit ones. Exit 77 (skipped) when clang has no AArch64 target or the host's
# headers cannot stand in (another layout than Debian's).
set -eu
clangxx=$1
src=$2
bin=$3
sources=$4
shift 4
defs=""  # the kernels library's compile definitions (kernels/CMakeLists.txt), as -D flags
for d in "$@"; do defs="$defs -D$d"; done
"$clangxx" --print-targets 2>/dev/null | grep -qw aarch64 || { echo "clang has no aarch64 target: skipped"; exit 77; }
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
mkdir -p "$shim/gnu" "$shim/bits"
: > "$shim/gnu/stubs-32.h"
printf '#define __WORDSIZE 64\n#define __WORDSIZE_TIME64_COMPAT32 1\n#define __SYSCALL_WORDSIZE 64\n' > "$shim/bits/wordsize.h"
gcc_version=$(gcc -dumpversion 2>/dev/null || echo 12)
# shellcheck disable=SC2086  # $defs: one word per definition, none holds a space
cxx() {
  "$clangxx" --target=aarch64-linux-gnu -U__x86_64__ -std=c++20 -fsyntax-only $defs -I"$src" -I"$bin" \
    -isystem "$shim" -isystem "/usr/include/c++/$gcc_version" \
    -isystem "/usr/include/x86_64-linux-gnu/c++/$gcc_version" -isystem /usr/include \
    -isystem /usr/include/x86_64-linux-gnu "$@"
}
# The stand-in headers must work on this host (Debian's layout); elsewhere: skipped.
printf '#include <atomic>\n#include <vector>\n#include "hwy/highway.h"\n' > "$shim/probe.cc"
cxx "$shim/probe.cc" 2>/dev/null || { echo "the host's C++ headers do not stand in for aarch64 here: skipped"; exit 77; }
status=0
# shellcheck disable=SC2086  # a word list
for f in $sources; do
  if ! cxx "$src/$f"; then
    echo "FAILED: $f for aarch64"
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "the kernels compile for aarch64 (NEON and portable targets)"
exit "$status"
