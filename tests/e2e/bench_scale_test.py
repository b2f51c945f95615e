#!/usr/bin/python3
"""The scale benchmark end to end, in its smoke form (--nics 20).

It checks the tool, not the speed: every NIC was timed and answered, the
memory readings and the buffer figures are there, the JSON parses, and the
pools were whole after the NICs were removed. Needs root; skipped (77)
without it unless CI=true.
"""
import json
import os
import subprocess
import sys
import tempfile

build, script = sys.argv[1], sys.argv[2]
if os.geteuid() != 0:
    print("bench_scale_test: needs root")
    sys.exit(1 if os.environ.get("CI") == "true" else 77)

NICS = 20
with tempfile.TemporaryDirectory(prefix="xvmq-bench-test.") as tmp:
    out = os.path.join(tmp, "bench.json")
    p = subprocess.run(["/usr/bin/python3", script, "--build", build, "--nics", str(NICS), "--json", out], timeout=600)
    if p.returncode != 0:
        sys.exit("bench exited %d" % p.returncode)
    rep = json.load(open(out))

fails = []
if rep["nics"] != NICS:
    fails.append("nics %s" % rep["nics"])
for k in ("create_connect", "disconnect_delete"):
    t = rep[k]
    if not (0 < t["median_ms"] <= t["p99_ms"] <= t["max_ms"] and t["total_s"] > 0):
        fails.append("%s: %s" % (k, t))
if rep["reachable"] != NICS:
    fails.append("reachable %d/%d: %s" % (rep["reachable"], NICS, rep["unreachable"]))
m = rep["memory"]
for k in ("before_attach", "nics_0", "nics_all", "after_removal"):
    if not m[k].get("VmRSS", 0) > 0:
        fails.append("memory %s: no VmRSS" % k)
b = rep["buffers"]
if not (b["queue"]["umem_bytes"] > 0 and b["queue"]["nic_capacity"] >= NICS and b["pinned_bytes"] > 0):
    fails.append("buffers: %s" % b)
if not (b["per_nic"] and b["per_nic"]["reserved_bytes"] > 0):
    fails.append("per-NIC buffers: %s" % b["per_nic"])
for q in rep["pools_after_removal"]:
    if q["free"] + q["in_fill"] != q["total"] or q["in_flight"] != 0:
        fails.append("pool not whole after removal: %s" % q)
for key in ("cpu_model", "nproc", "kernel", "loadavg_start"):
    if key not in rep["machine"]:
        fails.append("machine: no " + key)
for f in fails:
    print("FAIL: " + f)
sys.exit(1 if fails else 0)
