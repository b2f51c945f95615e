#!/usr/bin/env bash
# The xvmq demo with real QEMU guests (`./tools/demo.sh --vms qemu`): the
# story of the default demo, with three guests booted from Debian's cloud
# kernel (under TCG: DESIGN.md fact 16) instead of namespaces, each driven
# over its serial port by xvmq-guest (tests/lib/guest_tool.cpp).
#
#   xvmq-qdemo-ext:  ext0 10.77.0.100 (the outside world)
#        |  veth, 2 queues each way
#   xvmq-qdemo-sw:   up0 (uplink: switchd's classifier)  $TMP/vm1.sock   vmt2 (tap)   vmt3 (tap)
#                                                             |               |             |
#   QEMU guests:                                        vm1 eth0        vm2 eth0      vm3 eth0
#     vm1 10.77.0.1, vhost-user, a vmq     (its vmq's AF_XDP socket drained into the guest's ring)
#     vm2 10.77.0.2, tap, --vmq off        (the default queue and software switch)
#     vm3 10.77.0.3, tap, a vmq            (kernel delivery: XDP -> the tap, on the receiving CPU)
#
# Every namespace, tap, pin, QEMU and temporary file it makes is removed at
# the end, on failure and on Ctrl-C too. Nothing is sent in the root
# namespace; the guests' addresses exist only in them and in the outside
# host's namespace.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
source "$(dirname "${BASH_SOURCE[0]}")/demo-lib.sh"
xvmq_require_root

P=xvmq-qdemo
EXT=$P-ext
SW=$P-sw
NAMESPACES=("$EXT" "$SW")
PIN_ROOT=/sys/fs/bpf/xvmq-qdemo
SWITCHD="$XVMQ_BUILD/switchd/switchd"
SWITCHCTL_BIN="$XVMQ_BUILD/tools/switchctl/switchctl"
GUEST_BIN="$XVMQ_BUILD/tests/xvmq-guest"
export LIBXDP_BPFFS=$PIN_ROOT

TMP=""
SWITCHD_PID=""
declare -A GUEST_PID=()
BG_PIDS=()

# One shell command line in a guest, printed as it runs; its output and status.
guest() {
  local vm=$1
  shift
  echo "$vm (guest)# $*" >&2
  "$GUEST_BIN" run --socket "$TMP/$vm.ctl" --timeout 60 -- "$*"
}

cleanup() {
  local rc=${1:-$?}
  trap - EXIT INT TERM
  set +e
  step "tearing down"
  for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  if ((rc != 0)) && [[ -n $TMP ]]; then
    for vm in "${!GUEST_PID[@]}"; do
      [[ -S $TMP/$vm.ctl ]] || { echo "--- $vm: xvmq-guest"; tail -n 15 "$TMP/$vm.log"; continue; }
      echo "--- $vm: the guest's console (last lines)"
      "$GUEST_BIN" console --socket "$TMP/$vm.ctl" | tail -n 8
    done
  fi
  # xvmq-guest kills its QEMU and removes the guest's files on SIGTERM.
  for vm in "${!GUEST_PID[@]}"; do
    echo "host# kill -TERM ${GUEST_PID[$vm]}    # xvmq-guest of $vm, and its QEMU"
    kill -TERM "${GUEST_PID[$vm]}" 2>/dev/null
  done
  for vm in "${!GUEST_PID[@]}"; do wait "${GUEST_PID[$vm]}" 2>/dev/null; done
  demo_stop_switchd
  for tap in vmt2 vmt3; do
    if [[ -e /run/netns/$SW ]] && ip -n "$SW" link show "$tap" >/dev/null 2>&1; then host ip -n "$SW" link del "$tap"; fi
  done
  demo_remove_all "$rc" "${NAMESPACES[@]}"
  if ((rc == 0)); then echo "demo done: guests, QEMU, taps, namespaces, switchd, program and pins removed"; fi
  exit "$rc"
}

