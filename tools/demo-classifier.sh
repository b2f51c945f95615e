#!/usr/bin/env bash
# Build xvmq and show the uplink classifier alone (no switchd) sorting frames
# into VM queues, driven by xvmq-classify.
#
# Two network namespaces of its own, joined by a veth pair with two queues:
# frames sent from ext0 (xvmq-cdemo-ext) arrive on up0 (xvmq-cdemo-sw), where
# the classifier redirects each into the AF_XDP socket of its VM's vmq, or of
# the default queue, on the receive queue it arrived on. Everything it makes
# (namespaces, links, program, pins) is removed at the end, on failure and on
# Ctrl-C too. Nothing is sent in the root namespace.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
source "$(dirname "${BASH_SOURCE[0]}")/demo-lib.sh"
xvmq_require_root

EXT=xvmq-cdemo-ext
SW=xvmq-cdemo-sw
PIN_ROOT=/sys/fs/bpf/xvmq-cdemo
SERVE_SECONDS=5
CLASSIFY="$XVMQ_BUILD/tools/classify/xvmq-classify"
# libxdp keeps state of its own in <bpffs>/xdp: beside the demo's pins, not
# in the host's /sys/fs/bpf/xdp. The directory must exist before libxdp
# looks, or libxdp skips its dispatcher.
export LIBXDP_BPFFS=$PIN_ROOT

TMP=""
SERVE_PID=""
TEE_PID=""

# `ip netns exec` remounts /sys, so pins made under it vanish when it ends:
# the switch side runs with nsenter, which keeps the host's /sys/fs/bpf.
classify() { nsenter --net="/run/netns/$SW" "$CLASSIFY" --pin-root "$PIN_ROOT" "$@"; }

# Print each command before it runs, with the namespace it runs in.
sw() { echo "$SW# xvmq-classify $*"; classify "$@"; }
step() { printf '\n==> %s\n' "$*"; }

attached() { ip -n "$SW" link show up0 2>/dev/null | grep -q "prog/xdp"; }

cleanup() {
  local rc=${1:-$?}
  trap - EXIT INT TERM
  set +e
  step "tearing down"
  if [[ -n $SERVE_PID ]]; then
    kill -TERM "$SERVE_PID" 2>/dev/null
    wait "$SERVE_PID" 2>/dev/null
  fi
  if [[ -n $TEE_PID ]]; then wait "$TEE_PID" 2>/dev/null; fi
  if attached; then sw detach up0 --unpin; fi
  demo_del_namespaces "$EXT" "$SW"
  if [[ -e $PIN_ROOT ]]; then host rm -rf "$PIN_ROOT"; fi
  if [[ -n $TMP ]]; then rm -rf "$TMP"; fi
  if ((rc == 0)); then echo "demo done: namespaces, links, program and pins removed"; fi
  exit "$rc"
}

xvmq_install_packages
xvmq_build
[[ -x $CLASSIFY ]] || fail "$CLASSIFY was not built"

demo_begin xvmq-cdemo "$EXT" "$SW"

step "two namespaces and a veth pair with 2 queues: ext0 (the outside) -- up0 (the uplink)"
echo "'$SW# xvmq-classify ...' runs: nsenter --net=/run/netns/$SW ${CLASSIFY#"$XVMQ_ROOT"/} --pin-root $PIN_ROOT ..."
# A machine (or container) without systemd may have no bpffs mounted.
mountpoint -q /sys/fs/bpf || host mount -t bpf bpf /sys/fs/bpf
echo "host# mkdir -p $PIN_ROOT    # the pins, and libxdp's own state (LIBXDP_BPFFS)"
mkdir -p "$PIN_ROOT"
host ip netns add "$EXT"
host ip netns add "$SW"
for ns in "$EXT" "$SW"; do
  host ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
demo_uplink_veth
host ip -n "$EXT" link set ext0 up
host ip -n "$SW" link set up0 up

step "the classifier on up0, and one filter per VM"
sw attach up0
sw filter add up0 02:00:00:00:00:01 --vmq 1
sw filter add up0 02:00:00:00:00:02 --vlan 10 --vmq 2 --strip-tag
sw filter list up0

step "sockets for the default queue (vmq 0), VM1 (vmq 1) and VM2 (vmq 2) on each receive queue"
mkfifo "$TMP/serve.out"
touch "$TMP/serve.log"
tee "$TMP/serve.log" <"$TMP/serve.out" &
TEE_PID=$!
echo "$SW# xvmq-classify serve up0 --vmq 1 --vmq 2 --seconds $SERVE_SECONDS --print &"
# Not through classify(): $! must be serve itself, for the teardown's kill.
nsenter --net="/run/netns/$SW" "$CLASSIFY" --pin-root "$PIN_ROOT" \
  serve up0 --vmq 1 --vmq 2 --seconds "$SERVE_SECONDS" --print >"$TMP/serve.out" 2>&1 &
SERVE_PID=$!
for ((i = 0; i < 100; i++)); do
  grep -q "receiving for" "$TMP/serve.log" && break
  kill -0 "$SERVE_PID" 2>/dev/null || break
  sleep 0.1
done
grep -q "receiving for" "$TMP/serve.log" || fail "serve did not open its sockets"

step "20 frames from the outside, sent on ext0"
echo "$EXT# /usr/bin/python3 tools/demo-send.py ext0"
ip netns exec "$EXT" /usr/bin/python3 "$XVMQ_ROOT/tools/demo-send.py" ext0

wait "$SERVE_PID" || fail "serve failed"
SERVE_PID=""
wait "$TEE_PID" || true
TEE_PID=""

step "what the classifier counted"
sw stats up0

# The figures, from the JSON form of the same counters.
read -r v0f v0b v1f v1b v2f v2b miss bcast total < <(classify stats up0 --json | /usr/bin/python3 -c '
import json, sys
s = json.load(sys.stdin)
v = {r["vmq"]: r for r in s["vmqs"]}
g = lambda i, k: v.get(i, {}).get(k, 0)
r = {x["reason"]: x["frames"] for x in s["reasons"]}
print(g(0, "frames"), g(0, "bytes"), g(1, "frames"), g(1, "bytes"), g(2, "frames"), g(2, "bytes"),
      r["miss"], r["broadcast"], s["total_frames"])')

step "what the figures show"
echo " - vmq 1: VM1's $v1f frames went straight from XDP into VM1's sockets: the VMQ fast path, no switch lookup."
echo " - vmq 2: VM2's $v2f VLAN 10 frames left ext0 tagged (64 bytes) and reached VM2 untagged ($v2b bytes = $v2f x 60): --strip-tag removed the tag."
echo " - vmq 0: the default queue took the $v0f others for the software switch: $miss misses (VM2 on VLAN 20 has no filter; 02:00:00:00:00:99 is no VM's) and $bcast broadcasts."
echo " - each receive queue has its own socket per vmq (the table from serve): a frame is delivered on the queue it arrived on."
echo " - each frame is counted once, $v1f + $v2f in vmqs 1-2 and $miss + $bcast by reason = $total; vmq 0 counts those $v0f again because they reached the default socket."
expected="10 620 5 300 5 300 7 3 20"
[[ "$v0f $v0b $v1f $v1b $v2f $v2b $miss $bcast $total" == "$expected" ]] ||
  fail "unexpected figures: vmq0 $v0f/$v0b vmq1 $v1f/$v1b vmq2 $v2f/$v2b miss $miss broadcast $bcast total $total; expected $expected (frames/bytes)"
