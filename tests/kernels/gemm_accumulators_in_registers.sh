#!/bin/sh
# Usage: gemm_accumulators_in_registers.sh OBJDUMP LIBRARY
# Fails, listing them, if a GEMM block kernel of LIBRARY (BlockF32, BlockBf16, BlockDot in
# kernels/cpu/ffn_gemm.cc) stores a vector register to the stack in its reduction loop: the
# least loop (a backward jump) holding FMA or vdpbf16ps instructions and the weights'
# prefetch (PrefetchStep, in every reduction step; the epilogue's loops have none). The
# accumulators must stay in registers; GCC stored every one of them to the stack on each k
# step of the vdpbf16ps kernel (its rows looped outside its panels), which halved its speed
# on AMD Zen 5 and went unseen on CPUs that do not use that kernel.
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
  function check(   i, j, t, first, fmas, prefetches, stores, len, best_len, best_stores) {
    # The x86 targets (the scalar and emulated ones have no FMA instruction).
    if (fn !~ /::N_AVX[23]::.*::Block(F32|Bf16|Dot)</) return
    ++kernels
    best_len = 0
    for (i = 1; i <= n; ++i) {
      if (text[i] !~ /^j[a-z]+[ \t]+[0-9a-f]+ /) continue
      split(text[i], parts, /[ \t]+/)
      t = hex(parts[2])
      if (t >= addr[i]) continue
      fmas = 0; prefetches = 0; stores = 0; first = 0
      for (j = 1; j <= i; ++j) {
        if (addr[j] < t) continue
        if (!first) first = j
        if (text[j] ~ /^(vfn?madd[0-9]+ps|vdpbf16ps)/) ++fmas
        if (text[j] ~ /^prefetch/) ++prefetches
        if (text[j] ~ /^vmov[a-z0-9]*[ \t]+%[xyz]mm[0-9]+,.*\(%rsp\)/) ++stores
      }
      len = i - first + 1
      if (fmas > 0 && prefetches > 0 && (best_len == 0 || len < best_len)) { best_len = len; best_stores = stores }
    }
    if (best_len == 0) {
      printf "%s\n    no reduction loop found\n", fn
      ++failed
    } else if (best_stores > 0) {
      printf "%s\n    reduction loop of %d instructions stores %d vector registers to the stack\n", fn, best_len, best_stores
      ++failed
    }
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
    if (kernels == 0) { print "no GEMM block kernel found"; exit 1 }
    if (failed > 0) exit 1
    printf "%d GEMM block kernels keep their accumulators in registers\n", kernels
  }'
