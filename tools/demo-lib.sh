# What tools/demo.sh, tools/demo-qemu.sh and tools/demo-classifier.sh share;
# sourced after setup.sh. A demo sets EXT, SW and PIN_ROOT (and SWITCHD,
# SWITCHCTL_BIN when it runs switchd) and defines cleanup [RC], which removes
# what it made.

# Print each command before it runs, with the namespace it runs in.
host() { echo "host# $*"; "$@"; }

fail() {
  echo "demo: $*" >&2
  exit 1
}

# demo_begin TMP_PREFIX NAMESPACE...: start clean (a demo killed hard, by
# SIGKILL, leaves its namespaces and pins), run cleanup on exit, Ctrl-C and
# SIGTERM, and make the scratch directory $TMP.
demo_begin() {
  local prefix=$1
  shift
  for ns in "$@"; do
    if [[ -e /run/netns/$ns ]]; then ip netns del "$ns"; fi
  done
  rm -rf "$PIN_ROOT"
  trap cleanup EXIT
  trap 'cleanup 130' INT
  trap 'cleanup 143' TERM
  TMP=$(mktemp -d "/tmp/$prefix.XXXXXX")
}

# demo_del_namespaces NAMESPACE...: those that exist, for cleanup.
demo_del_namespaces() {
  for ns in "$@"; do
    if [[ -e /run/netns/$ns ]]; then host ip netns del "$ns"; fi
  done
}

# The uplink: ext0 in $EXT (the outside) -- up0 in $SW, two queues each way.
demo_uplink_veth() {
  host ip -n "$EXT" link add ext0 numrxqueues 2 numtxqueues 2 type veth \
    peer name up0 netns "$SW" numrxqueues 2 numtxqueues 2
}

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
say() { echo "    $*"; }
# Print each command before it runs, with where it runs.
in_ns() {
  local ns=$1
  shift
  echo "$ns# $*" >&2 # stderr: the output may be filtered, the command is not
  ip netns exec "$ns" "$@"
}
switchctl() {
  echo "host# switchctl $*"
  "$SWITCHCTL_BIN" "$@"
}
quiet_switchctl() { "$SWITCHCTL_BIN" "$@"; }

# demo_add_namespaces NAMESPACE...: each made, without IPv6 (nothing of
# the host's leaks into the demo's traffic).
demo_add_namespaces() {
  for ns in "$@"; do
    host ip netns add "$ns"
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
}

# switchd in $SW (2 vmqs, a worker per receive queue, the classifier left on
# up0 at exit), its log in $TMP/switchd.log; SWITCHD_PID once it is ready.
demo_start_switchd() {
  local cmd=("$SWITCHD" --state-dir "$TMP/state" --socket "$XVMQ_SOCKET" --pin-root "$PIN_ROOT"
    --max-vmqs 2 --queue-cpus "0:0,1:$(($(nproc) > 1 ? 1 : 0))" --detach-on-exit)
  echo "$SW# ${cmd[*]#"$XVMQ_ROOT"/} &"
  nsenter --net="/run/netns/$SW" "${cmd[@]}" >"$TMP/switchd.log" 2>&1 &
  SWITCHD_PID=$!
  for ((i = 0; i < 100; i++)); do
    grep -qs "ready on" "$TMP/switchd.log" && break
    kill -0 "$SWITCHD_PID" 2>/dev/null || fail "switchd exited: $(tail -n 3 "$TMP/switchd.log")"
    sleep 0.1
  done
  grep -q "ready on" "$TMP/switchd.log" || fail "switchd did not get ready"
}

# For cleanup: switchd stopped, then the namespaces and pins removed, its
# log shown when the demo failed (RC), the scratch directory removed.
demo_stop_switchd() {
  if [[ -n $SWITCHD_PID ]] && kill -0 "$SWITCHD_PID" 2>/dev/null; then
    echo "host# kill -TERM switchd    # --detach-on-exit: the classifier leaves up0"
    kill -TERM "$SWITCHD_PID"
    wait "$SWITCHD_PID" 2>/dev/null
  fi
}
demo_remove_all() {
  local rc=$1
  shift
  demo_del_namespaces "$@"
  if [[ -e $PIN_ROOT ]]; then host rm -rf "$PIN_ROOT"; fi
  if ((rc != 0)) && [[ -n $TMP && -s $TMP/switchd.log ]]; then
    echo "--- switchd's log"
    tail -n 20 "$TMP/switchd.log"
  fi
  if [[ -n $TMP ]]; then rm -rf "$TMP"; fi
}

# demo_move_vmq VM IP: VM's vmq to another processor while the outside host
# pings it, then back to spread.
demo_move_vmq() {
  step "dynamic VMQ: $1's vmq moves to another processor while the outside host pings it"
  switchctl vmq set "$1" --cpu "$(($(nproc) > 1 ? 1 : 0))"
  in_ns "$EXT" ping -c 3 -i 0.2 -W 3 "$2" | grep -E "packet loss"
  switchctl vmq set "$1" --spread
}

# demo_lifecycle_backwards VM...: each VM's NIC and port removed in Hyper-V's
# order, the uplink detached, the last events shown.
demo_lifecycle_backwards() {
  step "the lifecycle backwards: nic disconnect, nic delete, port teardown, port delete"
  for vm in "$@"; do
    switchctl nic disconnect "$vm"
    switchctl nic delete "$vm"
    switchctl port teardown "$vm"
    switchctl port delete "$vm"
  done
  switchctl uplink detach
  switchctl events | tail -n 6
}
