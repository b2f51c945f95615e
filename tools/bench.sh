#!/usr/bin/env bash
# Install, build and run a benchmark, in network namespaces of its own:
# nothing it creates outlives it.
#
#   ./tools/bench.sh [ARGS]          the classifier alone (BPF_PROG_RUN); ARGS go to
#                                    xvmq-bench (--repeat, --rounds, --cpu, --json; see --help)
#   ./tools/bench.sh switch [ARGS]   xvmq against the Linux bridge with real traffic, namespaces and
#                                    QEMU guests as VMs; ARGS go to tools/bench/switch_bench.py
#                                    (--rounds, --quick, --guests-only, --json; see --help)
#   ./tools/bench.sh scale [ARGS]    switchd with 1,000 VM NICs: time per NIC to connect and remove,
#                                    memory, reachability; ARGS go to tools/bench/scale_bench.py
#                                    (--nics, --json; see --help)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
xvmq_require_root
xvmq_install_packages
xvmq_build
if [[ ${1:-} == switch ]]; then
  shift
  # A machine (or container) without systemd may have no bpffs mounted.
  mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
  echo "==> running the benchmark against the Linux bridge"
  exec /usr/bin/python3 "$XVMQ_ROOT/tools/bench/switch_bench.py" --build "$XVMQ_BUILD" "$@"
fi
if [[ ${1:-} == scale ]]; then
  shift
  mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
  echo "==> running the scale benchmark"
  exec /usr/bin/python3 "$XVMQ_ROOT/tools/bench/scale_bench.py" --build "$XVMQ_BUILD" "$@"
fi
echo "==> running the classifier benchmark"
"$XVMQ_BUILD/tools/bench/xvmq-bench" "$@"
