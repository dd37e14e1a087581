#!/bin/sh
# Usage: no_gather_or_scatter.sh OBJDUMP LIBRARY
# Fails, listing them, if LIBRARY's code holds a vector gather or scatter instruction.
# Compilers turn indexed loops into these (GCC made the gating's ranking two scatters per
# token); they are slow on AMD's cores and, for gathers, under Intel's Gather Data Sampling
# mitigation, so the kernels use scalar indexed loads and stores (docs/kernels.md, "Gating").
set -eu
objdump=$1
library=$2
found=$("$objdump" -d --no-show-raw-insn -C "$library" | awk '
  /^[0-9a-f]+ <.*>:$/ { fn = $0 }
  /\tv(p)?(gather|scatter)[a-z0-9]* / { print fn "\n    " $0 }')
if [ -n "$found" ]; then
  echo "gather/scatter instructions in $library:"
  echo "$found"
  exit 1
fi
echo "no gather/scatter instruction in $library"
