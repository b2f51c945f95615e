#!/usr/bin/env bash
# Runs one of the README's scripts (tools/*.sh) as a test, against the build
# ctest runs in. Without root it reports SKIPPED (exit 77) with the reason,
# except under CI=true, where a skipped privileged test is a failure.
set -euo pipefail
if [[ $EUID -ne 0 ]]; then
  echo "SKIPPED: $(basename "$1") needs root (XDP, AF_XDP and network namespaces)"
  [[ ${CI:-} == true ]] && exit 1
  exit 77
fi
exec "$@"
