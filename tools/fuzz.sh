#!/usr/bin/env bash
# Build the fuzz targets (clang, libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer) into ./build-fuzz and run each for SECONDS
# (default 60) over a copy of its seed corpus (tests/fuzz/corpus/<target>,
# never written to). Exits non-zero on a finding, naming the input that
# triggers it and the command that reproduces it.
#
#   sudo ./tools/fuzz.sh [SECONDS] [TARGET...]
#
# The grown corpora stay in build-fuzz/corpus/<target> (the next run starts
# from them), findings in build-fuzz/findings/<target>/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
xvmq_require_root
xvmq_install_packages

seconds="${1:-60}"
shift || true
targets=("$@")
((${#targets[@]})) || targets=(fuzz_control fuzz_config fuzz_frames fuzz_vhost fuzz_cni)
out="${XVMQ_FUZZ_BUILD:-$XVMQ_ROOT/build-fuzz}"

echo "==> building the fuzz targets in $out"
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$XVMQ_ROOT" -B "$out" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DXVMQ_FUZZ=ON \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ "${launcher[@]}" >/dev/null
cmake --build "$out" -j"$(nproc)" --target "${targets[@]}" >"$out/build.log" 2>&1 || {
  grep -E "error|Error" "$out/build.log" | head -40
  exit 1
}

# Bounds: an input longer than max_len is never tried; memory and time per
# input are findings past these.
declare -A max_len=([fuzz_control]=16384 [fuzz_config]=8192 [fuzz_frames]=2048 [fuzz_vhost]=4096 [fuzz_cni]=4096)
export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1:detect_leaks=1:print_stacktrace=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1}"
failed=0
for t in "${targets[@]}"; do
  bin="$out/tests/fuzz/$t"
  corpus="$out/corpus/$t"
  findings="$out/findings/$t"
  mkdir -p "$corpus" "$findings"
  cp -rn "$XVMQ_ROOT/tests/fuzz/corpus/$t/." "$corpus/"
  args=(-max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=30
        -max_len="${max_len[$t]:-4096}" -print_final_stats=1 -artifact_prefix="$findings/")
  dict="$XVMQ_ROOT/tests/fuzz/$t.dict"
  [[ -f "$dict" ]] && args+=(-dict="$dict")
  log="$out/findings/$t.log"
  echo "==> $t for ${seconds}s (corpus $corpus: $(ls "$corpus" | wc -l) inputs)"
  before=$(date +%s)
  if "$bin" "${args[@]}" "$corpus" >"$log" 2>&1; then
    grep -E "^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|cov: " "$log" | tail -4 | sed 's/^/    /'
    echo "    $(ls "$corpus" | wc -l) inputs in the corpus after $(( $(date +%s) - before ))s"
  else
    failed=1
    artifact=$(grep -oE "Test unit written to [^ ]+" "$log" | tail -1 | sed 's/Test unit written to //' || true)
    echo "!!! $t found a bug; its report:"
    grep -E "ERROR|SUMMARY|invariant broken|runtime error|==[0-9]+==" "$log" | head -20 | sed 's/^/    /'
    echo "    full log: $log"
    if [[ -n "$artifact" ]]; then
      echo "    input: $artifact"
      echo "    reproduce: $bin $artifact"
    fi
  fi
done
exit "$failed"