step "installing what is missing and building (progress below)"
xvmq_install_packages
xvmq_build
for bin in "$SWITCHD" "$SWITCHCTL_BIN" "$GUEST_BIN"; do [[ -x $bin ]] || fail "$bin was not built"; done
ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 || fail "no /boot/vmlinuz-*-cloud-amd64 (linux-image-cloud-amd64)"

demo_begin xvmq-qdemo "${NAMESPACES[@]}"
export XVMQ_SOCKET=$TMP/switchd.sock

step "the network: an outside host, the switch host with its uplink (2 receive queues) and two taps"
mountpoint -q /sys/fs/bpf || host mount -t bpf bpf /sys/fs/bpf
mkdir -p "$PIN_ROOT"
demo_add_namespaces "${NAMESPACES[@]}"
demo_uplink_veth
host ip -n "$EXT" addr add 10.77.0.100/24 dev ext0
# Full checksums from the outside host: a frame that crosses AF_XDP or is
# redirected in XDP carries no partial checksum for the guest to finish. GRO
# on ext0: the guests' frames that leave by the uplink are redirected into
# it in XDP.
ip netns exec "$EXT" ethtool -K ext0 tx off gso off tso off gro on >/dev/null
host ip -n "$EXT" link set ext0 up
host ip -n "$SW" link set up0 up
for i in 2 3; do
  host ip -n "$SW" tuntap add dev "vmt$i" mode tap
  host ip -n "$SW" link set "vmt$i" up
done

step "switchd on the switch host: 2 vmqs, one worker per receive queue"
demo_start_switchd
say "switchd is ready; switchctl finds it through XVMQ_SOCKET=$XVMQ_SOCKET"

step "the switch in Hyper-V's order: port create, nic create (nic connect once a guest holds its tap)"
switchctl uplink attach up0
switchctl port create vm1
switchctl nic create vm1 --mac 02:00:00:00:00:01 --backend "vhost-user:$TMP/vm1.sock"
switchctl nic connect vm1
say "vm1's backend is a vhost-user socket switchd serves: it listens now, and QEMU connects to it"
switchctl port create vm2
switchctl nic create vm2 --mac 02:00:00:00:00:02 --backend vmt2 --vmq off
switchctl port create vm3
switchctl nic create vm3 --mac 02:00:00:00:00:03 --backend vmt3

step "three QEMU guests (TCG), booted together: Debian's cloud kernel, a busybox initramfs"
start_guest() {
  local vm=$1 backend=$2 mac=$3 addr=$4
  local argv=("$GUEST_BIN" serve --socket "$TMP/$vm.ctl" "${backend%%=*}" "${backend#*=}" --mac "$mac"
    --addr "$addr" --boot-limit 150)
  echo "$SW# ${argv[*]#"$XVMQ_ROOT"/} &"
  nsenter --net="/run/netns/$SW" "${argv[@]}" >"$TMP/$vm.log" 2>&1 &
  GUEST_PID[$vm]=$!
}
start_guest vm1 "--vhost-user=$TMP/vm1.sock" 02:00:00:00:00:01 10.77.0.1/24
start_guest vm2 --tap=vmt2 02:00:00:00:00:02 10.77.0.2/24
start_guest vm3 --tap=vmt3 02:00:00:00:00:03 10.77.0.3/24
for vm in vm1 vm2 vm3; do
  for ((i = 0; i < 1600; i++)); do
    [[ -S $TMP/$vm.ctl ]] && break
    kill -0 "${GUEST_PID[$vm]}" 2>/dev/null || fail "$vm did not boot: $(tail -n 5 "$TMP/$vm.log")"
    sleep 0.1
  done
  [[ -S $TMP/$vm.ctl ]] || fail "$vm did not boot in time"
  say "$vm: $(head -n 1 "$TMP/$vm.log")"
