#!/usr/bin/env bash
# Install what xvmq needs from Debian 12's packages (when missing) and build
# it into ./build. Sourced or run by the other tools/*.sh scripts.
set -euo pipefail

XVMQ_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
XVMQ_BUILD="${XVMQ_BUILD:-$XVMQ_ROOT/build}"
# More cmake arguments for the build (tools/test.sh --sanitize sets them).
[[ -v XVMQ_CMAKE_ARGS ]] || XVMQ_CMAKE_ARGS=()

XVMQ_PACKAGES=(
  build-essential cmake pkg-config clang llvm
  libbpf-dev libxdp-dev xdp-tools bpftool libelf-dev zlib1g-dev
  libcli11-dev libgtest-dev libbenchmark-dev nlohmann-json3-dev
  libmnl-dev libsystemd-dev libtomlplusplus-dev prometheus-cpp-dev
  iproute2 iputils-ping procps ethtool netsniff-ng iperf3 tcpdump python3-scapy jq
  systemd util-linux
  libclang-rt-14-dev  # the sanitizers' and libFuzzer's runtimes for clang (tools/fuzz.sh)
  # qemu_tap_test's guest (tests/lib/qemu_guest.h): QEMU under TCG, Debian's
  # cloud kernel and its virtio_net modules, busybox for the initramfs
  qemu-system-x86 linux-image-cloud-amd64 busybox-static
  # xvmq-cni's IPAM plugins (host-local, static in /usr/lib/cni), for cni_test
  # and cni_fabric_test; the fabric's trunk rules (nft) in cni_fabric_test
  containernetworking-plugins nftables
)

xvmq_install_packages() {
  local missing=()
  for p in "${XVMQ_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "==> installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

xvmq_build() {
  echo "==> building in $XVMQ_BUILD"
  local launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -S "$XVMQ_ROOT" -B "$XVMQ_BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${launcher[@]}" "${XVMQ_CMAKE_ARGS[@]}" >/dev/null
  cmake --build "$XVMQ_BUILD" -j"$(nproc)" 2>&1 | grep -E "^\[ *[0-9]+%\] (Built|Linking)|error|warning" || true
  # A failed build leaves no trace in the filtered output above: check it.
  cmake --build "$XVMQ_BUILD" -j"$(nproc)" >/dev/null
}

xvmq_require_root() {
  if [[ $EUID -ne 0 ]]; then
    echo "xvmq: $(basename "$0") needs root (XDP, AF_XDP and network namespaces); try: sudo $0" >&2
    exit 1
  fi
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  xvmq_require_root
  xvmq_install_packages
  xvmq_build
fi
