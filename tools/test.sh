#!/usr/bin/env bash
# Install, build and run every test. Privileged tests run in network
# namespaces of their own; under CI=true a skipped privileged test fails.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
xvmq_require_root
xvmq_install_packages
xvmq_build
echo "==> running tests"
cd "$XVMQ_BUILD"
ctest --output-on-failure --timeout 600 "$@"
