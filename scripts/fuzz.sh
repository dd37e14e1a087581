#!/usr/bin/env bash
# Fuzzes Switchyard's readers of untrusted input with libFuzzer (clang + AddressSanitizer):
# builds the fuzz targets (tests/fuzz/*_fuzz.cc) in build-fuzz/, then runs each for SECONDS
# from a scratch copy of its committed corpus (tests/fuzz/corpus/TARGET/). A crash is copied
# to tests/fuzz/regressions/TARGET/: fix it and commit the file (the corpus runner in CI,
# `fuzz_corpus_test`, replays every regression on every build).
#
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]    (default: 600 s each, every target)
# Targets: load_csv placement_json model_config safetensors state_json requests
# JOBS=N runs N targets at once (default: the core count).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-600}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(load_csv placement_json model_config safetensors state_json requests)
fi
jobs=${JOBS:-$(nproc)}

command -v clang++ >/dev/null || { echo "fuzz: needs clang++ (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }
build="$root/build-fuzz"
if [[ ! -f "$build/build.ninja" ]]; then
  CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSWITCHYARD_FUZZ=ON -DSWITCHYARD_SANITIZE=address -DSWITCHYARD_WITH_CUDA=OFF -DSWITCHYARD_WITH_MPI=OFF \
    -DSWITCHYARD_WITH_UCX=OFF >/dev/null
fi
ninja -C "$build" "${targets[@]/#/fuzz_}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() {
  local t=$1
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts" "$root/tests/fuzz/regressions/$t"
  cp -r "$root/tests/fuzz/corpus/$t/." "$work/$t/corpus/"
  if "$build/tests/fuzz_$t" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=4096 \
       -artifact_prefix="$work/$t/artifacts/" "$work/$t/corpus" >"$work/$t.log" 2>&1; then
    echo "fuzz $t: $(grep -Eo 'Done [0-9]+ runs' "$work/$t.log" | tail -1 | grep -Eo '[0-9]+') runs in ${seconds} s, no crash"
  else
    cp "$work/$t/artifacts/"* "$root/tests/fuzz/regressions/$t/" 2>/dev/null || true
    echo "fuzz $t: FAILED (input copied to tests/fuzz/regressions/$t/); last lines:" >&2
    tail -30 "$work/$t.log" >&2
    return 1
  fi
}
status=0
running=0
for t in "${targets[@]}"; do
  run "$t" &
  running=$((running + 1))
  if ((running >= jobs)); then
    wait -n || status=1
    running=$((running - 1))
  fi
done
while ((running > 0)); do
  wait -n || status=1
  running=$((running - 1))
done
exit $status
