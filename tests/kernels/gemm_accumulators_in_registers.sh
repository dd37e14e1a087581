#!/bin/sh
# Usage: gemm_accumulators_in_registers.sh OBJDUMP LIBRARY
# Fails, listing them, if a GEMM block kernel of LIBRARY's x86 targets (BlockF32, BlockBf16,
# BlockDot in kernels/cpu/ffn_gemm.cc, for N_AVX2 and N_AVX3) stores two or more vector
# registers to the stack in a reduction loop. The accumulators must stay in registers: GCC
# stored 3 to 15 of them to the stack on every k step of the vdpbf16ps kernel (its rows
# looped outside its panels), which halved its speed on AMD Zen 5 and went unseen on CPUs
# that do not use that kernel. (One store is let through: a spilled broadcast in the AVX2
# kernels, which use all 16 registers, would be harmless.)
#
# A reduction loop: a backward jump's range holding FMA or vdpbf16ps instructions and the
# weights' prefetch (PrefetchStep, in every reduction step; the epilogue's loops have none),
# that holds no other such range (an innermost loop). Two jumps back to one target are one
# loop (the later one's range); a range that starts inside another and ends beyond it is
# out-of-line code jumping back into that loop, not a loop of its own.
set -eu
objdump=$1
library=$2
"$objdump" -d --no-show-raw-insn -C "$library" | awk '
  function hex(s,   i, n) {
    n = 0
    s = tolower(s)
    for (i = 1; i <= length(s); ++i) n = n * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
    return n
  }
  function check(   i, j, c, d, t, found, fmas, prefetches, stores, inner, loops) {
    if (!match(fn, /N_AVX[23]::([A-Za-z_() ]*::)?Block(F32|Bf16|Dot)</) || fn ~ /\[clone \.cold/) return
    kind = substr(fn, RSTART, RLENGTH - 1)
    sub(/::.*::/, "::", kind)
    ++seen[kind]
    # Candidate ranges [cs, ce] (instruction indices), one per jump target.
    nc = 0
    for (i = 1; i <= n; ++i) {
      if (text[i] !~ /^j[a-z]+[ \t]+[0-9a-f]+ /) continue
      split(text[i], parts, /[ \t]+/)
      t = hex(parts[2])
      if (t >= addr[i]) continue
      for (j = 1; j <= i && addr[j] < t; ++j) {}
      fmas = 0; prefetches = 0; stores = 0
      for (c = j; c <= i; ++c) {
        if (text[c] ~ /^(vfn?madd[0-9]+ps|vdpbf16ps)/) ++fmas
        if (text[c] ~ /^prefetch/) ++prefetches
        if (text[c] ~ /^vmov[a-z0-9]*[ \t]+%[xyz]mm[0-9]+,.*\(%rsp[,)]/) ++stores
      }
      if (fmas == 0 || prefetches == 0) continue
      found = 0
      for (c = 1; c <= nc; ++c) {
        if (cs[c] == j) { found = 1; if (i > ce[c]) { ce[c] = i; cst[c] = stores } }
      }
      if (!found) { ++nc; cs[nc] = j; ce[nc] = i; cst[nc] = stores }
    }
    for (c = 1; c <= nc; ++c) {
      back[c] = 0
      for (d = 1; d <= nc; ++d) {
        if (cs[d] < cs[c] && cs[c] <= ce[d] && ce[c] > ce[d]) back[c] = 1
      }
    }
    loops = 0
    for (c = 1; c <= nc; ++c) {
      if (back[c]) continue
      inner = 1
      for (d = 1; d <= nc; ++d) {
        if (d != c && !back[d] && cs[c] <= cs[d] && ce[d] <= ce[c]) inner = 0
      }
      if (!inner) continue
      ++loops
      if (cst[c] >= 2) {
        printf "%s\n    reduction loop of %d instructions stores %d vector registers to the stack\n", fn, ce[c] - cs[c] + 1, cst[c]
        ++failed
      }
    }
    if (loops == 0) {
      printf "%s\n    no reduction loop found\n", fn
      ++failed
    }
    ++kernels
  }
  /^[0-9a-f]+ <.*>:$/ { check(); fn = $0; n = 0; next }
  /^ +[0-9a-f]+:\t/ {
    ++n
    split($0, f, "\t")
    sub(/:$/, "", f[1]); sub(/^ +/, "", f[1])
    addr[n] = hex(f[1])
    text[n] = f[2]
  }
  END {
    check()
    # Every kind of kernel must be there: a renamed one would otherwise drop out unseen.
    split("N_AVX2::BlockF32 N_AVX2::BlockBf16 N_AVX3::BlockF32 N_AVX3::BlockBf16 N_AVX3::BlockDot", kinds, " ")
    for (k in kinds) {
      if (!(kinds[k] in seen)) { printf "no %s kernel found in the library\n", kinds[k]; ++failed }
    }
    if (failed > 0) exit 1
    printf "%d GEMM block kernels keep their accumulators in registers\n", kernels
  }'
