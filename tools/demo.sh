#!/usr/bin/env bash
# The xvmq demo: switchd and switchctl build a switch with three VMs on an
# uplink with two receive queues, traffic runs through it, and `show` and
# `stats` tell which frames took the VMQ path and which the default queue.
#
#   xvmq-demo-ext:  ext0 10.77.0.100 (the outside world)
#        |  veth, 2 queues each way
#   xvmq-demo-sw:   up0 (uplink: switchd's classifier)   vm1-host  vm2-host  vm3-host
#                                                           |         |         |
#   xvmq-demo-vmN:                                        eth0      eth0      eth0
#     vm1 10.77.0.1, access VLAN 0, a vmq        (the VMQ fast path)
#     vm2 10.77.0.2, access VLAN 0, --vmq off    (the default queue and software switch)
#     vm3 10.77.0.3, trunk VLANs 10,20, native (untagged) VLAN 0, a vmq
#
# Every namespace, link, pin and process it makes is removed at the end, on
# failure and on Ctrl-C too. Nothing is sent in the root namespace.
#
#   ./tools/demo.sh [--vms netns|qemu]    netns (the default): the VMs above;
#                                         qemu: real QEMU guests (tools/demo-qemu.sh)
set -euo pipefail
case "${1:-} ${2:-}" in
  " " | "--vms netns" | "--vms=netns ") ;;
  "--vms qemu" | "--vms=qemu ") exec "$(dirname "${BASH_SOURCE[0]}")/demo-qemu.sh" ;;
  *)
    echo "usage: $0 [--vms netns|qemu]" >&2
    exit 2
    ;;
esac
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
source "$(dirname "${BASH_SOURCE[0]}")/demo-lib.sh"
xvmq_require_root

P=xvmq-demo
EXT=$P-ext
SW=$P-sw
VMS=("$P-vm1" "$P-vm2" "$P-vm3")
NAMESPACES=("$EXT" "$SW" "${VMS[@]}")
PIN_ROOT=/sys/fs/bpf/xvmq-demo
SWITCHD="$XVMQ_BUILD/switchd/switchd"
SWITCHCTL_BIN="$XVMQ_BUILD/tools/switchctl/switchctl"
FRAMES="$XVMQ_BUILD/tests/xvmq-frames"
# libxdp keeps state of its own in <bpffs>/xdp: beside the demo's pins, not
# in the host's /sys/fs/bpf/xdp.
export LIBXDP_BPFFS=$PIN_ROOT

TMP=""
SWITCHD_PID=""
BG_PIDS=()


cleanup() {
  local rc=${1:-$?}
  trap - EXIT INT TERM
  set +e
  step "tearing down"
  for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  demo_stop_switchd
  demo_remove_all "$rc" "${NAMESPACES[@]}"
  if ((rc == 0)); then echo "demo done: namespaces, links, switchd, program and pins removed"; fi
  exit "$rc"
}

step "installing what is missing and building (progress below)"
xvmq_install_packages
xvmq_build
for bin in "$SWITCHD" "$SWITCHCTL_BIN" "$FRAMES"; do [[ -x $bin ]] || fail "$bin was not built"; done

demo_begin xvmq-demo "${NAMESPACES[@]}"
export XVMQ_SOCKET=$TMP/switchd.sock

step "the network: an outside host, the switch host with its uplink (2 receive queues), three VMs"
mountpoint -q /sys/fs/bpf || host mount -t bpf bpf /sys/fs/bpf
mkdir -p "$PIN_ROOT"
demo_add_namespaces "${NAMESPACES[@]}"
demo_uplink_veth
host ip -n "$EXT" addr add 10.77.0.100/24 dev ext0
# Frames the software switch carries cross AF_XDP sockets, which carry no
# checksum offload state: checksums are computed in software, and
# segmentation is done before. GRO stays on where frames are received: a
# veth whose peer has GRO on takes frames redirected in XDP (kernel delivery
# into the VMs, VM egress into the uplink).
ip netns exec "$EXT" ethtool -K ext0 tx off gso off tso off gro on >/dev/null
host ip -n "$EXT" link set ext0 up
host ip -n "$SW" link set up0 up
for i in 1 2 3; do
  ns=${VMS[i - 1]}
  host ip -n "$ns" link add eth0 address "02:00:00:00:00:0$i" numrxqueues 2 numtxqueues 2 type veth \
    peer name "vm$i-host" netns "$SW" numrxqueues 2 numtxqueues 2
  host ip -n "$ns" addr add "10.77.0.$i/24" dev eth0
  ip netns exec "$ns" ethtool -K eth0 tx off gso off tso off gro on >/dev/null
  host ip -n "$ns" link set eth0 up
  host ip -n "$SW" link set "vm$i-host" up
done

step "switchd on the switch host: 2 vmqs, one worker per receive queue"
demo_start_switchd
say "switchd is ready; switchctl finds it through XVMQ_SOCKET=$XVMQ_SOCKET"

step "the switch, step by step, in Hyper-V's order: port create, nic create, nic connect"
switchctl uplink attach up0
switchctl port create vm1
switchctl nic create vm1 --mac 02:00:00:00:00:01 --backend vm1-host
switchctl nic connect vm1
switchctl port create vm2
switchctl nic create vm2 --mac 02:00:00:00:00:02 --backend vm2-host --vmq off
switchctl nic connect vm2
switchctl port create vm3
switchctl nic create vm3 --mac 02:00:00:00:00:03 --backend vm3-host --trunk 10,20 --native-vlan 0
switchctl nic connect vm3
switchctl show