done
say "the QEMU command lines (xvmq-guest runs them; docs/guests.md explains each option):"
for vm in vm1 vm2; do
  qemu=$(cat "/proc/${GUEST_PID[$vm]}/task/${GUEST_PID[$vm]}/children")
  say "  $vm: $(tr '\0' ' ' <"/proc/${qemu%% *}/cmdline" | sed -E "s#$TMP#\$TMP#g; s#/tmp/xvmq-guest-[^/]*#\$GUEST#g")"
done

step "the taps are held by QEMU now: connect vm2 and vm3"
switchctl nic connect vm2
switchctl nic connect vm3
switchctl show

step "ping: the outside host to each guest, and guest to guest"
for i in 1 2 3; do
  in_ns "$EXT" ping -c 3 -i 0.2 -W 3 "10.77.0.$i" | grep -E "bytes from|packet loss"
done
guest vm1 ping -c 3 -i 0.2 -W 3 10.77.0.3 | grep -E "bytes from|packet loss"
guest vm3 ping -c 3 -i 0.2 -W 3 10.77.0.2 | grep -E "bytes from|packet loss"
guest vm2 ping -c 3 -i 0.2 -W 3 10.77.0.1 | grep -E "bytes from|packet loss"

KIB=1024
sha() { sha256sum "$1" | cut -d' ' -f1; }
# guest_listen VM PORT: nc listening in the guest, writing to /tmp/rx. Its
# input stays open (sleep): at the end of its input busybox's nc half-closes
# the connection, and a busybox nc sending to it would stop there.
guest_listen() {
  guest "$1" "rm -f /tmp/rx; sleep 120 | nc -l -p $2 > /tmp/rx & for i in \$(seq 100); do netstat -ltn | grep -q ':$2 ' && break; sleep 0.1; done; netstat -ltn | grep -q ':$2 '"
}
# guest_received VM: the SHA-256 of /tmp/rx once nc ended.
guest_received() {
  guest "$1" "for i in \$(seq 200); do pidof nc >/dev/null || break; sleep 0.1; done; sha256sum /tmp/rx | cut -d' ' -f1"
}

step "TCP: $KIB KiB from the outside host into each guest, checked by SHA-256"
head -c $((KIB * 1024)) /dev/urandom >"$TMP/blob"
want=$(sha "$TMP/blob")
for i in 1 2 3; do
  vm=vm$i
  guest_listen "$vm" 5001 >/dev/null
  t0=$(date +%s%N)
  in_ns "$EXT" /usr/bin/python3 -c "import socket; s=socket.create_connection(('10.77.0.$i',5001),timeout=30); s.sendall(open('$TMP/blob','rb').read()); s.shutdown(socket.SHUT_WR); s.recv(1); s.close()"
  got=$(guest_received "$vm")
  ms=$((($(date +%s%N) - t0) / 1000000))
  [[ $got == "$want" ]] || fail "$vm received a file whose SHA-256 is $got, not $want"
  say "$vm received $KIB KiB in $((ms / 1000)).$((ms % 1000 / 100)) s, SHA-256 equal"
done

step "TCP between guests: vm1 (vhost-user) -> vm3 (tap), vm3 -> vm2 (tap, no vmq), 512 KiB each"
for pair in "vm1 vm3 10.77.0.3" "vm3 vm2 10.77.0.2"; do
  read -r from to addr <<<"$pair"
  guest_listen "$to" 5002 >/dev/null
  sent=$(guest "$from" "dd if=/dev/urandom of=/tmp/tx bs=1024 count=512 2>/dev/null; sha256sum /tmp/tx | cut -d' ' -f1")
  guest "$from" "nc $addr 5002 < /tmp/tx"
  got=$(guest_received "$to")
  [[ $got == "$sent" ]] || fail "$to received a file whose SHA-256 is $got, not $sent"
  say "$from -> $to: 512 KiB, SHA-256 equal"
done

