#!/usr/bin/env bash
# Install, build and run every test. Privileged tests run in network
# namespaces of their own; under CI=true a skipped privileged test fails.
#
#   ./tools/test.sh [--sanitize] [CTEST ARGS...]
#
# --sanitize: the same suite built with AddressSanitizer and
# UndefinedBehaviorSanitizer (-DXVMQ_SANITIZE=ON) in ./build-asan; every
# finding, in a test or in a switchd or switchctl it runs, fails the run.
set -euo pipefail
sanitize=0
if [[ "${1:-}" == "--sanitize" ]]; then
  sanitize=1
  shift
  export XVMQ_BUILD="${XVMQ_ASAN_BUILD:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/build-asan}"
fi
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
xvmq_require_root
xvmq_install_packages
if ((sanitize)); then
  XVMQ_CMAKE_ARGS=(-DXVMQ_SANITIZE=ON)
  # Inherited by every process a test starts. Each report also goes to a
  # file: a child's finding fails the run even where its test only checks
  # that it failed.
  reports="$XVMQ_BUILD/sanitizer-reports"
  rm -rf "$reports"
  mkdir -p "$reports"
  export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1:detect_leaks=1:print_stacktrace=1:strict_string_checks=1:detect_stack_use_after_return=1:log_path=$reports/asan}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1:log_path=$reports/ubsan}"
  export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$XVMQ_ROOT/tests/lsan.supp:print_suppressions=0}"
fi
xvmq_build
echo "==> running tests"
cd "$XVMQ_BUILD"
rc=0
ctest --output-on-failure --timeout 600 "$@" || rc=$?
if ((sanitize)) && [[ -n "$(ls -A "$reports")" ]]; then
  echo "==> sanitizer reports ($reports):"
  for f in "$reports"/*; do
    echo "---- $f"
    head -60 "$f"
  done
  rc=1
fi
exit "$rc"
