# What tools/demo.sh and tools/demo-classifier.sh share; sourced after
# setup.sh. A demo sets EXT, SW and PIN_ROOT and defines cleanup [RC], which
# removes what it made.

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