step "what switchd shows and counts"
switchctl stats
quiet_switchctl show --json >"$TMP/show.json"
quiet_switchctl stats --json >"$TMP/stats.json"
/usr/bin/python3 - "$TMP/show.json" "$TMP/stats.json" <<'EOF'
import json, sys
show = {p["name"]: p.get("nic") or {} for p in json.load(open(sys.argv[1]))["ports"]}
s = json.load(open(sys.argv[2]))
nics = s.get("nics", {})
print("\n    Each guest's received frames, by path (stats --json, per NIC):")
print("      %-4s %-10s %-8s %12s %15s %16s" % ("nic", "backend", "delivery", "fast_frames", "default_frames",
                                                 "vhost_rx_frames"))
for port, backend in (("vm1", "vhost-user"), ("vm2", "tap"), ("vm3", "tap")):
    n = nics.get(port, {})
    print("      %-4s %-10s %-8s %12d %15d %16d" % (port, backend, show[port].get("delivery") or "-",
                                                  n.get("fast_frames", 0), n.get("default_frames", 0),
                                                  n.get("vhost_rx_frames", 0)))
drops = {p: {k: v for k, v in nics.get(p, {}).get("drops", {}).items() if v} for p in ("vm1", "vm2", "vm3")}
print("      drops:", ", ".join("%s %s" % (p, d or "none") for p, d in drops.items()))
# The demo checks what it claims.
v1, v2, v3 = nics["vm1"], nics["vm2"], nics["vm3"]
if v2["fast_frames"] != 0 or not v1["fast_frames"] or not v3["fast_frames"]:
    sys.exit("demo: the paths are not as claimed")
if show["vm1"].get("delivery") != "xsk" or show["vm3"].get("delivery") != "kernel":
    sys.exit("demo: vm1 is not on xsk delivery or vm3 not on kernel delivery")
if not v1["vhost_rx_frames"] or v2["vhost_rx_frames"] or v3["vhost_rx_frames"]:
    sys.exit("demo: only vm1 puts frames into a guest's ring itself")
lost1 = sum(nics["vm1"].get("drops", {}).values())
if v1["vhost_rx_frames"] + lost1 != v1["fast_frames"] + v1["default_frames"]:
    sys.exit("demo: vm1's ring got %d frames and %d were dropped, of %d + %d that came for it"
             % (v1["vhost_rx_frames"], lost1, v1["fast_frames"], v1["default_frames"]))
print("      vm1: %d + %d frames came for it = %d placed into its ring + %d dropped"
      % (v1["fast_frames"], v1["default_frames"], v1["vhost_rx_frames"], lost1))
EOF
say "fast_frames: what the classifier steered to the NIC's vmq (the VMQ path). default_frames: what the"
say "software switch delivered from the default queue: broadcasts (ARP), and everything for vm2, which has"
say "no vmq. vhost_rx_frames: what switchd's worker wrote into a guest's virtio receive ring itself, only for"
say "vm1 (vhost-user): its vmq's AF_XDP socket is drained straight into the guest's ring, one copy, no tap and"
say "no skb. What it could not place is dropped and counted: vhost_not_ready before QEMU had set up the"
say "rings, vhost_rx_ring_full when the guest had no free receive buffer (TCP sends those frames again)."
say "vm3's vmq is delivered by the kernel: XDP redirects into its tap (DEVMAP, tun_xdp_xmit) on the CPU"
say "that received the frame (a tap's receive work is QEMU's), with no user-space hop; QEMU copies from the"
say "tap into the guest's ring. Given a processor (below), the vmq's frames go through it (CPUMAP) first."
say "Between these guests the frames cross switchd's software switch (what vm1 sends leaves its ring through"
say "the worker; vm2 has no vmq): the receiver counts them as default_frames, as it does broadcasts."

demo_move_vmq vm3 10.77.0.3

demo_lifecycle_backwards vm1 vm2 vm3