step "ping: the outside host to each VM, and VM to VM"
for i in 1 2 3; do
  in_ns "$EXT" ping -c 3 -i 0.2 -W 2 "10.77.0.$i" | grep -E "bytes from|packet loss"
done
in_ns "${VMS[0]}" ping -c 3 -i 0.2 -W 2 10.77.0.2 | grep -E "bytes from|packet loss"
in_ns "${VMS[2]}" ping -c 3 -i 0.2 -W 2 10.77.0.1 | grep -E "bytes from|packet loss"

iperf() {
  local server_ns=$1 client_ns=$2 addr=$3 what=$4
  step "iperf3, 3 s of TCP: $what"
  ip netns exec "$server_ns" iperf3 -s -1 -B "$addr" >/dev/null 2>&1 &
  BG_PIDS+=($!)
  for ((i = 0; i < 50; i++)); do
    ip netns exec "$server_ns" ss -ltn 2>/dev/null | grep -q "$addr:5201" && break
    sleep 0.1
  done
  in_ns "$client_ns" iperf3 -c "$addr" -t 3 -i 1 -f m --connect-timeout 3000 |
    grep -E "sec .*bits/sec" | sed 's/^/    /'
  wait "${BG_PIDS[-1]}" 2>/dev/null || true
}
iperf "${VMS[1]}" "${VMS[0]}" 10.77.0.2 "vm1 -> vm2 (VM to VM)"
iperf "$EXT" "${VMS[0]}" 10.77.0.100 "vm1 -> the outside host"
iperf "${VMS[0]}" "$EXT" 10.77.0.1 "the outside host -> vm1 (its vmq)"

step "VLANs: 500 frames tagged VLAN 10 for vm3 (a trunk), 500 tagged VLAN 20 for vm1 (access, VLAN 0)"
(ip netns exec "${VMS[2]}" "$FRAMES" recv --dev eth0 --seconds 5 --idle-ms 800 >"$TMP/vm3.recv" 2>&1) &
BG_PIDS+=($!)
(ip netns exec "${VMS[0]}" "$FRAMES" recv --dev eth0 --seconds 5 --idle-ms 800 >"$TMP/vm1.recv" 2>&1) &
BG_PIDS+=($!)
sleep 0.5
in_ns "$EXT" "$FRAMES" send --dev ext0 --dst 02:00:00:00:00:03 --vlan 10 --count 500 --rate 20000 >/dev/null
in_ns "$EXT" "$FRAMES" send --dev ext0 --dst 02:00:00:00:00:01 --vlan 20 --count 500 --rate 20000 >/dev/null
wait "${BG_PIDS[-1]}" "${BG_PIDS[-2]}" 2>/dev/null || true
frames_of() { /usr/bin/python3 -c 'import json,sys
lines=[l for l in open(sys.argv[1]) if l.startswith("{")]
print(sum(v["frames"] for v in json.loads(lines[-1])["streams"].values()) if lines else 0)' "$1"; }
got3=$(frames_of "$TMP/vm3.recv")
got1=$(frames_of "$TMP/vm1.recv")
say "vm3 received $got3 test frames (VLAN 10 is one of its trunk VLANs)"
say "vm1 received $got1 test frames (VLAN 20 is not its VLAN: none cross)"
((got3 == 500 && got1 == 0)) || fail "expected 500 frames in vm3 and 0 in vm1"

step "what switchd shows and counts"
switchctl show
switchctl stats
# The same counters as JSON, read for the summary below.
quiet_switchctl stats --json >"$TMP/stats.json"
/usr/bin/python3 - "$TMP/stats.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
nics = s.get("nics", {})
print("\n    Which path each VM's received frames took:")
for port in ("vm1", "vm2", "vm3"):
    n = nics.get(port, {})
    how = "its vmq's processor -> its backend" if n.get("delivery") == "kernel" else "its vmq socket"
    print(f"      {port}: {n.get('fast_frames', 0):>8} frames by the VMQ path (classifier -> {how}),"
          f" {n.get('default_frames', 0):>8} by the default queue (software switch)")
# The demo checks what it claims: vm2 (no vmq) got nothing by the VMQ path,
# vm1 and vm3 (vmqs) did, delivered by the kernel.
if nics["vm2"]["fast_frames"] != 0 or not nics["vm1"]["fast_frames"] or not nics["vm3"]["fast_frames"]:
    sys.exit("demo: the paths are not as claimed")
if nics["vm1"].get("delivery") != "kernel" or nics["vm3"].get("delivery") != "kernel":
    sys.exit("demo: vm1 and vm3 are not kernel-delivered")
reasons = s.get("classifier", {}).get("reasons", {})
print("    The classifier's reasons for what did not go to a vmq:",
      ", ".join(f"{r} {v.get('frames', 0)}" for r, v in reasons.items() if v.get("frames", 0)))
EOF
say "vm2 has no vmq: all its frames come through the default queue. vm1 and vm3 have vmqs, delivered"
say "by the kernel: frames from the outside go from XDP into the VM's netdev, through the vmq's"
say "processor once the receiving CPU is busy, with no user-space hop; broadcasts (ARP) come through"
say "the software switch, which is why they have default-path frames too."

demo_move_vmq vm1 10.77.0.1

demo_lifecycle_backwards vm1 vm2 vm3
