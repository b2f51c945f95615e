#!/usr/bin/env bash
# Install, build and run the classifier benchmark (BPF_PROG_RUN); arguments go
# to xvmq-bench (--repeat, --rounds, --cpu, --json; see --help). It runs in
# network and mount namespaces of its own: nothing it creates outlives it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
xvmq_require_root
xvmq_install_packages
xvmq_build
echo "==> running the classifier benchmark"
"$XVMQ_BUILD/tools/bench/xvmq-bench" "$@"
